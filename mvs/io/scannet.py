"""ScanNet exports, as ScanNet's SensReader writes them: color/{i}.jpg, depth/{i}.png
(uint16 millimetres), pose/{i}.txt (4x4 camera-to-world; lost tracking is written as -inf),
intrinsic/intrinsic_{color,depth}.txt (4x4). The `.sens` files themselves are read by
`mvs/io/sens.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

from mvs.io.frames import DepthFormat
from mvs.io.image_files import (
    FrameFiles,
    assemble_image_sequence,
    first_image_size_wh,
    integer_stem,
    list_images,
    read_matrix,
    read_pose_if_listed,
)
from mvs.io.intrinsics import Calibration
from mvs.types import Camera, Sequence


def open_scannet_export(root: Path, intrinsics: Calibration | None) -> Sequence:
    """ScanNet export: color/{i}.jpg, depth/{i}.png (mm), pose/{i}.txt, intrinsic/*.txt.

    The working resolution is the depth resolution when depth exists: colour is resized
    and its K scaled, depth is registered into that camera.
    """
    colour_paths = {integer_stem(p): p for p in list_images(root / "color")}
    indices = sorted(colour_paths)
    colour_size_wh = first_image_size_wh([colour_paths[i] for i in indices], root / "color")
    if intrinsics is not None:
        stored_camera = intrinsics.camera(*colour_size_wh)
    else:
        colour_K_33 = read_matrix(root / "intrinsic" / "intrinsic_color.txt", (4, 4))[:3, :3]
        stored_camera = Camera(colour_K_33, *colour_size_wh)
    camera, depth_format = stored_camera, None
    depth_dir = root / "depth"
    depth_paths = {integer_stem(p): p for p in depth_dir.glob("*.png")} if depth_dir.is_dir() else {}
    if depth_paths:
        depth_size_wh = first_image_size_wh([depth_paths[i] for i in sorted(depth_paths)], depth_dir)
        depth_K_33 = read_matrix(root / "intrinsic" / "intrinsic_depth.txt", (4, 4))[:3, :3]
        depth_format = DepthFormat(Camera(depth_K_33, *depth_size_wh), 1e-3)
        camera = stored_camera.scaled(*depth_size_wh)
    pose_dir = root / "pose"
    pose_names = set(os.listdir(pose_dir)) if pose_dir.is_dir() else set()
    has_poses = bool(pose_names)
    frame_files = [
        FrameFiles(
            index, float(index), colour_paths[index], depth_paths.get(index),
            read_pose_if_listed(pose_dir / f"{index}.txt", pose_names), str(pose_dir / f"{index}.txt"),
        )
        for index in indices
    ]
    return assemble_image_sequence(root, "scannet", camera, stored_camera, depth_format, frame_files, has_poses)
