"""Pieces every sequence loader shares: stored images into the sequence camera, the lazy
`Sequence` over a layout's frame records with frames that cannot be used left out, and the
check that finds image files a decoder could not read whole.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Protocol, TypeVar

import cv2
import numpy as np

from mvs.geometry import is_valid_pose_44, nearest_rigid_pose_44, register_depth_hw
from mvs.types import Camera, Capture, Frame, Sequence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DepthFormat:
    """The depth images as stored: their camera (intrinsics, size) and metres per unit."""

    camera: Camera
    metres_per_unit: float

    def stored_in(self, camera: Camera) -> bool:
        """Whether the depth images are stored in `camera` already (same size and K), so
        that registering them moves no pixel."""
        same_size = (self.camera.width, self.camera.height) == (camera.width, camera.height)
        return same_size and bool(np.allclose(self.camera.K_33, camera.K_33))


@dataclass(frozen=True)
class Registration:
    """Brings stored images into the sequence camera `camera` (picklable, for workers).

    Colour is resized to `camera`'s resolution; raw depth of `depth_format` is scaled to
    metres and registered into `camera` (nearest neighbour, co-located cameras).
    """

    camera: Camera
    depth_format: DepthFormat | None

    def colour_hw3(self, stored_hw3: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB at `camera`'s resolution from an image of any size."""
        if stored_hw3.shape[:2] == (self.camera.height, self.camera.width):
            return stored_hw3
        return cv2.resize(stored_hw3, (self.camera.width, self.camera.height), interpolation=cv2.INTER_AREA)

    def depth_hw(self, raw_hw: np.ndarray) -> np.ndarray:
        """(H, W) float32 metres in `camera`, 0 where invalid, from raw uint16 depth of
        `depth_format`'s size. Raw values 0 and 65535 are invalid."""
        valid_hw = (raw_hw > 0) & (raw_hw < np.iinfo(np.uint16).max)
        depth_hw = np.where(valid_hw, raw_hw * np.float32(self.depth_format.metres_per_unit), 0)
        source_hw = self._depth_source_hw
        if source_hw is None:
            return depth_hw.astype(np.float32)
        return np.where(source_hw >= 0, depth_hw.reshape(-1)[source_hw], 0).astype(np.float32)

    @cached_property
    def _depth_source_hw(self) -> np.ndarray | None:
        """(H, W) int64 flat index of the depth pixel each `camera` pixel reads (-1 where the
        depth camera saw nothing), or None when depth is stored in `camera` already.

        `register_depth_hw` is nearest-neighbour with intrinsics fixed per sequence, so
        registering the image of pixel numbers once gives the lookup for every frame.
        """
        if self.depth_format.stored_in(self.camera):
            return None
        depth_camera = self.depth_format.camera
        pixel_numbers_hw = np.arange(1, depth_camera.width * depth_camera.height + 1, dtype=np.float32)
        registered_hw = register_depth_hw(
            pixel_numbers_hw.reshape(depth_camera.height, depth_camera.width),
            depth_camera.K_33, self.camera.K_33, self.camera.width, self.camera.height,
        )
        return registered_hw.astype(np.int64) - 1


class FrameRecord(Protocol):
    """What a loader knows of one frame at open time, before reading its images.

    `pose_source` names where the pose came from (or should have), for skip reasons.
    """

    index: int
    timestamp: float
    world_T_cam_44: np.ndarray | None
    pose_source: str


RecordT = TypeVar("RecordT", bound=FrameRecord)


def assemble_sequence(
    root: Path,
    layout: str,
    camera: Camera,
    records: list[RecordT],
    make_reader: Callable[[dict[int, RecordT]], Callable[[int], Frame]],
    has_depth: bool,
    has_poses: bool,
    unreadable: dict[int, str] | None = None,
    capture: Capture = Capture(),
) -> Sequence:
    """A lazy Sequence over `records`, dropping frames without a valid pose when the
    sequence has poses; the kept poses are made exactly rigid (`nearest_rigid_pose_44`).

    `make_reader` turns the kept records (by dataset index) into the frame reader;
    `unreadable` lists frames the loader already found unusable (dataset index to reason),
    which are counted in `Sequence.skipped` with the dropped poses; `capture` is what the
    loader knows of how the sequence was recorded.
    """
    unreadable = dict(unreadable or {})
    if not records and not unreadable:
        raise ValueError(f"{root}: no frames found ({layout} layout)")
    kept: list[RecordT] = []
    no_pose: dict[int, str] = {}
    for record in records:
        if has_poses and record.world_T_cam_44 is None:
            no_pose[record.index] = f"no pose in {record.pose_source}"
        elif has_poses and not is_valid_pose_44(record.world_T_cam_44):
            no_pose[record.index] = f"invalid pose in {record.pose_source}"
        elif has_poses:
            kept.append(replace(record, world_T_cam_44=nearest_rigid_pose_44(record.world_T_cam_44)))
        else:
            kept.append(record)
    total = len(records) + len(unreadable)
    for what, skipped in (("that cannot be read", unreadable), ("without a valid pose", no_pose)):
        if skipped:
            first_index = next(iter(skipped))
            logger.warning(
                "%s: skipped %d of %d frames %s (frame %d: %s)",
                root, len(skipped), total, what, first_index, skipped[first_index],
            )
    skipped = {**unreadable, **no_pose}
    if not kept:
        first_index = next(iter(skipped))
        raise ValueError(f"{root}: every frame was skipped; frame {first_index}: {skipped[first_index]}")
    return Sequence(
        name=root.name,
        root=root,
        layout=layout,
        camera=camera,
        indices=[r.index for r in kept],
        load_frame=make_reader({r.index: r for r in kept}),
        has_depth=has_depth,
        has_poses=has_poses,
        has_mesh=(root / "mesh.ply").is_file(),
        skipped=skipped,
        gt_world_T_cam_44={r.index: r.world_T_cam_44 for r in kept if r.world_T_cam_44 is not None},
        timestamps={r.index: r.timestamp for r in kept},
        capture=capture,
    )


def without_damaged_images(sequence: Sequence, image_paths: Callable[[int], list[Path]]) -> Sequence:
    """`sequence` without the frames one of whose `image_paths(index)` is damaged
    (`image_file_damage`); they are skipped as `Sequence.skip_unreadable` says (an error
    when they are too many)."""
    damaged = {}
    for index in sequence.indices:
        for path in image_paths(index):
            damage = image_file_damage(path)
            if damage:
                damaged[index] = f"cannot read {path}: {damage}"
                break
    if not damaged:
        return sequence
    readable = replace(
        sequence,
        indices=[i for i in sequence.indices if i not in damaged],
        skipped=dict(sequence.skipped),
        unreadable=dict(sequence.unreadable),
        gt_world_T_cam_44={i: pose for i, pose in sequence.gt_world_T_cam_44.items() if i not in damaged},
    )
    readable.skip_unreadable(damaged)
    return readable


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_START, _JPEG_END, _JPEG_START_OF_SCAN = b"\xff\xd8", b"\xff\xd9", 0xDA
_JPEG_MARKERS_WITHOUT_LENGTH = {0x01, *range(0xD0, 0xD8)}


def image_file_damage(path: Path) -> str:
    """Why the PNG or JPEG file at `path` cannot be decoded whole, found from its structure
    without decoding it; "" when it looks sound.

    Finds files that cannot be read, are empty or are neither PNG nor JPEG, and files cut
    short: a JPEG whose end-of-image marker does not follow its image data (a decoder
    fills the missing rows with grey), a PNG that ends before its IEND chunk or whose
    critical chunks fail their CRC (a decoder refuses it). Data after the image (a motion
    photo's video) is allowed.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if not data:
        return "the file is empty"
    if data.startswith(PNG_SIGNATURE):
        return _png_damage(data)
    if data.startswith(_JPEG_START):
        return _jpeg_damage(data)
    return "not a PNG or JPEG image"


def _png_damage(data: bytes) -> str:
    """Why PNG `data` is cut short or damaged, walking its chunks to IEND; "" when sound."""
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        end = offset + 12 + length
        name = kind.decode("latin-1")
        if not kind.isalpha():
            return f"damaged: no PNG chunk at byte {offset}"
        if end > len(data):
            return f"truncated: the file ends inside its {name} chunk"
        critical = not kind[0] & 0x20
        if critical and zlib.crc32(data[offset + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            return f"damaged: the checksum of its {name} chunk does not match"
        if kind == b"IEND":
            return ""
        offset = end
    return "truncated: the file ends before its IEND chunk"


def _jpeg_damage(data: bytes) -> str:
    """Why JPEG `data` is cut short or damaged, walking its header segments to the first
    scan and looking for the end-of-image marker after it; "" when sound."""
    offset = len(_JPEG_START)
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return f"damaged: no JPEG marker at byte {offset} of its header"
        marker = data[offset + 1]
        if marker == 0xFF or marker in _JPEG_MARKERS_WITHOUT_LENGTH:
            offset += 1 if marker == 0xFF else 2
            continue
        if data[offset : offset + 2] == _JPEG_END:
            return "damaged: the image ends before its data"
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if marker == _JPEG_START_OF_SCAN:
            if data.find(_JPEG_END, offset + 2 + length) < 0:
                return "truncated: no end-of-image marker after the image data"
            return ""
        offset += 2 + length
    return "truncated: the file ends inside its header"
