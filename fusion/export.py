"""Atomic file output: PLY geometry, text and JSON.

Every writer first writes a temporary file in the destination folder and then renames it
over the destination, so a reader never sees a half-written file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import open3d as o3d


def _write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary_path)` next to `path` (same suffix), then rename it to `path`."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: {path.parent} is not an existing folder")
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"{path}: the folder {path.parent} is not writable")
    temporary = path.parent / f".{path.stem}.{secrets.token_hex(6)}.partial{path.suffix}"
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_ply(path: Path, geometry: o3d.geometry.TriangleMesh | o3d.geometry.PointCloud) -> Path:
    """Write a legacy Open3D mesh or point cloud to the binary PLY file `path`, atomically."""
    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise ValueError(f"{path}: expected a .ply path, got suffix {path.suffix!r}")
    if isinstance(geometry, o3d.geometry.TriangleMesh):
        kind, empty = "mesh", not geometry.has_vertices()
        write = o3d.io.write_triangle_mesh
    elif isinstance(geometry, o3d.geometry.PointCloud):
        kind, empty = "point cloud", not geometry.has_points()
        write = o3d.io.write_point_cloud
    else:
        raise TypeError(
            f"{path}: expected an open3d.geometry.TriangleMesh or PointCloud, got {type(geometry).__name__}"
        )
    if empty:
        raise ValueError(f"{path}: refusing to write an empty {kind}")

    def write_geometry(temporary: Path) -> None:
        if not write(str(temporary), geometry):
            raise OSError(f"{path}: Open3D failed to write the {kind}")

    return _write_atomic(path, write_geometry)


def _write_new_text(path: Path, text: str) -> None:
    """Write UTF-8 `text` to a file that must not exist yet."""
    with open(path, "x", encoding="utf-8") as file:
        file.write(text)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 `text` to `path`, atomically."""
    return _write_atomic(Path(path), lambda temporary: _write_new_text(temporary, text))


def _to_json(obj: Any) -> Any:
    """JSON form of the dataclasses, NumPy values and paths that reports contain."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON: {obj!r}")


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write `obj` as indented JSON to `path`, atomically.

    Dataclasses, NumPy arrays and scalars and paths are converted; non-finite floats are
    written as `Infinity` / `NaN`, which Python's json module reads back.
    """
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_to_json) + "\n")


def write_depth_png(path: Path, depth_hw: np.ndarray) -> Path:
    """Write a depth map (metres, 0 = none) as a uint16 millimetre PNG, atomically.

    Depths beyond 65.534 m are written as 0 (no estimate) rather than wrapped.
    """
    depth_mm_hw = np.rint(np.asarray(depth_hw, dtype=np.float64) * 1000.0)
    depth_mm_hw[~np.isfinite(depth_mm_hw) | (depth_mm_hw < 0) | (depth_mm_hw >= 65535)] = 0

    def write(temporary: Path) -> None:
        if not cv2.imwrite(str(temporary), depth_mm_hw.astype(np.uint16)):
            raise OSError(f"{path}: OpenCV could not write the depth PNG")

    return _write_atomic(path, write)


def read_depth_hw(path: Path) -> np.ndarray:
    """A depth map written by `write_depth_png`: (H, W) float32 metres, 0 = none."""
    depth_mm_hw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if depth_mm_hw is None:
        raise ValueError(f"{path}: cannot read depth image")
    return depth_mm_hw.astype(np.float32) / np.float32(1000.0)


DEPTH_DIR, CONFIDENCE_DIR = "depth", "confidence"
"""Folders of a run's plane-sweep depth maps and their confidences (`<frame index>.png`)."""

CONFIDENCE_LEVELS = 65535
"""A confidence PNG holds ceil(confidence * CONFIDENCE_LEVELS) as uint16, so that every
confidence above 0 stays above 0 and a threshold reads back to within 1 / 65535."""


def write_confidence_png(path: Path, confidence_hw: np.ndarray) -> Path:
    """Write a confidence map (H, W) in [0, 1] (0 = not confirmed) as a uint16 PNG of
    ceil(confidence * 65535), atomically; `read_confidence_hw` reads it back."""
    confidence_hw = np.nan_to_num(np.asarray(confidence_hw, dtype=np.float64), nan=0.0)
    levels_hw = np.ceil(np.clip(confidence_hw, 0.0, 1.0) * CONFIDENCE_LEVELS).astype(np.uint16)

    def write(temporary: Path) -> None:
        if not cv2.imwrite(str(temporary), levels_hw):
            raise OSError(f"{path}: OpenCV could not write the confidence PNG")

    return _write_atomic(path, write)


def read_confidence_hw(path: Path) -> np.ndarray:
    """A confidence map written by `write_confidence_png`: (H, W) float32 in [0, 1]."""
    levels_hw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if levels_hw is None or levels_hw.dtype != np.uint16 or levels_hw.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel uint16 confidence PNG")
    return levels_hw.astype(np.float32) / CONFIDENCE_LEVELS


def write_image_png(path: Path, image_hw3: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB image as a PNG, atomically."""
    if image_hw3.ndim != 3 or image_hw3.shape[2] != 3 or image_hw3.dtype != np.uint8:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 RGB image, got {image_hw3.shape} {image_hw3.dtype}")

    def write(temporary: Path) -> None:
        if not cv2.imwrite(str(temporary), cv2.cvtColor(image_hw3, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: OpenCV could not write the PNG")

    return _write_atomic(path, write)
