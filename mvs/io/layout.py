"""Finding a sequence, detecting its layout and opening it: ScanNet exports and `.sens`
files, 7-Scenes, TUM RGB-D, plain image folders and videos.

`open_sequence` finds a sequence folder or file, detects its layout (`detect_layout`), has
the layout's reader take the cheap parts (file lists, intrinsics, poses), checks that the
selected image files are whole, and returns a lazy `Sequence` whose frames are read from
disk on access. Every frame comes out in one colour camera: uint8 RGB, depth in metres
registered to that camera (0 where invalid), and the camera-to-world pose `world_T_cam_44`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable

from mvs.io.folder import open_folder
from mvs.io.frames import without_damaged_images
from mvs.io.image_files import FrameFileReader
from mvs.io.intrinsics import Calibration, undistorted
from mvs.io.scannet import open_scannet_export
from mvs.io.sens import open_sens
from mvs.io.seven_scenes import open_7scenes, seven_scenes_colour_index
from mvs.io.tum import open_tum
from mvs.io.video import open_video
from mvs.types import Sequence

UNKNOWN_LAYOUT = (
    "unknown sequence layout; expected one of: ScanNet export (color/, depth/, pose/, "
    "intrinsic/), 7-Scenes (frame-NNNNNN.color.png), TUM RGB-D (rgb.txt), image folder (images/)"
)
READERS: dict[str, Callable[[Path, Calibration | None], Sequence]] = {
    "sens": open_sens,
    "video": open_video,
    "scannet": open_scannet_export,
    "7scenes": open_7scenes,
    "tum": open_tum,
    "folder": open_folder,
}
"""The reader of each layout: (the file or folder `detect_layout` names, intrinsics) to a Sequence."""


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


def detect_layout(root: Path) -> tuple[str, Path]:
    """The layout of the sequence at `root` (a key of READERS) and the path its reader
    opens: `root` itself, or the `.sens` file of a ScanNet scan folder."""
    if root.is_file():
        return ("sens" if root.suffix.lower() == ".sens" else "video"), root
    if (root / "color").is_dir():
        return "scannet", root
    if (root / f"{root.name}.sens").is_file():
        return "sens", root / f"{root.name}.sens"
    if any(seven_scenes_colour_index(file_name) is not None for file_name in os.listdir(root)):
        return "7scenes", root
    if (root / "rgb.txt").is_file():
        return "tum", root
    if (root / "images").is_dir():
        return "folder", root
    raise ValueError(f"{root}: {UNKNOWN_LAYOUT}")


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
    layout, path = detect_layout(root)
    sequence = READERS[layout](path, intrinsics).select(ranges)
    if isinstance(sequence.load_frame, FrameFileReader):
        sequence = without_damaged_images(sequence, sequence.load_frame.image_paths)
    if intrinsics is not None:
        sequence = undistorted(sequence, intrinsics)
    return replace(sequence, name=_sequence_name(root, sequences_dir))


def _sequence_name(root: Path, sequences_dir: Path) -> str:
    """`root` relative to `sequences_dir` when inside it ("scannet/scene0000_00"), else
    the folder's name."""
    try:
        return root.resolve().relative_to(Path(sequences_dir).resolve()).as_posix()
    except ValueError:
        return root.name
