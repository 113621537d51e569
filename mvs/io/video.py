"""Video files as sequences: any container and codec OpenCV's VideoCapture decodes.

Frames are decoded on access through one open capture: reading forward continues the
decoder (short gaps are skipped by grabbing), anything else seeks; no frame is kept, so a
long video runs in bounded memory. A frame's index is its position in the video and its
timestamp is index / frame rate (seconds). A video has no depth and no ground-truth
poses, and needs the camera intrinsics from `--intrinsics`. Frames past the point where a
truncated video stops decoding are skipped and listed in `Sequence.skipped`; a frame that
fails to decode in the middle is found when it is read and skipped like an unreadable image
(`Sequence.readable_frame`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2

from mvs.io.frames import assemble_sequence
from mvs.io.intrinsics import HOW_TO_GIVE_INTRINSICS, Calibration, MissingIntrinsics
from mvs.types import Camera, Frame, Sequence, UnreadableFrame

MAX_DECLARED_FRAMES = 10_000_000
"""A larger frame count in a container is not believed: the frames are counted instead."""
MAX_GRAB_AHEAD = 64
"""Frames a forward jump decodes and drops before a seek is cheaper (a seek decodes from
the previous keyframe, up to a group of pictures of typically 30-250 frames)."""


@dataclass(frozen=True)
class VideoFrameRecord:
    """A frame of the video: its index (position from 0) and timestamp (seconds)."""

    index: int
    timestamp: float
    world_T_cam_44: None = None
    pose_source: str = ""


def open_video(path: Path, intrinsics: Calibration | None) -> Sequence:
    """A lazy Sequence over the frames of the video file at `path`."""
    capture = _open_capture(path)
    try:
        # The size of a decoded frame, which includes the rotation phones record as metadata.
        ok, first_hw3 = capture.read()
        if not ok:
            raise ValueError(f"{path}: no frame of the video can be decoded")
        height, width = first_hw3.shape[:2]
        fps = capture.get(cv2.CAP_PROP_FPS)
        declared_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if declared_count > MAX_DECLARED_FRAMES:
            declared_count = 0
        if intrinsics is None:
            raise MissingIntrinsics(
                f"{path}: a {width}x{height} video has no camera intrinsics; {HOW_TO_GIVE_INTRINSICS}", (width, height)
            )
        count = _decodable_count(capture, declared_count)
    finally:
        capture.release()
    seconds_per_frame = 1.0 / fps if fps > 0 else 1.0
    records = [VideoFrameRecord(i, i * seconds_per_frame) for i in range(count)]
    unreadable = {
        i: f"cannot be decoded from {path} (decoding stops after frame {count - 1} of the "
           f"{declared_count} the video declares)"
        for i in range(count, declared_count)
    }
    camera = intrinsics.camera(width, height)
    return assemble_sequence(
        path, "video", camera, records, lambda kept: VideoFrameReader(path, camera, seconds_per_frame),
        has_depth=False, has_poses=False, unreadable=unreadable,
    )


@dataclass
class VideoFrameReader:
    """Decodes frames of a video by index through one open capture (picklable: a copy
    in another process opens its own capture)."""

    path: Path
    camera: Camera
    seconds_per_frame: float
    _capture: cv2.VideoCapture | None = field(default=None, repr=False)
    _next_index: int = 0

    def __call__(self, index: int) -> Frame:
        capture = self._position_at(index)
        ok, image_hw3 = capture.read()
        self._next_index = index + 1
        if not ok:
            self._next_index = -1
            raise UnreadableFrame(f"{self.path}: cannot decode frame {index}")
        if image_hw3.shape[:2] != (self.camera.height, self.camera.width):
            raise ValueError(
                f"{self.path}: frame {index} is {image_hw3.shape[1]}x{image_hw3.shape[0]}, "
                f"the video started at {self.camera.width}x{self.camera.height}"
            )
        image_hw3 = cv2.cvtColor(image_hw3, cv2.COLOR_BGR2RGB)
        return Frame(index, index * self.seconds_per_frame, image_hw3)

    def _position_at(self, index: int) -> cv2.VideoCapture:
        """The capture, about to decode frame `index`."""
        if self._capture is None:
            self._capture = _open_capture(self.path)
            self._next_index = 0
        gap = index - self._next_index
        if 0 < gap <= MAX_GRAB_AHEAD and self._next_index >= 0:
            for _ in range(gap):
                self._capture.grab()
        elif gap != 0 or self._next_index < 0:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        return self._capture

    def __getstate__(self) -> dict:
        return {"path": self.path, "camera": self.camera, "seconds_per_frame": self.seconds_per_frame}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


def _open_capture(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(
            f"{path}: cannot open as a video (not a container and codec OpenCV's VideoCapture "
            "decodes, such as mp4, mov, mkv or avi; or the file is damaged)"
        )
    return capture


def _decodable_count(capture: cv2.VideoCapture, declared_count: int) -> int:
    """How many frames from the start decode (frame 0 does): the declared count when its
    last frame decodes, else the first undecodable frame found by bisection (a truncated
    file); without a declared count, the frames counted by decoding to the end."""
    def decodes(index: int) -> bool:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        return capture.grab()

    if declared_count <= 0:
        count = 1  # the first frame, read already
        while capture.grab():
            count += 1
        return count
    if decodes(declared_count - 1):
        return declared_count
    lo, hi = 1, declared_count - 1  # invariant: frame hi does not decode; frames < lo do
    while lo < hi:
        middle = (lo + hi) // 2
        if decodes(middle):
            lo = middle + 1
        else:
            hi = middle
    return lo
