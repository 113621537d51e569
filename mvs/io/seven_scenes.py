"""7-Scenes sequences: frame-NNNNNN.{color.png|jpg, depth.png (uint16 mm), pose.txt (4x4
camera-to-world)} in one folder.

Microsoft's 7-Scenes was recorded with a Kinect v1: the colour camera (fx = fy = 525,
cx, cy = 320, 240 at 640x480) and the depth camera (585, 585, 320, 240, or as
`camera-intrinsics.txt` says) are not registered, their frames are not synchronised, and the
poses (KinectFusion's) track the depth camera. Folders in the same naming with an
`intrinsics.K.txt` (andyzeng/tsdf-fusion's samples) hold depth registered to colour, both
of the camera that file describes.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from mvs.io.frames import DepthFormat
from mvs.io.image_files import (
    FrameFiles,
    assemble_image_sequence,
    dataset_camera,
    first_image_size_wh,
    read_intrinsics_K_33,
    read_pose_if_listed,
)
from mvs.io.intrinsics import Calibration
from mvs.types import Camera, Capture, Sequence

SEVEN_SCENES_COLOUR_FX_FY_CX_CY = (525.0, 525.0, 320.0, 240.0)
SEVEN_SCENES_DEPTH_FX_FY_CX_CY = (585.0, 585.0, 320.0, 240.0)
DEPTH_INTRINSICS_FILE = "camera-intrinsics.txt"
SHARED_INTRINSICS_FILE = "intrinsics.K.txt"
"""The camera of colour and depth alike, registered to each other (tsdf-fusion's samples)."""
KINECT_CAPTURE = Capture(depth_synchronised=False, poses_of_colour=False, colour_calibrated=False)
"""What 7-Scenes' recording is known to be, beyond what the files show: its colour camera is
the nominal one, not calibrated per recording."""


def seven_scenes_colour_index(file_name: str) -> int | None:
    """NNNNNN of "frame-NNNNNN.color.png|jpg", else None."""
    for suffix in (".color.png", ".color.jpg"):
        number = file_name.removeprefix("frame-").removesuffix(suffix)
        if file_name.startswith("frame-") and file_name.endswith(suffix) and number.isdigit():
            return int(number)
    return None


def open_7scenes(root: Path, intrinsics: Calibration | None) -> Sequence:
    """7-Scenes: frame-NNNNNN.{color.png|jpg, depth.png (mm), pose.txt}.

    With an `intrinsics.K.txt`, colour and depth share its camera. Otherwise the colour
    camera is fx = fy = 525, cx, cy = 320, 240 at 640x480 (scaled to other sizes) and the
    depth camera that of camera-intrinsics.txt, else 585/585/320/240 at 640x480; depth is
    registered into the colour camera. `intrinsics` replaces the colour camera.
    """
    file_names = set(os.listdir(root))
    colour_paths = {
        index: root / name for name in file_names if (index := seven_scenes_colour_index(name)) is not None
    }
    indices = sorted(colour_paths)
    colour_size_wh = first_image_size_wh([colour_paths[i] for i in indices], root)
    shared_camera = None
    if SHARED_INTRINSICS_FILE in file_names:
        shared_camera = Camera(read_intrinsics_K_33(root / SHARED_INTRINSICS_FILE), *colour_size_wh)
    if intrinsics is None and shared_camera is not None:
        stored_camera = shared_camera
    else:
        stored_camera = dataset_camera(SEVEN_SCENES_COLOUR_FX_FY_CX_CY, colour_size_wh, intrinsics)
    depth_paths = {
        i: root / f"frame-{i:06d}.depth.png" for i in indices if f"frame-{i:06d}.depth.png" in file_names
    }
    depth_format = None
    if depth_paths:
        depth_size_wh = first_image_size_wh([depth_paths[i] for i in sorted(depth_paths)], root)
        if shared_camera is not None:
            depth_camera = shared_camera.scaled(*depth_size_wh)
        elif DEPTH_INTRINSICS_FILE in file_names:
            depth_camera = Camera(read_intrinsics_K_33(root / DEPTH_INTRINSICS_FILE), *depth_size_wh)
        else:
            depth_camera = dataset_camera(SEVEN_SCENES_DEPTH_FX_FY_CX_CY, depth_size_wh, None)
        depth_format = DepthFormat(depth_camera, 1e-3)
    has_poses = any(name.endswith(".pose.txt") for name in file_names)
    frame_files = [
        FrameFiles(
            index, float(index), colour_paths[index], depth_paths.get(index),
            read_pose_if_listed(root / f"frame-{index:06d}.pose.txt", file_names),
            str(root / f"frame-{index:06d}.pose.txt"),
        )
        for index in indices
    ]
    if shared_camera is not None:
        capture = Capture(colour_calibrated=True)
    else:
        capture = replace(KINECT_CAPTURE, colour_calibrated=intrinsics is not None)
    return assemble_image_sequence(
        root, "7scenes", stored_camera, stored_camera, depth_format, frame_files, has_poses, capture
    )
