"""Sequences stored as image files, the layouts' common part: where each frame's files lie,
the picklable reader that decodes them, and the small text formats the layouts share
(matrices, intrinsics, row lists). Image sizes are read from file headers, so opening a
sequence decodes no image.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from mvs.io.frames import PNG_SIGNATURE, DepthFormat, Registration, assemble_sequence
from mvs.io.intrinsics import Calibration
from mvs.types import Camera, Capture, Frame, Sequence, UnreadableFrame

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DATASET_DEFAULT_SIZE_WH = (640, 480)
"""Image size that datasets' default intrinsics describe; other sizes are scaled."""


@dataclass(frozen=True)
class FrameFiles:
    """Where one frame lives on disk, and its ground-truth pose read at open time.

    `pose_source` names where the pose came from (or should have), for skip reasons.
    """

    index: int
    timestamp: float
    image_path: Path
    depth_path: Path | None
    world_T_cam_44: np.ndarray | None
    pose_source: str


@dataclass(frozen=True)
class FrameFileReader:
    """Reads frames by dataset index from image files (picklable, for worker processes).

    `stored_camera` is the colour camera at the resolution of the files; `registration`
    brings colour and depth into the sequence camera.
    """

    root: Path
    stored_camera: Camera
    registration: Registration
    files_by_index: dict[int, FrameFiles]

    def __call__(self, index: int) -> Frame:
        files = self.files_by_index.get(index)
        if files is None:
            raise ValueError(f"{self.root}: no frame with dataset index {index}")
        image_hw3 = self.registration.colour_hw3(_read_image_hw3(files.image_path, self.stored_camera))
        depth_format = self.registration.depth_format
        depth_hw = None
        if depth_format is not None and files.depth_path is not None:
            depth_hw = self.registration.depth_hw(_read_depth_raw_hw(files.depth_path, depth_format.camera))
        world_T_cam_44 = None if files.world_T_cam_44 is None else files.world_T_cam_44.copy()
        return Frame(files.index, files.timestamp, image_hw3, depth_hw, world_T_cam_44)

    def image_paths(self, index: int) -> list[Path]:
        """The files frame `index` is read from: its colour image, and its depth image when
        the sequence has depth."""
        files = self.files_by_index[index]
        read_depth = self.registration.depth_format is not None and files.depth_path is not None
        return [files.image_path, files.depth_path] if read_depth else [files.image_path]


def assemble_image_sequence(
    root: Path,
    layout: str,
    camera: Camera,
    stored_camera: Camera,
    depth_format: DepthFormat | None,
    frame_files: list[FrameFiles],
    has_poses: bool,
    capture: Capture = Capture(),
) -> Sequence:
    """A lazy Sequence over `frame_files`, dropping frames without a valid pose when
    the sequence has poses; `image_names` holds the colour images' file names.

    `capture` says what the layout knows of the recording; whether depth is registered is
    found here from the cameras (depth stored in `camera` is).
    """
    registration = Registration(camera, depth_format)
    if depth_format is not None:
        capture = replace(
            capture,
            depth_metres_per_unit=depth_format.metres_per_unit,
            depth_registered=depth_format.stored_in(camera),
        )
    sequence = assemble_sequence(
        root, layout, camera, frame_files,
        lambda kept: FrameFileReader(root, stored_camera, registration, kept),
        has_depth=depth_format is not None, has_poses=has_poses, capture=capture,
    )
    return replace(sequence, image_names={files.index: files.image_path.name for files in frame_files})


def pinhole_K_33(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """K (3, 3) of a pinhole camera (pixels)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def dataset_camera(
    fx_fy_cx_cy: tuple[float, float, float, float],
    size_wh: tuple[int, int],
    intrinsics: Calibration | None,
) -> Camera:
    """The camera of images of `size_wh`: `intrinsics` as given (pixels of those images),
    else a dataset default for 640x480 images scaled to `size_wh`."""
    if intrinsics is not None:
        return intrinsics.camera(*size_wh)
    return Camera(pinhole_K_33(*fx_fy_cx_cy), *DATASET_DEFAULT_SIZE_WH).scaled(*size_wh)


def list_images(folder: Path) -> list[Path]:
    """The PNG and JPEG files in `folder`, in no particular order."""
    return [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]


def integer_stem(path: Path) -> int:
    """The frame number a file is named after ("12.jpg" is 12)."""
    if not path.stem.isdigit():
        raise ValueError(f"{path}: expected an integer frame number as the file name")
    return int(path.stem)


def read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(1-based line number, whitespace-separated tokens) of every line that is neither
    blank nor a '#' comment."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    rows = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if tokens and not tokens[0].startswith("#"):
            rows.append((line_number, tokens))
    return rows


def parse_floats(path: Path, line_number: int, tokens: list[str]) -> list[float]:
    """The numbers of one line of `path`; raises ValueError naming the file and line."""
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise ValueError(f"{path}: line {line_number}: expected numbers, got '{' '.join(tokens)}'") from None


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A float64 matrix of `shape` written as rows of numbers (inf and nan allowed)."""
    rows = [parse_floats(path, n, tokens) for n, tokens in read_rows(path)]
    if len({len(r) for r in rows}) > 1:
        raise ValueError(
            f"{path}: expected a {shape[0]}x{shape[1]} matrix, got rows of lengths {[len(r) for r in rows]}"
        )
    matrix = np.array(rows, dtype=np.float64)
    if matrix.shape != shape:
        raise ValueError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, got shape {matrix.shape}")
    return matrix


def read_pose_if_listed(path: Path, listed_names: set[str]) -> np.ndarray | None:
    """The (4, 4) matrix in `path` when its name is among `listed_names` (a directory
    listing, so that absent files cost no system call), else None."""
    return read_matrix(path, (4, 4)) if path.name in listed_names else None


def read_intrinsics_K_33(path: Path) -> np.ndarray:
    """K (3, 3) from a 3x3 matrix or a single line "fx fy cx cy" (pixels)."""
    rows = [parse_floats(path, n, tokens) for n, tokens in read_rows(path)]
    if len(rows) == 1 and len(rows[0]) == 4:
        return pinhole_K_33(*rows[0])
    if len(rows) == 3 and all(len(r) == 3 for r in rows):
        return np.array(rows, dtype=np.float64)
    raise ValueError(
        f"{path}: expected a 3x3 intrinsic matrix or one line 'fx fy cx cy', "
        f"got rows of lengths {[len(r) for r in rows]}"
    )


def _read_image_hw3(path: Path, stored_camera: Camera) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a colour image that must be `stored_camera`'s size."""
    image_hw3 = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB)
    if image_hw3 is None:
        raise UnreadableFrame(f"{path}: cannot read image")
    _check_size(path, image_hw3, stored_camera)
    return image_hw3


def _read_depth_raw_hw(path: Path, depth_camera: Camera) -> np.ndarray:
    """(H, W) uint16 raw depth of a single-channel 16-bit PNG of `depth_camera`'s size."""
    raw_hw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw_hw is None:
        raise UnreadableFrame(f"{path}: cannot read image")
    if raw_hw.ndim != 2 or raw_hw.dtype != np.uint16:
        raise ValueError(
            f"{path}: expected a single-channel uint16 depth image, "
            f"got {raw_hw.dtype} with shape {raw_hw.shape}"
        )
    _check_size(path, raw_hw, depth_camera)
    return raw_hw


def _check_size(path: Path, image: np.ndarray, camera: Camera) -> None:
    if image.shape[:2] != (camera.height, camera.width):
        raise ValueError(
            f"{path}: expected a {camera.width}x{camera.height} image like the first of the "
            f"sequence, got {image.shape[1]}x{image.shape[0]}"
        )


def first_image_size_wh(paths: list[Path], where: Path) -> tuple[int, int]:
    """(width, height) from the header of the first of `paths` whose PNG or JPEG header
    is readable, so that opening a sequence decodes no image."""
    if not paths:
        raise ValueError(f"{where}: no images found (expected {', '.join(IMAGE_SUFFIXES)})")
    for path in paths:
        size_wh = _image_header_size_wh(path)
        if size_wh is not None:
            return size_wh
    raise ValueError(f"{paths[0]}: cannot read image size (no readable PNG or JPEG header in {where})")


_JPEG_START_OF_FRAME = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _image_header_size_wh(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR chunk or a JPEG start-of-frame segment, or None."""
    with open(path, "rb") as file:
        head = file.read(24)
        if head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return width, height
        if head[:2] != b"\xff\xd8":
            return None
        file.seek(2)
        while True:
            marker = file.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return None
            while marker[1] == 0xFF:
                marker = marker[1:] + file.read(1)
                if len(marker) < 2:
                    return None
            length_bytes = file.read(2)
            if len(length_bytes) < 2:
                return None
            (length,) = struct.unpack(">H", length_bytes)
            if marker[1] in _JPEG_START_OF_FRAME:
                segment = file.read(5)
                if len(segment) < 5:
                    return None
                height, width = struct.unpack(">HH", segment[1:5])
                return width, height
            file.seek(length - 2, os.SEEK_CUR)
