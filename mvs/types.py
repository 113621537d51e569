"""Core types shared by every stage: `Camera`, `Frame`, `Capture`, `Sequence`.

Pose convention (one for the whole project): `a_T_b` is a 4x4 rigid transform that maps
points from frame b to frame a, so `world_T_cam @ p_cam = p_world`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics of an image of `width` x `height` pixels.

    `K_33` maps camera coordinates (metres, x right, y down, z forward) to pixels; pixel
    centres sit at integer coordinates.
    """

    K_33: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        K_33 = np.asarray(self.K_33, dtype=np.float64)
        if K_33.shape != (3, 3):
            raise ValueError(f"expected a 3x3 intrinsic matrix, got shape {K_33.shape}")
        object.__setattr__(self, "K_33", K_33)

    @property
    def fx(self) -> float:
        return float(self.K_33[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K_33[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K_33[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K_33[1, 2])

    def scaled(self, width: int, height: int) -> Camera:
        """The same camera seen through an image resized to `width` x `height` pixels."""
        sx, sy = width / self.width, height / self.height
        K_33 = self.K_33.copy()
        K_33[0] *= sx
        K_33[1] *= sy
        # Pixel centres at integers: the continuous image edge (-0.5) stays at the edge.
        K_33[0, 2] = (self.cx + 0.5) * sx - 0.5
        K_33[1, 2] = (self.cy + 0.5) * sy - 0.5
        return Camera(K_33, width, height)


@dataclass
class Frame:
    """One time step of a sequence.

    image_hw3: uint8 RGB at the sequence camera's resolution.
    depth_hw: float32 metres registered to the colour camera, 0 where invalid, or None.
    world_T_cam_44: float64 camera-to-world ground-truth pose, or None when unknown.
    index: the frame's index in the original dataset (kept through every selection).
    timestamp: seconds where the dataset has them, else the index.
    """

    index: int
    timestamp: float
    image_hw3: np.ndarray
    depth_hw: np.ndarray | None = None
    world_T_cam_44: np.ndarray | None = None


@dataclass(frozen=True)
class Capture:
    """What a sequence's loader knows of how it was recorded; None where it cannot tell.

    depth_metres_per_unit: metres per unit of the stored depth images (None without depth).
    depth_registered: whether depth was stored in the colour camera (same intrinsics and
        size); when not, the loader registers it into that camera as if the two cameras sat
        at one point, which leaves offsets of a few pixels at depth edges.
    depth_synchronised: whether a frame's colour and depth were taken at one instant.
    poses_of_colour: whether the dataset's poses are those of the colour frames; False when
        they track another sensor (7-Scenes': the depth camera, at its own instants).
    colour_calibrated: whether the colour camera's intrinsics are this recording's
        calibration; False when the layout holds none and its dataset's nominal values stand
        in (7-Scenes' 525 px for every Kinect).
    """

    depth_metres_per_unit: float | None = None
    depth_registered: bool | None = None
    depth_synchronised: bool | None = None
    poses_of_colour: bool | None = None
    colour_calibrated: bool | None = None


MAX_UNREADABLE_SHARE = 0.1
"""Frames whose data cannot be read are skipped up to this share of the selected frames."""


class UnreadableFrame(ValueError):
    """A frame reader's error for a frame whose stored data cannot be read or decoded;
    the message names the file (and frame) and the problem."""


@dataclass
class Sequence:
    """A lazily loaded sequence of frames sharing one colour camera.

    Frames are read from disk on access, so a long sequence is never held in memory.
    `indices` lists the dataset frame indices in playback order; `skipped` maps a dataset
    frame index that was dropped (at open time, or when its data could not be read) to the
    reason; `gt_world_T_cam_44` holds the
    ground-truth camera-to-world poses by dataset index (read at open time, without images);
    `timestamps` the dataset's timestamps in seconds where it has them; `image_names` the
    file name of each frame's colour image where frames are read from image files;
    `unreadable` the selected frames whose data cannot be read or decoded (also in
    `skipped`), found when the sequence was opened or when a frame failed to load;
    `capture` what the loader knows of how the sequence was recorded.
    """

    name: str
    root: Path
    layout: str
    camera: Camera
    indices: list[int]
    load_frame: Callable[[int], Frame]
    has_depth: bool
    has_poses: bool
    has_mesh: bool = False
    skipped: dict[int, str] = field(default_factory=dict)
    gt_world_T_cam_44: dict[int, np.ndarray] = field(default_factory=dict)
    timestamps: dict[int, float] = field(default_factory=dict)
    image_names: dict[int, str] = field(default_factory=dict)
    unreadable: dict[int, str] = field(default_factory=dict)
    capture: Capture = field(default_factory=Capture)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Frame:
        """The frame at `position` in playback order (not the dataset index)."""
        return self.load_frame(self.indices[position])

    def __iter__(self) -> Iterator[Frame]:
        """The readable frames in playback order (see `readable_frame`)."""
        for index in self.indices:
            frame = self.readable_frame(index)
            if frame is not None:
                yield frame

    def readable_frame(self, index: int) -> Frame | None:
        """The frame of dataset index `index`, or None when its data cannot be read or
        decoded: the frame is then skipped as `skip_unreadable` says."""
        try:
            return self.load_frame(index)
        except UnreadableFrame as error:
            self.skip_unreadable({index: str(error)})
            return None

    def skip_unreadable(self, reasons: dict[int, str]) -> None:
        """Add frames whose data cannot be read (dataset index to reason) to `skipped` and
        `unreadable`. Raises ValueError naming them when they are more than
        MAX_UNREADABLE_SHARE of the selected frames: then the input is damaged, not a frame."""
        self.unreadable.update(reasons)
        self.skipped.update(reasons)
        selected = len(set(self.indices) | set(self.unreadable))
        if len(self.unreadable) > MAX_UNREADABLE_SHARE * selected:
            named = [f"frame {i}: {reason}" for i, reason in sorted(self.unreadable.items())]
            more = f"; and {len(named) - 10} more" if len(named) > 10 else ""
            raise ValueError(
                f"{self.root}: {len(named)} of {selected} selected frames cannot be read, more than the "
                f"{100 * MAX_UNREADABLE_SHARE:g} % a run skips: {'; '.join(named[:10])}{more}"
            )

    def timestamp(self, index: int) -> float:
        """Timestamp (seconds) of a dataset frame index; the index itself where none exists."""
        return self.timestamps.get(index, float(index))

    @property
    def mesh_path(self) -> Path:
        """Ground-truth mesh of a synthetic sequence (exists when `has_mesh`)."""
        return self.root / "mesh.ply"

    def select(self, ranges: list[tuple[int | None, int | None, int | None]]) -> Sequence:
        """Keep the dataset indices in each `range(start, stop, step)` of `ranges`, played in
        the order listed (all of the first range, then all of the second, ...); dataset
        indices are kept. A None start or stop is the sequence's first or last index, a
        None step is 1. Raises ValueError when a range selects no frame, or when a dataset
        index falls in two ranges (every frame appears once)."""
        known = [*self.indices, *self.skipped]
        kept: list[int] = []
        skipped: dict[int, str] = {}
        range_of: dict[int, str] = {}
        for start, stop, step in ranges:
            lo = min(known) if start is None else start
            hi = max(known) + 1 if stop is None else stop
            step = 1 if step is None else step
            if step < 1:
                raise ValueError(f"frame step must be >= 1, got {step}")
            wanted = range(lo, hi, step)
            name = f"{lo}:{hi}:{step}"
            known_wanted = [i for i in known if i in wanted]
            twice = sorted(i for i in known_wanted if i in range_of)
            if twice:
                more = f" ({len(twice)} indices are in both)" if len(twice) > 1 else ""
                raise ValueError(
                    f"{self.root}: dataset index {twice[0]} is selected twice, by {range_of[twice[0]]} and by "
                    f"{name}{more}; each frame can be selected once"
                )
            range_kept = [i for i in self.indices if i in wanted]
            if not range_kept:
                raise ValueError(
                    f"{self.root}: no frames in {name}; the sequence has dataset "
                    f"indices {min(self.indices)}..{max(self.indices)}"
                )
            kept += range_kept
            skipped.update({i: reason for i, reason in self.skipped.items() if i in wanted})
            range_of.update({i: name for i in known_wanted})
        gt_world_T_cam_44 = {i: self.gt_world_T_cam_44[i] for i in kept if i in self.gt_world_T_cam_44}
        unreadable = {i: reason for i, reason in self.unreadable.items() if i in skipped or i in kept}
        return replace(
            self, indices=kept, skipped=skipped, gt_world_T_cam_44=gt_world_T_cam_44, unreadable=unreadable
        )
