"""Plain image folders: images/*.{png,jpg,jpeg}, optional depth/{stem}.png (uint16
millimetres, in the colour camera), optional poses.txt and K.txt."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mvs.io.frames import DepthFormat
from mvs.io.image_files import (
    FrameFiles,
    assemble_image_sequence,
    first_image_size_wh,
    list_images,
    parse_floats,
    read_intrinsics_K_33,
    read_rows,
)
from mvs.io.intrinsics import HOW_TO_GIVE_INTRINSICS, Calibration, MissingIntrinsics
from mvs.types import Camera, Sequence


def open_folder(root: Path, intrinsics: Calibration | None) -> Sequence:
    """Image folder: images/*.{png,jpg,jpeg}, optional depth/{stem}.png (mm), optional
    poses.txt (one flattened row-major 4x4 camera-to-world per image, in frame order), K.txt.

    Frame indices are the integer file stems when every stem is a distinct integer, else
    positions in sorted order.
    """
    image_paths = sorted(list_images(root / "images"))
    stems = [p.stem for p in image_paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        order = sorted(range(len(stems)), key=lambda k: int(stems[k]))
        image_paths = [image_paths[k] for k in order]
        indices = [int(p.stem) for p in image_paths]
    else:
        indices = list(range(len(image_paths)))
    colour_size_wh = first_image_size_wh(image_paths, root / "images")
    if intrinsics is not None:
        camera = intrinsics.camera(*colour_size_wh)
    elif (root / "K.txt").is_file():
        camera = Camera(read_intrinsics_K_33(root / "K.txt"), *colour_size_wh)
    else:
        raise MissingIntrinsics(
            f"{root}: no camera intrinsics; {HOW_TO_GIVE_INTRINSICS}, or put K.txt in the folder", colour_size_wh
        )
    depth_dir = root / "depth"
    depth_names = set(os.listdir(depth_dir)) if depth_dir.is_dir() else set()
    depth_format = DepthFormat(camera, 1e-3) if depth_names else None
    poses_path = root / "poses.txt"
    has_poses = poses_path.is_file()
    world_T_cam_n44 = _read_flat_poses_n44(poses_path, len(image_paths)) if has_poses else None
    frame_files = [
        FrameFiles(
            index, float(index), path,
            depth_dir / f"{path.stem}.png" if f"{path.stem}.png" in depth_names else None,
            None if world_T_cam_n44 is None else world_T_cam_n44[k],
            f"{poses_path} line {k + 1}",
        )
        for k, (index, path) in enumerate(zip(indices, image_paths))
    ]
    return assemble_image_sequence(root, "folder", camera, camera, depth_format, frame_files, has_poses)


def _read_flat_poses_n44(path: Path, count: int) -> np.ndarray:
    """(count, 4, 4) camera-to-world poses, one flattened row-major 4x4 per line."""
    rows = read_rows(path)
    if len(rows) != count:
        raise ValueError(f"{path}: expected {count} lines (one pose per image), got {len(rows)}")
    world_T_cam_n44 = np.empty((count, 4, 4))
    for k, (line_number, tokens) in enumerate(rows):
        values = parse_floats(path, line_number, tokens)
        if len(values) != 16:
            raise ValueError(
                f"{path}: line {line_number}: expected 16 numbers (a flattened 4x4 matrix), got {len(values)}"
            )
        world_T_cam_n44[k] = np.reshape(values, (4, 4))
    return world_T_cam_n44
