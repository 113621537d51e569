"""`fusion` suite: our Open3D TSDF against a plain NumPy TSDF on the same frames.

Both integrate the same preloaded redkitchen frames (sensor depth, ground-truth poses,
640x480) at 2 cm voxels, 8 cm truncation, 4 m depth range (configs/7scenes.yaml), back to
back in this process; frame decoding is excluded. The NumPy grid bounds the view frustums
cut at each frame's deepest measurement, as tsdf-fusion-python does.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from fusion.tsdf import TSDFVolume
from mvs.bench.numpy_tsdf import NumpyTSDF, frustum_bounds_23
from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext
from mvs.config import FusionConfig
from mvs.geometry import invert_pose_44
from mvs.io.layout import open_sequence

FRAMES = "0:1000:40"


def time_integration(volume: TSDFVolume | NumpyTSDF, frames: list, camera, poses: dict, name: str) -> float:
    """Wall seconds to integrate `frames` (sensor depth, ground-truth poses) into `volume`."""
    start = time.perf_counter()
    for frame in tqdm(frames, desc=f"  {name}", unit="frame", mininterval=5.0):
        volume.integrate(frame.depth_hw, frame.image_hw3, camera, invert_pose_44(poses[frame.index]))
    return time.perf_counter() - start


def run(context: BenchContext) -> tuple[list[Table], dict]:
    sequence = open_sequence(context.kitchen, frames=FRAMES)
    print(f"  loading {len(sequence)} frames of {context.kitchen} ({FRAMES})", flush=True)
    frames = list(sequence)
    camera, poses = sequence.camera, sequence.gt_world_T_cam_44
    config = FusionConfig(voxel_size=0.02, depth_max=4.0)
    trunc_m = config.voxel_size * config.sdf_trunc_voxels
    open3d_volume = TSDFVolume(config)
    open3d_seconds = time_integration(open3d_volume, frames, camera, poses, "Open3D VoxelBlockGrid")
    depth_max_n = np.array([min(float(f.depth_hw.max()), config.depth_max) for f in frames])
    bounds_23 = frustum_bounds_23(camera, np.stack([poses[f.index] for f in frames]), depth_max_n)
    numpy_volume = NumpyTSDF(bounds_23, config.voxel_size, trunc_m, config.depth_max)
    numpy_seconds = time_integration(numpy_volume, frames, camera, poses, f"NumPy dense grid {numpy_volume.shape}")
    block_voxels = config.block_resolution**3
    rows = [
        ("ours: Open3D VoxelBlockGrid (fusion/tsdf.py)", open3d_seconds, open3d_volume.block_count * block_voxels),
        ("plain NumPy dense grid (tsdf-fusion-python kind)", numpy_seconds, int(np.prod(numpy_volume.shape))),
    ]
    table = Table(
        f"TSDF integration, {camera.width}x{camera.height}, {config.voxel_size * 100:.0f} cm voxels, "
        f"{len(frames)} redkitchen frames ({FRAMES})",
        [],
        ["implementation", "ms per frame", "frames/s", "voxels", "relative speed"],
        "lrrrr",
        notes="Same preloaded frames, integrated back to back in one process (decoding excluded).",
    )
    data = {"frames": len(frames), "frame_selection": FRAMES, "width": camera.width, "height": camera.height,
            "voxel_size": config.voxel_size, "implementations": {}}
    for name, seconds, voxels in rows:
        table.add_row(name, fmt(seconds / len(frames) * 1000, 1), fmt(len(frames) / seconds, 2), f"{voxels:,}",
                      f"{numpy_seconds / seconds:.1f}x")
        data["implementations"][name] = {"seconds": seconds, "frames_per_second": len(frames) / seconds,
                                         "voxels": voxels}
    return [table], data
