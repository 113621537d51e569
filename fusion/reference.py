"""Reference meshes for evaluation: the synthetic ground truth or sensor depth fused with
ground-truth poses, culled to what the ground-truth cameras saw (world frame, metres)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import open3d as o3d
from tqdm import tqdm

from fusion.metrics import cull_to_views
from fusion.tsdf import TSDFVolume
from mvs.config import FusionConfig
from mvs.geometry import invert_pose_44
from mvs.types import Frame, Sequence

REFERENCE_FILE = "reference.ply"
"""Where `mvs.eval` keeps a run's reference mesh, in the run's output folder: it is fused
with the run's own settings (frames, fusion), so a new run into the folder removes it."""


def _strided_positions(sequence: Sequence, stride: int) -> range:
    """Playback positions of every `stride`-th frame."""
    if stride < 1:
        raise ValueError(f"{sequence.root}: expected a frame stride >= 1, got {stride}")
    return range(0, len(sequence), stride)


def _strided_frames(sequence: Sequence, stride: int, progress: bool, description: str) -> Iterable[Frame]:
    """Every `stride`-th frame of the sequence, loaded lazily, with a progress bar if asked."""
    positions = _strided_positions(sequence, stride)
    frames = (sequence[position] for position in positions)
    return tqdm(frames, total=len(positions), desc=description, disable=not progress)


def _world_T_cam_44(sequence: Sequence, frame: Frame) -> np.ndarray:
    """The frame's ground-truth camera-to-world pose; an error naming the frame if missing."""
    if frame.world_T_cam_44 is None:
        raise ValueError(f"{sequence.root}: frame {frame.index} has no ground-truth pose")
    return frame.world_T_cam_44


def _gt_world_T_cam_44_list(sequence: Sequence, stride: int) -> list[np.ndarray]:
    """Ground-truth camera-to-world poses of every `stride`-th frame.

    Taken from `sequence.gt_world_T_cam_44` where the loader read them; a frame is loaded
    only for a pose missing there.
    """
    world_T_cam_44_list = []
    for position in _strided_positions(sequence, stride):
        world_T_cam_44 = sequence.gt_world_T_cam_44.get(sequence.indices[position])
        if world_T_cam_44 is None:
            world_T_cam_44 = _world_T_cam_44(sequence, sequence[position])
        world_T_cam_44_list.append(world_T_cam_44)
    return world_T_cam_44_list


def _fuse(
    sequence: Sequence, config: FusionConfig, stride: int, progress: bool
) -> tuple[o3d.geometry.TriangleMesh, list[np.ndarray]]:
    """Sensor depth of every `stride`-th frame fused at its ground-truth pose.

    Returns the mesh and the camera-to-world poses of the fused frames.
    """
    if not sequence.has_depth or not sequence.has_poses:
        raise ValueError(
            f"{sequence.root}: a fused reference needs sensor depth and ground-truth poses; "
            f"this sequence has depth={sequence.has_depth}, poses={sequence.has_poses}"
        )
    volume = TSDFVolume(config)
    world_T_cam_44_list = []
    for frame in _strided_frames(sequence, stride, progress, "fusing reference"):
        if frame.depth_hw is None:
            raise ValueError(f"{sequence.root}: frame {frame.index} has no depth")
        world_T_cam_44 = _world_T_cam_44(sequence, frame)
        volume.integrate(frame.depth_hw, frame.image_hw3, sequence.camera, invert_pose_44(world_T_cam_44))
        world_T_cam_44_list.append(world_T_cam_44)
    return volume.mesh(), world_T_cam_44_list


def fuse_reference_mesh(
    sequence: Sequence, config: FusionConfig, stride: int = 1, progress: bool = True
) -> o3d.geometry.TriangleMesh:
    """TSDF fusion of the sensor depth of every `stride`-th frame at ground-truth poses."""
    mesh, _ = _fuse(sequence, config, stride, progress)
    return mesh


def reference_mesh(
    sequence: Sequence, config: FusionConfig, stride: int = 1, progress: bool = True, max_cull_views: int = 100
) -> o3d.geometry.TriangleMesh:
    """The surface to evaluate against, culled to every `stride`-th ground-truth view.

    Culling uses at most `max_cull_views` of those views, evenly spread: neighbouring video
    frames see nearly the same surfaces, and each view costs a ray-cast of the whole mesh.

    A sequence with its own mesh (`sequence.has_mesh`, synthetic rooms) uses that mesh;
    otherwise the sensor depth is fused with `fuse_reference_mesh`'s method. Culling keeps
    the triangles the ground-truth cameras saw within `config.depth_max` metres.
    """
    if sequence.has_mesh:
        if not sequence.has_poses:
            raise ValueError(f"{sequence.root}: culling the reference mesh needs ground-truth poses")
        mesh = o3d.io.read_triangle_mesh(str(sequence.mesh_path))
        if not mesh.has_triangles():
            raise ValueError(f"{sequence.mesh_path}: expected a triangle mesh, read none")
        world_T_cam_44_list = _gt_world_T_cam_44_list(sequence, stride)
    else:
        mesh, world_T_cam_44_list = _fuse(sequence, config, stride, progress)
    keep_n = np.unique(np.linspace(0, len(world_T_cam_44_list) - 1, max_cull_views).round().astype(int))
    cull_views = [world_T_cam_44_list[k] for k in keep_n]
    return cull_to_views(mesh, sequence.camera, cull_views, depth_max=config.depth_max)
