"""TUM RGB-D sequences: rgb.txt and depth.txt (timestamp filename), groundtruth.txt
(timestamp tx ty tz qx qy qz qw, camera-to-world); depth uint16 / 5000 = metres, already
registered to the colour images; everything associated by nearest timestamp."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvs.geometry import quaternion_to_matrix_33
from mvs.io.frames import DepthFormat
from mvs.io.image_files import (
    FrameFiles,
    assemble_image_sequence,
    dataset_camera,
    first_image_size_wh,
    parse_floats,
    read_intrinsics_K_33,
    read_rows,
)
from mvs.io.intrinsics import Calibration
from mvs.types import Camera, Capture, Sequence

TUM_MAX_TIME_DIFFERENCE = 0.02
"""Seconds between an rgb timestamp and the depth or ground truth associated with it."""
TUM_FX_FY_CX_CY = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
TUM_DEFAULT_FX_FY_CX_CY = (525.0, 525.0, 319.5, 239.5)


def open_tum(root: Path, intrinsics: Calibration | None) -> Sequence:
    """TUM RGB-D: rgb.txt, depth.txt (timestamp filename), groundtruth.txt (TUM poses).

    Depth (uint16 / 5000 = metres, already registered to rgb) and poses are associated to
    each rgb timestamp by the nearest timestamp within 0.02 s. Intrinsics from K.txt, else
    by the freiburg number in the folder name, else the nominal 525 px (not calibrated).
    """
    rgb_times_n, rgb_paths = _read_tum_file_list(root / "rgb.txt")
    colour_size_wh = first_image_size_wh(rgb_paths, root / "rgb.txt")
    calibrated = True
    if intrinsics is None and (root / "K.txt").is_file():
        stored_camera = Camera(read_intrinsics_K_33(root / "K.txt"), *colour_size_wh)
    else:
        fx_fy_cx_cy = next((value for key, value in TUM_FX_FY_CX_CY.items() if key in root.resolve().name), None)
        calibrated = intrinsics is not None or fx_fy_cx_cy is not None
        stored_camera = dataset_camera(fx_fy_cx_cy or TUM_DEFAULT_FX_FY_CX_CY, colour_size_wh, intrinsics)
    depth_for_rgb: list[Path | None] = [None] * len(rgb_paths)
    depth_format = None
    if (root / "depth.txt").is_file():
        depth_times_m, depth_paths = _read_tum_file_list(root / "depth.txt")
        if depth_paths:
            nearest_n = _nearest_within(rgb_times_n, depth_times_m, TUM_MAX_TIME_DIFFERENCE)
            depth_for_rgb = [depth_paths[j] if j >= 0 else None for j in nearest_n]
            depth_format = DepthFormat(stored_camera, 1.0 / 5000.0)
    gt_path = root / "groundtruth.txt"
    has_poses = gt_path.is_file()
    pose_for_rgb: list[np.ndarray | None] = [None] * len(rgb_paths)
    if has_poses:
        gt_times_m, world_T_cam_m44 = _read_tum_trajectory(gt_path)
        nearest_n = _nearest_within(rgb_times_n, gt_times_m, TUM_MAX_TIME_DIFFERENCE)
        pose_for_rgb = [world_T_cam_m44[j] if j >= 0 else None for j in nearest_n]
    frame_files = [
        FrameFiles(
            index, float(rgb_times_n[index]), rgb_paths[index], depth_for_rgb[index], pose_for_rgb[index],
            f"{gt_path} within {TUM_MAX_TIME_DIFFERENCE} s of t={rgb_times_n[index]:.6f}",
        )
        for index in range(len(rgb_paths))
    ]
    return assemble_image_sequence(
        root, "tum", stored_camera, stored_camera, depth_format, frame_files, has_poses,
        Capture(colour_calibrated=calibrated),
    )


def _read_tum_file_list(path: Path) -> tuple[np.ndarray, list[Path]]:
    """Timestamps (N,) in seconds and file paths of a TUM rgb.txt or depth.txt."""
    times, paths = [], []
    for line_number, tokens in read_rows(path):
        if len(tokens) < 2:
            raise ValueError(
                f"{path}: line {line_number}: expected 'timestamp filename', got '{' '.join(tokens)}'"
            )
        times.append(parse_floats(path, line_number, tokens[:1])[0])
        paths.append(path.parent / tokens[1])
    return np.array(times, dtype=np.float64), paths


def _read_tum_trajectory(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (M,) in seconds and camera-to-world poses (M, 4, 4) of a TUM trajectory
    ("timestamp tx ty tz qx qy qz qw" per line)."""
    times, world_T_cam_m44 = [], []
    for line_number, tokens in read_rows(path):
        values = parse_floats(path, line_number, tokens)
        if len(values) != 8:
            raise ValueError(
                f"{path}: line {line_number}: expected 'timestamp tx ty tz qx qy qz qw', "
                f"got {len(values)} numbers"
            )
        world_T_cam_44 = np.eye(4)
        world_T_cam_44[:3, :3] = quaternion_to_matrix_33(np.array(values[4:8]))
        world_T_cam_44[:3, 3] = values[1:4]
        times.append(values[0])
        world_T_cam_m44.append(world_T_cam_44)
    return np.array(times, dtype=np.float64), np.array(world_T_cam_m44).reshape(-1, 4, 4)


def _nearest_within(query_n: np.ndarray, reference_m: np.ndarray, max_difference: float) -> np.ndarray:
    """(N,) index into `reference_m` of the nearest value to each query, -1 when the
    nearest is more than `max_difference` away (or `reference_m` is empty)."""
    if len(reference_m) == 0:
        return np.full(len(query_n), -1)
    order_m = np.argsort(reference_m, kind="stable")
    sorted_m = reference_m[order_m]
    position_n = np.searchsorted(sorted_m, query_n)
    right_n = np.minimum(position_n, len(sorted_m) - 1)
    left_n = np.maximum(position_n - 1, 0)
    take_left_n = np.abs(query_n - sorted_m[left_n]) <= np.abs(sorted_m[right_n] - query_n)
    nearest_n = np.where(take_left_n, left_n, right_n)
    too_far_n = np.abs(sorted_m[nearest_n] - query_n) > max_difference
    return np.where(too_far_n, -1, order_m[nearest_n])
