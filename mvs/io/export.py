"""A run's cameras, poses and points in the formats of COLMAP and nerfstudio.

Beside `trajectory.txt`, a run's folder gets a COLMAP text model `sparse/0/` and nerfstudio's
`transforms.json`, laid out as a COLMAP / nerfstudio project whose images would sit in
`images/`: the images are named after the frames' image files, or `<index>.jpg` for frames
that were not read from image files (video, `.sens`); the camera is the pipeline's colour
camera, at the resolution the frames were processed at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open3d as o3d

from mvs.geometry import invert_pose_44
from mvs.io.colmap_model import write_text_model
from mvs.io.nerfstudio import write_transforms
from mvs.types import Sequence

MAX_MODEL_POINTS = 50_000
"""At most this many points of the fused cloud go into points3D.txt (an even subsample)."""
MODEL_DIR = Path("sparse/0")
IMAGE_DIR = "images"


def frame_image_names(sequence: Sequence) -> dict[int, str]:
    """The image name of every frame of `sequence` by dataset index: its colour image's file
    name, or `<index>.jpg` when frames do not come from image files or their file names are
    not distinct."""
    names = {index: sequence.image_names.get(index) for index in sequence.indices}
    if None in names.values() or len(set(names.values())) < len(names):
        return {index: f"{index}.jpg" for index in sequence.indices}
    return names


def even_subsample_n(count: int, limit: int) -> np.ndarray:
    """Row indices (M,) of at most `limit` of `count` rows, evenly spread, in order."""
    if count <= limit:
        return np.arange(count)
    return np.linspace(0, count - 1, limit).round().astype(np.int64)


def write_interop(
    out_dir: Path, sequence: Sequence, world_T_cam_44: dict[int, np.ndarray], cloud: o3d.geometry.PointCloud | None
) -> list[Path]:
    """Write `out_dir/sparse/0/{cameras,images,points3D}.txt` and `out_dir/transforms.json`.

    Every frame of `sequence` with a pose in `world_T_cam_44` (camera-to-world, by dataset
    index) is an image, in playback order; points3D.txt holds up to MAX_MODEL_POINTS points
    of `cloud` (world frame, colours in [0, 1]), none without one, and transforms.json
    points nerfstudio at `cloud.ply` when the cloud has points. Returns the paths written.
    """
    names = frame_image_names(sequence)
    indices = [index for index in sequence.indices if index in world_T_cam_44]
    world_T_cam_n44 = np.stack([world_T_cam_44[index] for index in indices]).reshape(-1, 4, 4)
    has_points = cloud is not None and cloud.has_points()
    points_n3, colours_n3 = np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)
    if has_points:
        rows_m = even_subsample_n(len(cloud.points), MAX_MODEL_POINTS)
        points_n3 = np.asarray(cloud.points)[rows_m]
        colours_m3 = np.asarray(cloud.colors)[rows_m] if cloud.has_colors() else np.full((len(rows_m), 3), 0.5)
        colours_n3 = np.rint(np.clip(colours_m3, 0.0, 1.0) * 255).astype(np.uint8)
    written = write_text_model(
        out_dir / MODEL_DIR, sequence.camera, [names[index] for index in indices],
        np.stack([invert_pose_44(pose_44) for pose_44 in world_T_cam_n44]).reshape(-1, 4, 4), points_n3, colours_n3,
    )
    written.append(write_transforms(
        out_dir / "transforms.json", sequence.camera, [f"{IMAGE_DIR}/{names[index]}" for index in indices],
        world_T_cam_n44, "cloud.ply" if has_points else None,
    ))
    return written
