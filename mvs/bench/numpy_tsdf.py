"""A plain NumPy TSDF on a dense voxel grid, of the kind tsdf-fusion-python ships.

For the fusion speed comparison only: every frame projects every voxel centre of a grid
bounding the view frustums into the image, samples the depth there and updates a running
weighted average of the truncated signed distance and colour (Curless and Levoy).
"""

from __future__ import annotations

import numpy as np

from mvs.geometry import backproject_n3, transform_n3
from mvs.types import Camera


def frustum_bounds_23(camera: Camera, world_T_cam_n44: np.ndarray, depth_max_n: np.ndarray) -> np.ndarray:
    """(2, 3) min and max corner (world metres) of the view frustums of N cameras, each cut
    at its depth `depth_max_n` (metres; tsdf-fusion-python takes each depth map's maximum)."""
    corners_uv_42 = np.array([[0, 0], [camera.width, 0], [0, camera.height], [camera.width, camera.height]], float)
    world_points_m3 = np.vstack([
        transform_n3(world_T_cam_44, np.vstack([np.zeros(3), backproject_n3(corners_uv_42, np.full(4, depth), camera.K_33)]))
        for world_T_cam_44, depth in zip(world_T_cam_n44, depth_max_n)
    ])
    return np.stack([world_points_m3.min(axis=0), world_points_m3.max(axis=0)])


class NumpyTSDF:
    """Dense TSDF over the box `bounds_23` (world metres) with `voxel_size`-metre voxels.

    tsdf_xyz in [-1, 1] (signed distance over `trunc_m`), weight_xyz (frames), colour_xyz3
    (RGB in [0, 255]). Depth beyond `depth_max` metres is ignored.
    """

    def __init__(self, bounds_23: np.ndarray, voxel_size: float, trunc_m: float, depth_max: float) -> None:
        self.voxel_size = voxel_size
        self.trunc_m = trunc_m
        self.depth_max = depth_max
        self.origin_3 = bounds_23[0].astype(np.float32)
        shape = tuple(np.ceil((bounds_23[1] - bounds_23[0]) / voxel_size).astype(int))
        self.tsdf_xyz = np.ones(shape, np.float32)
        self.weight_xyz = np.zeros(shape, np.float32)
        self.colour_xyz3 = np.zeros((*shape, 3), np.float32)
        grid_n3 = np.indices(shape, dtype=np.float32).reshape(3, -1).T
        self.world_points_n3 = self.origin_3 + grid_n3 * np.float32(voxel_size)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.tsdf_xyz.shape

    def integrate(self, depth_hw: np.ndarray, image_hw3: np.ndarray, camera: Camera, cam_T_world_44: np.ndarray) -> None:
        """Fuse one frame: depth (H, W) metres, 0 invalid; image (H, W, 3) uint8 RGB."""
        cam_points_n3 = self.world_points_n3 @ cam_T_world_44[:3, :3].T.astype(np.float32) + cam_T_world_44[:3, 3].astype(np.float32)
        z_n = cam_points_n3[:, 2]
        safe_z_n = np.where(z_n > 0, z_n, 1.0)
        u_n = np.rint(camera.fx * cam_points_n3[:, 0] / safe_z_n + camera.cx)
        v_n = np.rint(camera.fy * cam_points_n3[:, 1] / safe_z_n + camera.cy)
        inside_n = (z_n > 0) & (u_n >= 0) & (u_n < camera.width) & (v_n >= 0) & (v_n < camera.height)
        u_n = np.where(inside_n, u_n, 0).astype(np.int32)
        v_n = np.where(inside_n, v_n, 0).astype(np.int32)
        depth_n = np.zeros_like(z_n)
        depth_n[inside_n] = depth_hw[v_n[inside_n], u_n[inside_n]]
        distance_n = depth_n - z_n
        update_n = (depth_n > 0) & (depth_n <= self.depth_max) & (distance_n >= -self.trunc_m)
        flat = np.flatnonzero(update_n)
        tsdf_new_m = np.minimum(1.0, distance_n[flat] / self.trunc_m)
        tsdf_m, weight_m = self.tsdf_xyz.reshape(-1), self.weight_xyz.reshape(-1)
        colour_m3 = self.colour_xyz3.reshape(-1, 3)
        weight_old_m = weight_m[flat]
        weight_new_m = weight_old_m + 1.0
        tsdf_m[flat] = (tsdf_m[flat] * weight_old_m + tsdf_new_m) / weight_new_m
        sampled_m3 = image_hw3[v_n[flat], u_n[flat]].astype(np.float32)
        colour_m3[flat] = (colour_m3[flat] * weight_old_m[:, None] + sampled_m3) / weight_new_m[:, None]
        weight_m[flat] = weight_new_m

    def tsdf_at_n(self, points_n3: np.ndarray) -> np.ndarray:
        """Trilinear TSDF (units of `trunc_m`) at world points (N, 3); NaN outside the
        grid or next to voxels no frame observed."""
        grid_n3 = (points_n3 - self.origin_3) / self.voxel_size
        base_n3 = np.floor(grid_n3).astype(int)
        frac_n3 = grid_n3 - base_n3
        inside_n = np.all((base_n3 >= 0) & (base_n3 < np.array(self.shape) - 1), axis=1)
        base_n3 = np.where(inside_n[:, None], base_n3, 0)
        value_n = np.zeros(len(points_n3))
        observed_n = np.ones(len(points_n3), bool)
        for corner in np.ndindex(2, 2, 2):
            index_n3 = base_n3 + np.array(corner)
            weight_n = np.prod(np.where(np.array(corner), frac_n3, 1.0 - frac_n3), axis=1)
            value_n += weight_n * self.tsdf_xyz[tuple(index_n3.T)]
            observed_n &= self.weight_xyz[tuple(index_n3.T)] > 0
        return np.where(inside_n & observed_n, value_n, np.nan)
