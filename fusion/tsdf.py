"""Truncated signed distance fusion of depth maps in an Open3D VoxelBlockGrid.

World frame: the frame of the `cam_T_world_44` poses passed to `integrate` (metres).
"""

from __future__ import annotations

import numpy as np
import open3d as o3d

from mvs.config import FusionConfig
from mvs.types import Camera

_o3c = o3d.core

# Open3D allocates voxel blocks from every 4th pixel in each direction and fails on a frame
# where none of those pixels has depth in (0, depth_max).
_OPEN3D_TOUCH_STRIDE = 4


def open3d_device(name: str) -> o3d.core.Device:
    """The Open3D device for `name` ("cpu", "cuda", "cuda:1", ...), checked to exist."""
    try:
        device = _o3c.Device(name)
    except RuntimeError as error:
        raise ValueError(f"device: expected 'cpu' or 'cuda[:N]', got {name!r} ({error})") from error
    if device.get_type() == _o3c.Device.DeviceType.CUDA and not _o3c.cuda.is_available():
        raise ValueError(f"device: {name!r} requested, but this Open3D build has no usable CUDA device")
    return device


def _weight_threshold(min_observations: int) -> float:
    """Open3D's extraction threshold for voxels seen in at least `min_observations` frames.

    Every integrated frame adds 1 to a voxel's weight, and Open3D keeps weights strictly
    above its threshold; half a unit below the count is unambiguous.
    """
    if min_observations < 1:
        raise ValueError(f"fusion: expected min_observations >= 1, got {min_observations}")
    return min_observations - 0.5


class TSDFVolume:
    """A sparse TSDF volume with per-voxel `tsdf`, `weight` and RGB `color` in [0, 1].

    Voxels are `config.voxel_size` metres; the signed distance is truncated at
    `config.voxel_size * config.sdf_trunc_voxels` metres; depth beyond `config.depth_max`
    metres is ignored. `config.block_count` is the initial capacity of the block hash map
    (blocks of `config.block_resolution`^3 voxels); the map grows when a scene needs more.
    `frames_integrated` counts the frames that contributed depth.
    """

    def __init__(self, config: FusionConfig, device: str = "cpu") -> None:
        if config.voxel_size <= 0 or config.sdf_trunc_voxels <= 0 or config.depth_max <= 0:
            raise ValueError(
                "fusion: voxel_size, sdf_trunc_voxels and depth_max must be positive, got "
                f"{config.voxel_size}, {config.sdf_trunc_voxels}, {config.depth_max}"
            )
        if config.block_resolution < 1 or config.block_count < 1:
            raise ValueError(
                "fusion: block_resolution and block_count must be >= 1, got "
                f"{config.block_resolution}, {config.block_count}"
            )
        self.config = config
        self.device = open3d_device(device)
        self.frames_integrated = 0
        self._grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(_o3c.float32, _o3c.float32, _o3c.float32),
            attr_channels=((1), (1), (3)),
            voxel_size=config.voxel_size,
            block_resolution=config.block_resolution,
            block_count=config.block_count,
            device=self.device,
        )

    @property
    def block_count(self) -> int:
        """Number of allocated voxel blocks."""
        return int(self._grid.hashmap().size())

    def integrate(
        self, depth_hw: np.ndarray, image_hw3: np.ndarray, camera: Camera, cam_T_world_44: np.ndarray
    ) -> None:
        """Fuse one frame.

        Voxel blocks are allocated around the pixels on a 4-pixel grid; a frame with no depth
        in (0, depth_max) on that grid changes nothing and is not counted.

        depth_hw: (H, W) float32 z-depth in metres, 0 where invalid.
        image_hw3: (H, W, 3) uint8 RGB, registered to the depth.
        camera: intrinsics of both images; H, W must equal camera.height, camera.width.
        cam_T_world_44: (4, 4) world-to-camera transform of this frame.
        """
        shape = (camera.height, camera.width)
        if depth_hw.shape != shape or image_hw3.shape != (*shape, 3):
            raise ValueError(
                f"integrate: expected depth {shape} and image {(*shape, 3)} at the camera's "
                f"resolution, got {depth_hw.shape} and {image_hw3.shape}"
            )
        if image_hw3.dtype != np.uint8:
            raise ValueError(f"integrate: expected a uint8 image, got {image_hw3.dtype}")
        if cam_T_world_44.shape != (4, 4) or not np.all(np.isfinite(cam_T_world_44)):
            raise ValueError(f"integrate: expected a finite 4x4 cam_T_world, got {cam_T_world_44}")
        depth_hw = np.nan_to_num(depth_hw.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        touch_hw = depth_hw[::_OPEN3D_TOUCH_STRIDE, ::_OPEN3D_TOUCH_STRIDE]
        if not np.any((touch_hw > 0) & (touch_hw < self.config.depth_max)):
            return
        depth = o3d.t.geometry.Image(_o3c.Tensor(np.ascontiguousarray(depth_hw))).to(self.device)
        color = o3d.t.geometry.Image(
            _o3c.Tensor(np.ascontiguousarray(image_hw3, dtype=np.float32) / 255.0)
        ).to(self.device)
        K_33 = _o3c.Tensor(camera.K_33, _o3c.float64)
        # Open3D truncates projected pixel coordinates to integers; shifting the principal
        # point by half a pixel turns that into rounding to our integer pixel centres.
        lookup_K_33 = _o3c.Tensor(camera.K_33 + np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]), _o3c.float64)
        extrinsic_44 = _o3c.Tensor(np.asarray(cam_T_world_44, dtype=np.float64))
        trunc = float(self.config.sdf_trunc_voxels)
        depth_max = float(self.config.depth_max)
        block_coords_m3 = self._grid.compute_unique_block_coordinates(
            depth, K_33, extrinsic_44, 1.0, depth_max, trunc
        )
        self._grid.integrate(
            block_coords_m3, depth, color, lookup_K_33, lookup_K_33, extrinsic_44, 1.0, depth_max, trunc
        )
        if self.block_count < block_coords_m3.shape[0]:
            raise RuntimeError(
                f"fusion: the voxel block map holds {self.block_count} blocks but this frame "
                f"touches {block_coords_m3.shape[0]}; raise fusion.block_count (now "
                f"{self.config.block_count}) or fusion.voxel_size (now {self.config.voxel_size} m)"
            )
        self.frames_integrated += 1

    def _min_weight(self) -> float:
        """Weight threshold for extraction: `config.min_observations`, capped by the frames seen."""
        return _weight_threshold(min(self.config.min_observations, max(self.frames_integrated, 1)))

    def mesh(self) -> o3d.geometry.TriangleMesh:
        """Marching-cubes surface through voxels integrated from at least
        `config.min_observations` frames (all frames when fewer were integrated).

        World-frame metres, vertex colours in [0, 1], vertex normals computed. Empty when
        nothing was integrated.
        """
        if self.block_count == 0:
            return o3d.geometry.TriangleMesh()
        mesh = self._grid.extract_triangle_mesh(self._min_weight()).to_legacy()
        mesh.compute_vertex_normals()
        # Trilinear interpolation of averaged colours can overshoot [0, 1] by rounding.
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(mesh.vertex_colors), 0.0, 1.0))
        return mesh

    def point_cloud(self) -> o3d.geometry.PointCloud:
        """Zero crossings (world-frame metres) with colours in [0, 1] and normals, through
        voxels integrated from at least `config.min_observations` frames."""
        if self.block_count == 0:
            return o3d.geometry.PointCloud()
        cloud = self._grid.extract_point_cloud(self._min_weight()).to_legacy()
        cloud.colors = o3d.utility.Vector3dVector(np.clip(np.asarray(cloud.colors), 0.0, 1.0))
        return cloud
