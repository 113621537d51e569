"""Sequence loaders: ScanNet exports, 7-Scenes, TUM RGB-D and plain image folders; ScanNet
`.sens` files (`mvs/sens.py`) and videos (`mvs/video.py`) are dispatched from here.

`open_sequence` finds a sequence folder or file, detects its layout, reads the cheap parts
(file lists, intrinsics, poses), checks that the selected image files are whole, and returns
a lazy `Sequence` whose frames are read from disk on access. Every frame comes out in one
colour camera: uint8 RGB, depth in metres registered to that camera (0 where invalid), and
the camera-to-world pose `world_T_cam_44`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from mvs.frames import PNG_SIGNATURE, DepthFormat, Registration, assemble_sequence, without_damaged_images
from mvs.geometry import quaternion_to_matrix_33
from mvs.intrinsics import HOW_TO_GIVE_INTRINSICS, Calibration, undistorted
from mvs.sens import open_sens
from mvs.types import Camera, Frame, Sequence, UnreadableFrame
from mvs.video import open_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TUM_MAX_TIME_DIFFERENCE = 0.02
"""Seconds between an rgb timestamp and the depth or ground truth associated with it."""

SEVEN_SCENES_COLOUR_FX_FY_CX_CY = (525.0, 525.0, 320.0, 240.0)
SEVEN_SCENES_DEPTH_FX_FY_CX_CY = (585.0, 585.0, 320.0, 240.0)
TUM_FX_FY_CX_CY = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
TUM_DEFAULT_FX_FY_CX_CY = (525.0, 525.0, 319.5, 239.5)
DATASET_DEFAULT_SIZE_WH = (640, 480)
"""Image size the dataset default intrinsics above describe; other sizes are scaled."""

UNKNOWN_LAYOUT = (
    "unknown sequence layout; expected one of: ScanNet export (color/, depth/, pose/, "
    "intrinsic/), 7-Scenes (frame-NNNNNN.color.png), TUM RGB-D (rgb.txt), image folder (images/)"
)


FrameRange = tuple[int | None, int | None, int | None]
"""(start, stop, step) over dataset frame indices; None leaves a part open."""


def parse_frames(spec: str) -> list[FrameRange]:
    """(start, stop, step) of every comma-separated START:STOP:STEP range of a frame
    selection, in playback order; empty parts are None.

    Accepts "0:1000:2", ":", "10:", "::5" over dataset frame indices, and several ranges
    played one after another: "0:450,550:1000" (a cut), "0:1000:2,1:600:2" (a revisit).
    """
    ranges = spec.split(",")
    return [_parse_range(spec, part if len(ranges) > 1 else None) for part in ranges]


def _parse_range(spec: str, part: str | None) -> FrameRange:
    """One START:STOP:STEP range: `part` of a several-range `spec`, or `spec` itself (None)."""
    text = spec if part is None else part
    where = f"frames '{spec}'" if part is None else f"frames '{spec}': range '{part}'"
    pieces = text.split(":")
    if len(pieces) not in (2, 3) or not all(p.strip() == "" or p.strip().isdigit() for p in pieces):
        raise ValueError(
            f"{where}: expected START:STOP:STEP with non-negative integers "
            "(any part may be empty), e.g. 0:1000:2 or ::5"
            + ("; ranges are separated by commas, e.g. 0:450,550:1000" if part is not None else "")
        )
    start, stop, step = (int(p) if p.strip() else None for p in pieces + [""] * (3 - len(pieces)))
    if step == 0:
        raise ValueError(f"{where}: STEP must be >= 1, got 0")
    return start, stop, step


def resolve_sequence_path(name: str, sequences_dir: Path) -> Path:
    """The folder (or file) of sequence `name`: `sequences_dir / name`, else `name` as a path.

    A name without its ScanNet scan suffix also matches: "scannet/scene0000" finds
    "scannet/scene0000_00" (the first sorted folder matching "scene0000_*").
    """
    candidates = [Path(sequences_dir) / name, Path(name)]
    tried = []
    for candidate in candidates:
        tried.append(str(candidate))
        if candidate.exists():
            return candidate
    for candidate in candidates:
        tried.append(f"{candidate}_*")
        if candidate.parent.is_dir():
            matches = sorted(p for p in candidate.parent.glob(f"{candidate.name}_*") if p.is_dir())
            if matches:
                return matches[0]
    raise FileNotFoundError(f"sequence '{name}' not found; tried: {', '.join(tried)}")


def open_sequence(
    name: str,
    sequences_dir: Path = Path("sequences"),
    frames: str = ":",
    intrinsics: Calibration | tuple[float, float, float, float] | None = None,
) -> Sequence:
    """Open the sequence `name` lazily, keeping the dataset frame indices in `frames`
    (comma-separated START:STOP:STEP ranges, played in the order listed; see `parse_frames`).

    `name` is a folder in one of the layouts, a ScanNet `.sens` file or a video file.
    `intrinsics` (a Calibration, or fx, fy, cx, cy in pixels of the colour images as
    stored) overrides the colour camera the layout would give; frames of a camera with
    lens distortion are undistorted. Frames whose ground-truth pose is missing or not a
    rigid transform, or that cannot be read, are dropped and listed in `Sequence.skipped`;
    the selected frames' image files are checked here (`image_file_damage`), and more than
    MAX_UNREADABLE_SHARE of them damaged raises ValueError naming them.
    """
    root = resolve_sequence_path(name, sequences_dir)
    if isinstance(intrinsics, tuple):
        intrinsics = Calibration(*intrinsics)
    ranges = parse_frames(frames)
    if root.is_file() and root.suffix.lower() == ".sens":
        sequence = open_sens(root, intrinsics)
    elif root.is_file():
        sequence = open_video(root, intrinsics)
    elif (root / "color").is_dir():
        sequence = _open_scannet(root, intrinsics)
    elif (root / f"{root.name}.sens").is_file():
        sequence = open_sens(root / f"{root.name}.sens", intrinsics)
    elif any(_7scenes_colour_index(file_name) is not None for file_name in os.listdir(root)):
        sequence = _open_7scenes(root, intrinsics)
    elif (root / "rgb.txt").is_file():
        sequence = _open_tum(root, intrinsics)
    elif (root / "images").is_dir():
        sequence = _open_folder(root, intrinsics)
    else:
        raise ValueError(f"{root}: {UNKNOWN_LAYOUT}")
    sequence = sequence.select(ranges)
    if isinstance(sequence.load_frame, _FrameReader):
        sequence = without_damaged_images(sequence, sequence.load_frame.image_paths)
    if intrinsics is not None:
        sequence = undistorted(sequence, intrinsics)
    return replace(sequence, name=_sequence_name(root, sequences_dir))


@dataclass(frozen=True)
class _FrameFiles:
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
class _FrameReader:
    """Reads frames by dataset index from image files (picklable, for worker processes).

    `stored_camera` is the colour camera at the resolution of the files; `registration`
    brings colour and depth into the sequence camera.
    """

    root: Path
    stored_camera: Camera
    registration: Registration
    files_by_index: dict[int, _FrameFiles]

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


def _assemble(
    root: Path,
    layout: str,
    camera: Camera,
    stored_camera: Camera,
    depth_format: DepthFormat | None,
    frame_files: list[_FrameFiles],
    has_poses: bool,
) -> Sequence:
    """A lazy Sequence over `frame_files`, dropping frames without a valid pose when
    the sequence has poses; `image_names` holds the colour images' file names."""
    registration = Registration(camera, depth_format)
    sequence = assemble_sequence(
        root, layout, camera, frame_files,
        lambda kept: _FrameReader(root, stored_camera, registration, kept),
        has_depth=depth_format is not None, has_poses=has_poses,
    )
    return replace(sequence, image_names={files.index: files.image_path.name for files in frame_files})


def _sequence_name(root: Path, sequences_dir: Path) -> str:
    """`root` relative to `sequences_dir` when inside it ("scannet/scene0000_00"), else
    the folder's name."""
    try:
        return root.resolve().relative_to(Path(sequences_dir).resolve()).as_posix()
    except ValueError:
        return root.name


def _open_scannet(root: Path, intrinsics: Calibration | None) -> Sequence:
    """ScanNet export: color/{i}.jpg, depth/{i}.png (mm), pose/{i}.txt, intrinsic/*.txt.

    The working resolution is the depth resolution when depth exists: colour is resized
    and its K scaled, depth is registered into that camera.
    """
    colour_paths = {_integer_stem(p): p for p in _list_images(root / "color")}
    indices = sorted(colour_paths)
    colour_size_wh = _first_image_size_wh([colour_paths[i] for i in indices], root / "color")
    if intrinsics is not None:
        stored_camera = intrinsics.camera(*colour_size_wh)
    else:
        colour_K_33 = _read_matrix(root / "intrinsic" / "intrinsic_color.txt", (4, 4))[:3, :3]
        stored_camera = Camera(colour_K_33, *colour_size_wh)
    camera, depth_format = stored_camera, None
    depth_dir = root / "depth"
    depth_paths = {_integer_stem(p): p for p in depth_dir.glob("*.png")} if depth_dir.is_dir() else {}
    if depth_paths:
        depth_size_wh = _first_image_size_wh([depth_paths[i] for i in sorted(depth_paths)], depth_dir)
        depth_K_33 = _read_matrix(root / "intrinsic" / "intrinsic_depth.txt", (4, 4))[:3, :3]
        depth_format = DepthFormat(Camera(depth_K_33, *depth_size_wh), 1e-3)
        camera = stored_camera.scaled(*depth_size_wh)
    pose_dir = root / "pose"
    pose_names = set(os.listdir(pose_dir)) if pose_dir.is_dir() else set()
    has_poses = bool(pose_names)
    frame_files = [
        _FrameFiles(
            index, float(index), colour_paths[index], depth_paths.get(index),
            _read_pose_if_listed(pose_dir / f"{index}.txt", pose_names), str(pose_dir / f"{index}.txt"),
        )
        for index in indices
    ]
    return _assemble(root, "scannet", camera, stored_camera, depth_format, frame_files, has_poses)


def _7scenes_colour_index(file_name: str) -> int | None:
    """NNNNNN of "frame-NNNNNN.color.png|jpg", else None."""
    for suffix in (".color.png", ".color.jpg"):
        number = file_name.removeprefix("frame-").removesuffix(suffix)
        if file_name.startswith("frame-") and file_name.endswith(suffix) and number.isdigit():
            return int(number)
    return None


def _open_7scenes(root: Path, intrinsics: Calibration | None) -> Sequence:
    """7-Scenes: frame-NNNNNN.{color.png|jpg, depth.png (mm), pose.txt}.

    Colour camera fx = fy = 525, cx, cy = 320, 240 at 640x480 (scaled to other sizes)
    unless `intrinsics` is given; depth camera from camera-intrinsics.txt, else 585/585/
    320/240 at 640x480. Depth is registered into the colour camera.
    """
    file_names = set(os.listdir(root))
    colour_paths = {
        index: root / name for name in file_names if (index := _7scenes_colour_index(name)) is not None
    }
    indices = sorted(colour_paths)
    colour_size_wh = _first_image_size_wh([colour_paths[i] for i in indices], root)
    stored_camera = _dataset_camera(SEVEN_SCENES_COLOUR_FX_FY_CX_CY, colour_size_wh, intrinsics)
    depth_paths = {
        i: root / f"frame-{i:06d}.depth.png" for i in indices if f"frame-{i:06d}.depth.png" in file_names
    }
    depth_format = None
    if depth_paths:
        depth_size_wh = _first_image_size_wh([depth_paths[i] for i in sorted(depth_paths)], root)
        intrinsics_path = root / "camera-intrinsics.txt"
        if intrinsics_path.is_file():
            depth_camera = Camera(_read_intrinsics_K_33(intrinsics_path), *depth_size_wh)
        else:
            depth_camera = _dataset_camera(SEVEN_SCENES_DEPTH_FX_FY_CX_CY, depth_size_wh, None)
        depth_format = DepthFormat(depth_camera, 1e-3)
    has_poses = any(name.endswith(".pose.txt") for name in file_names)
    frame_files = [
        _FrameFiles(
            index, float(index), colour_paths[index], depth_paths.get(index),
            _read_pose_if_listed(root / f"frame-{index:06d}.pose.txt", file_names),
            str(root / f"frame-{index:06d}.pose.txt"),
        )
        for index in indices
    ]
    return _assemble(root, "7scenes", stored_camera, stored_camera, depth_format, frame_files, has_poses)


def _open_tum(root: Path, intrinsics: Calibration | None) -> Sequence:
    """TUM RGB-D: rgb.txt, depth.txt (timestamp filename), groundtruth.txt (TUM poses).

    Depth (uint16 / 5000 = metres, already registered to rgb) and poses are associated to
    each rgb timestamp by the nearest timestamp within 0.02 s. Intrinsics from K.txt, else
    by the freiburg number in the folder name.
    """
    rgb_times_n, rgb_paths = _read_tum_file_list(root / "rgb.txt")
    colour_size_wh = _first_image_size_wh(rgb_paths, root / "rgb.txt")
    if intrinsics is None and (root / "K.txt").is_file():
        stored_camera = Camera(_read_intrinsics_K_33(root / "K.txt"), *colour_size_wh)
    else:
        fx_fy_cx_cy = next(
            (value for key, value in TUM_FX_FY_CX_CY.items() if key in root.resolve().name),
            TUM_DEFAULT_FX_FY_CX_CY,
        )
        stored_camera = _dataset_camera(fx_fy_cx_cy, colour_size_wh, intrinsics)
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
        _FrameFiles(
            index, float(rgb_times_n[index]), rgb_paths[index], depth_for_rgb[index], pose_for_rgb[index],
            f"{gt_path} within {TUM_MAX_TIME_DIFFERENCE} s of t={rgb_times_n[index]:.6f}",
        )
        for index in range(len(rgb_paths))
    ]
    return _assemble(root, "tum", stored_camera, stored_camera, depth_format, frame_files, has_poses)


def _open_folder(root: Path, intrinsics: Calibration | None) -> Sequence:
    """Image folder: images/*.{png,jpg,jpeg}, optional depth/{stem}.png (mm), optional
    poses.txt (one flattened row-major 4x4 camera-to-world per image, in frame order), K.txt.

    Frame indices are the integer file stems when every stem is a distinct integer, else
    positions in sorted order.
    """
    image_paths = sorted(_list_images(root / "images"))
    stems = [p.stem for p in image_paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        order = sorted(range(len(stems)), key=lambda k: int(stems[k]))
        image_paths = [image_paths[k] for k in order]
        indices = [int(p.stem) for p in image_paths]
    else:
        indices = list(range(len(image_paths)))
    colour_size_wh = _first_image_size_wh(image_paths, root / "images")
    if intrinsics is not None:
        camera = intrinsics.camera(*colour_size_wh)
    elif (root / "K.txt").is_file():
        camera = Camera(_read_intrinsics_K_33(root / "K.txt"), *colour_size_wh)
    else:
        raise ValueError(f"{root}: no camera intrinsics; {HOW_TO_GIVE_INTRINSICS}, or put K.txt in the folder")
    depth_dir = root / "depth"
    depth_names = set(os.listdir(depth_dir)) if depth_dir.is_dir() else set()
    depth_format = DepthFormat(camera, 1e-3) if depth_names else None
    poses_path = root / "poses.txt"
    has_poses = poses_path.is_file()
    world_T_cam_n44 = _read_flat_poses_n44(poses_path, len(image_paths)) if has_poses else None
    frame_files = [
        _FrameFiles(
            index, float(index), path,
            depth_dir / f"{path.stem}.png" if f"{path.stem}.png" in depth_names else None,
            None if world_T_cam_n44 is None else world_T_cam_n44[k],
            f"{poses_path} line {k + 1}",
        )
        for k, (index, path) in enumerate(zip(indices, image_paths))
    ]
    return _assemble(root, "folder", camera, camera, depth_format, frame_files, has_poses)


def _K_33(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _dataset_camera(
    fx_fy_cx_cy: tuple[float, float, float, float],
    size_wh: tuple[int, int],
    intrinsics: Calibration | None,
) -> Camera:
    """The camera of images of `size_wh`: `intrinsics` as given (pixels of those images),
    else a dataset default for 640x480 images scaled to `size_wh`."""
    if intrinsics is not None:
        return intrinsics.camera(*size_wh)
    return Camera(_K_33(*fx_fy_cx_cy), *DATASET_DEFAULT_SIZE_WH).scaled(*size_wh)


def _list_images(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]


def _integer_stem(path: Path) -> int:
    if not path.stem.isdigit():
        raise ValueError(f"{path}: expected an integer frame number as the file name")
    return int(path.stem)


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
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


def _parse_floats(path: Path, line_number: int, tokens: list[str]) -> list[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        raise ValueError(f"{path}: line {line_number}: expected numbers, got '{' '.join(tokens)}'") from None


def _read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A float64 matrix of `shape` written as rows of numbers (inf and nan allowed)."""
    rows = [_parse_floats(path, n, tokens) for n, tokens in _read_rows(path)]
    if len({len(r) for r in rows}) > 1:
        raise ValueError(
            f"{path}: expected a {shape[0]}x{shape[1]} matrix, got rows of lengths {[len(r) for r in rows]}"
        )
    matrix = np.array(rows, dtype=np.float64)
    if matrix.shape != shape:
        raise ValueError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, got shape {matrix.shape}")
    return matrix


def _read_pose_if_listed(path: Path, listed_names: set[str]) -> np.ndarray | None:
    """The (4, 4) matrix in `path` when its name is among `listed_names` (a directory
    listing, so that absent files cost no system call), else None."""
    return _read_matrix(path, (4, 4)) if path.name in listed_names else None


def _read_intrinsics_K_33(path: Path) -> np.ndarray:
    """K (3, 3) from a 3x3 matrix or a single line "fx fy cx cy" (pixels)."""
    rows = [_parse_floats(path, n, tokens) for n, tokens in _read_rows(path)]
    if len(rows) == 1 and len(rows[0]) == 4:
        return _K_33(*rows[0])
    if len(rows) == 3 and all(len(r) == 3 for r in rows):
        return np.array(rows, dtype=np.float64)
    raise ValueError(
        f"{path}: expected a 3x3 intrinsic matrix or one line 'fx fy cx cy', "
        f"got rows of lengths {[len(r) for r in rows]}"
    )


def _read_flat_poses_n44(path: Path, count: int) -> np.ndarray:
    """(count, 4, 4) camera-to-world poses, one flattened row-major 4x4 per line."""
    rows = _read_rows(path)
    if len(rows) != count:
        raise ValueError(f"{path}: expected {count} lines (one pose per image), got {len(rows)}")
    world_T_cam_n44 = np.empty((count, 4, 4))
    for k, (line_number, tokens) in enumerate(rows):
        values = _parse_floats(path, line_number, tokens)
        if len(values) != 16:
            raise ValueError(
                f"{path}: line {line_number}: expected 16 numbers (a flattened 4x4 matrix), got {len(values)}"
            )
        world_T_cam_n44[k] = np.reshape(values, (4, 4))
    return world_T_cam_n44


def _read_tum_file_list(path: Path) -> tuple[np.ndarray, list[Path]]:
    """Timestamps (N,) in seconds and file paths of a TUM rgb.txt or depth.txt."""
    times, paths = [], []
    for line_number, tokens in _read_rows(path):
        if len(tokens) < 2:
            raise ValueError(
                f"{path}: line {line_number}: expected 'timestamp filename', got '{' '.join(tokens)}'"
            )
        times.append(_parse_floats(path, line_number, tokens[:1])[0])
        paths.append(path.parent / tokens[1])
    return np.array(times, dtype=np.float64), paths


def _read_tum_trajectory(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (M,) in seconds and camera-to-world poses (M, 4, 4) of a TUM trajectory
    ("timestamp tx ty tz qx qy qz qw" per line)."""
    times, world_T_cam_m44 = [], []
    for line_number, tokens in _read_rows(path):
        values = _parse_floats(path, line_number, tokens)
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


def _first_image_size_wh(paths: list[Path], where: Path) -> tuple[int, int]:
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
