"""Camera intrinsics given by the user (`--intrinsics`), and undistortion of their frames.

`--intrinsics` takes either "fx,fy,cx,cy" (pixels at the input's native resolution) or a
calibration YAML file in one of three forms:

- simple: `fx`, `fy`, `cx`, `cy` (pixels), optional `width`, `height` (the resolution the
  calibration was made at; other resolutions are scaled) and `distortion` (OpenCV order
  k1, k2, p1, p2[, k3[, k4, k5, k6]]);
- OpenCV FileStorage (`!!opencv-matrix` entries, as OpenCV's calibration samples write
  them): `camera_matrix`, `distortion_coefficients`, optional `image_width`, `image_height`;
- ROS camera_info: `camera_matrix: {data: [...]}`, `distortion_coefficients: {data: [...]}`,
  `image_width`, `image_height`.

Frames of a camera with non-zero distortion are undistorted with OpenCV (`cv2.remap`,
bilinear for colour, nearest for depth) into the pinhole camera of the same K, so every
stage downstream sees an ideal pinhole camera.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import yaml

from mvs.types import Camera, Frame, Sequence

HOW_TO_GIVE_INTRINSICS = (
    "give --intrinsics fx,fy,cx,cy (pixels at the input's resolution) or --intrinsics calib.yaml "
    "(fx, fy, cx, cy and optional width, height; or OpenCV's camera_matrix and "
    "distortion_coefficients)"
)
ESTIMATE_INTRINSICS = "auto"
"""`--intrinsics auto`: the focal length is estimated from the frames, as for an input that
comes without intrinsics (slam/self_calibration.py)."""


class MissingIntrinsics(ValueError):
    """An input layout that holds no camera intrinsics, opened without them: the message says
    how to give them; `size_wh` is the size (width, height) of its colour images."""

    def __init__(self, message: str, size_wh: tuple[int, int]):
        super().__init__(message)
        self.size_wh = size_wh


@dataclass(frozen=True)
class Calibration:
    """Pinhole intrinsics and lens distortion of the user's camera.

    fx, fy, cx, cy: pixels at `size_wh` (width, height), or at whatever resolution the
        input has when `size_wh` is None.
    distortion: OpenCV distortion coefficients (k1, k2, p1, p2[, k3, ...]); empty or all
        zero for an undistorted camera.
    source: where the values came from, for messages.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    size_wh: tuple[int, int] | None = None
    distortion: tuple[float, ...] = ()
    source: str = "--intrinsics"

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy, *self.distortion)
        if not np.all(np.isfinite(values)) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(
                f"{self.source}: expected finite intrinsics with fx, fy > 0 (pixels), got "
                f"fx={self.fx}, fy={self.fy}, cx={self.cx}, cy={self.cy}, distortion={self.distortion}"
            )
        if self.size_wh is not None and min(self.size_wh) <= 0:
            raise ValueError(f"{self.source}: expected a positive width and height, got {self.size_wh}")
        if len(self.distortion) not in (0, 4, 5, 8, 12, 14):
            raise ValueError(
                f"{self.source}: expected 4, 5, 8, 12 or 14 distortion coefficients, got {len(self.distortion)}"
            )

    @property
    def has_distortion(self) -> bool:
        return any(k != 0 for k in self.distortion)

    def camera(self, width: int, height: int) -> Camera:
        """The pinhole camera of images of `width` x `height` pixels (scaled from `size_wh`)."""
        K_33 = np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])
        if self.size_wh is None:
            return Camera(K_33, width, height)
        return Camera(K_33, *self.size_wh).scaled(width, height)


def parse_intrinsics(spec: str) -> Calibration | None:
    """The calibration `--intrinsics` names: "fx,fy,cx,cy" or a YAML file; None for "" (and
    for "auto", which the pipeline resolves to estimated values before it opens the input)."""
    spec = spec.strip()
    if not spec or spec == ESTIMATE_INTRINSICS:
        return None
    parts = spec.split(",")
    if len(parts) == 4:
        try:
            fx, fy, cx, cy = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"--intrinsics '{spec}': expected four numbers fx,fy,cx,cy (pixels)") from None
        return Calibration(fx, fy, cx, cy, source=f"--intrinsics {spec}")
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"--intrinsics '{spec}': neither four numbers fx,fy,cx,cy nor an existing calibration file"
        )
    return read_calibration_yaml(path)


def read_calibration_yaml(path: Path) -> Calibration:
    """A calibration from a simple, OpenCV FileStorage or ROS camera_info YAML file."""
    text = path.read_text()
    if text.lstrip().startswith("%YAML:") or "!!opencv-matrix" in text:
        return _read_opencv_yaml(path)
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping with fx, fy, cx, cy, got {type(values).__name__}")
    if "camera_matrix" in values:
        K_9 = _numbers(path, "camera_matrix", _matrix_data(values["camera_matrix"]))
        if len(K_9) != 9:
            raise ValueError(f"{path}: expected 9 numbers in camera_matrix (3x3, row-major), got {len(K_9)}")
        K_33 = np.reshape(K_9, (3, 3))
        distortion = _matrix_data(values.get("distortion_coefficients", {"data": []}))
        return _calibration(path, K_33, _numbers(path, "distortion_coefficients", distortion),
                            values.get("image_width"), values.get("image_height"))
    missing = [key for key in ("fx", "fy", "cx", "cy") if key not in values]
    if missing:
        raise ValueError(
            f"{path}: missing {', '.join(missing)}; expected fx, fy, cx, cy (pixels), optional width, "
            "height, distortion, or OpenCV's camera_matrix and distortion_coefficients"
        )
    unknown = sorted(set(values) - {"fx", "fy", "cx", "cy", "width", "height", "distortion"})
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; expected fx, fy, cx, cy, width, height, distortion")
    fx, fy, cx, cy = _numbers(path, "fx, fy, cx, cy", [values[key] for key in ("fx", "fy", "cx", "cy")])
    K_33 = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return _calibration(path, K_33, _numbers(path, "distortion", values.get("distortion", [])),
                        values.get("width"), values.get("height"))


def _read_opencv_yaml(path: Path) -> Calibration:
    """camera_matrix, distortion_coefficients, image_width, image_height of a FileStorage file."""
    try:
        storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as error:
        raise ValueError(f"{path}: not a readable OpenCV FileStorage file ({error.err})") from None
    try:
        K_33 = storage.getNode("camera_matrix").mat()
        if K_33 is None or K_33.shape != (3, 3):
            raise ValueError(f"{path}: expected a 3x3 camera_matrix, got {None if K_33 is None else K_33.shape}")
        distortion_node = storage.getNode("distortion_coefficients")
        distortion = [] if distortion_node.empty() else distortion_node.mat().ravel().tolist()
        size = [storage.getNode(key) for key in ("image_width", "image_height")]
        width, height = (None if node.empty() else int(node.real()) for node in size)
    finally:
        storage.release()
    return _calibration(path, K_33, distortion, width, height)


def _calibration(path: Path, K_33: np.ndarray, distortion: list[float], width: Any, height: Any) -> Calibration:
    if K_33[0, 1] != 0 or np.any(K_33[2] != [0, 0, 1]) or K_33[1, 0] != 0:
        raise ValueError(
            f"{path}: expected a pinhole camera matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {K_33.tolist()}"
        )
    if (width is None) != (height is None):
        raise ValueError(f"{path}: give both the width and the height of the calibration images, or neither")
    size_wh = None if width is None else (int(width), int(height))
    return Calibration(float(K_33[0, 0]), float(K_33[1, 1]), float(K_33[0, 2]), float(K_33[1, 2]),
                       size_wh, tuple(distortion), str(path))


def _matrix_data(node: Any) -> Any:
    """The numbers of a ROS-style matrix ({rows, cols, data}) or of a plain list."""
    return node.get("data") if isinstance(node, dict) else node


def _numbers(path: Path, key: str, values: Any) -> list[float]:
    try:
        return [float(v) for v in np.ravel(values)]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: expected numbers for {key}, got {values!r}") from None


def undistorted(sequence: Sequence, calibration: Calibration) -> Sequence:
    """`sequence` with every frame undistorted into the pinhole camera of the same K."""
    if not calibration.has_distortion:
        return sequence
    reader = _UndistortedReader(sequence.load_frame, sequence.camera, calibration.distortion)
    return replace(sequence, load_frame=reader)


@dataclass(frozen=True)
class _UndistortedReader:
    """Reads frames with `load_frame` and removes the lens distortion (picklable).

    Colour is resampled bilinearly, depth by nearest neighbour (no blending across edges);
    pixels that map outside the distorted image become black / no depth.
    """

    load_frame: Callable[[int], Frame]
    camera: Camera
    distortion: tuple[float, ...]

    def __call__(self, index: int) -> Frame:
        frame = self.load_frame(index)
        map_x_hw, map_y_hw = self._maps_hw
        image_hw3 = cv2.remap(frame.image_hw3, map_x_hw, map_y_hw, cv2.INTER_LINEAR)
        depth_hw = None
        if frame.depth_hw is not None:
            depth_hw = cv2.remap(frame.depth_hw, map_x_hw, map_y_hw, cv2.INTER_NEAREST)
        return replace(frame, image_hw3=image_hw3, depth_hw=depth_hw)

    @cached_property
    def _maps_hw(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W) float32 x and y of the distorted pixel each undistorted pixel reads."""
        size_wh = (self.camera.width, self.camera.height)
        return cv2.initUndistortRectifyMap(
            self.camera.K_33, np.array(self.distortion), None, self.camera.K_33, size_wh, cv2.CV_32FC1
        )
