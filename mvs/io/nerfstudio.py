"""nerfstudio's `transforms.json`: shared pinhole intrinsics and a camera-to-world pose per frame.

Each frame's `transform_matrix` is camera-to-world in the OpenGL camera convention (x right,
y up, looking down -z); ours is OpenCV's (x right, y down, looking down +z), so the camera's
y and z axes flip: `transform_matrix = world_T_cam @ diag(1, -1, -1, 1)`. nerfstudio puts
the centre of the top-left pixel at (0.5, 0.5) as COLMAP does, so cx, cy are ours + 0.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.export import write_json_atomic
from mvs.geometry import is_valid_pose_44, nearest_rigid_pose_44
from mvs.io.colmap_model import PIXEL_CENTRE_OFFSET
from mvs.types import Camera

OPENCV_T_OPENGL_44 = np.diag([1.0, -1.0, -1.0, 1.0])
"""Our (OpenCV) camera frame from the OpenGL camera frame of the same camera (its own inverse)."""


@dataclass(frozen=True)
class NerfstudioFrame:
    """One frame of a transforms.json: its `file_path` and our camera-to-world pose."""

    file_path: str
    world_T_cam_44: np.ndarray


@dataclass(frozen=True)
class NerfstudioTransforms:
    """A transforms.json read from `path`: its frames and the shared focal length `fl_x`
    (pixels) of images `w` pixels wide, where the file gives them (else None)."""

    path: Path
    frames: list[NerfstudioFrame]
    fl_x: float | None
    w: int | None


def write_transforms(
    path: Path, camera: Camera, file_paths: list[str], world_T_cam_n44: np.ndarray, ply_file_path: str | None
) -> Path:
    """Write `transforms.json` at `path`: `camera` as an OPENCV model without distortion,
    frame k `file_paths[k]` with pose `world_T_cam_n44[k]` (N, 4, 4) and, when given,
    `ply_file_path` (a point cloud in the same world frame, relative to the file's folder,
    which nerfstudio's Gaussian splatting starts from)."""
    if len(file_paths) != len(world_T_cam_n44):
        raise ValueError(f"{path}: {len(file_paths)} file paths for {len(world_T_cam_n44)} poses")
    content = {
        "camera_model": "OPENCV",
        "fl_x": camera.fx,
        "fl_y": camera.fy,
        "cx": camera.cx + PIXEL_CENTRE_OFFSET,
        "cy": camera.cy + PIXEL_CENTRE_OFFSET,
        "w": camera.width,
        "h": camera.height,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
    }
    if ply_file_path is not None:
        content["ply_file_path"] = ply_file_path
    content["frames"] = [
        {"file_path": file_path, "transform_matrix": (world_T_cam_44 @ OPENCV_T_OPENGL_44).tolist()}
        for file_path, world_T_cam_44 in zip(file_paths, world_T_cam_n44)
    ]
    return write_json_atomic(path, content)


def read_transforms(path: Path) -> NerfstudioTransforms:
    """The frames of a transforms.json (nerfstudio or instant-ngp), with errors naming the
    file and the frame; `transform_matrix` may be 4x4 or its top 3x4 rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: transforms file not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(content, dict) or not isinstance(content.get("frames"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'frames' list (nerfstudio transforms.json)")
    frames = []
    for k, frame in enumerate(content["frames"]):
        where = f"{path}: frame {k}"
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise ValueError(f"{where}: expected an object with 'file_path' and 'transform_matrix'")
        try:
            matrix = np.array(frame["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where} ({frame['file_path']}): transform_matrix is not numeric ({error})") from error
        if matrix.shape == (3, 4):
            matrix = np.vstack([matrix, [0.0, 0.0, 0.0, 1.0]])
        if matrix.shape != (4, 4) or not is_valid_pose_44(matrix):
            raise ValueError(
                f"{where} ({frame['file_path']}): transform_matrix must be a rigid 4x4 (or 3x4) camera-to-world "
                f"transform, got {frame['transform_matrix']}"
            )
        frames.append(NerfstudioFrame(str(frame["file_path"]), nearest_rigid_pose_44(matrix) @ OPENCV_T_OPENGL_44))
    fl_x, w = content.get("fl_x"), content.get("w")
    return NerfstudioTransforms(path, frames, None if fl_x is None else float(fl_x), None if w is None else int(w))
