"""ScanNet `.sens` files read directly, in the binary layout of ScanNet's SensReader.

Layout (little-endian, no padding):

    header  uint32 version (4) | uint64 n, n bytes sensor name |
            float32[16] colour intrinsics, colour extrinsics, depth intrinsics, depth
            extrinsics (4x4 row-major each) | int32 colour compression (0 raw, 1 png,
            2 jpeg) | int32 depth compression (0 raw uint16, 1 zlib uint16) |
            uint32 colour width, colour height, depth width, depth height |
            float32 depth shift (raw units per metre) | uint64 frame count
    frame   float32[16] camera-to-world | uint64 colour, depth timestamps (microseconds) |
            uint64 colour bytes, depth bytes | colour data | depth data

Opening a file reads only the per-frame headers (seeking past the images) to index where
every frame lies; frames are decoded on access. Frames come out as the ScanNet export
loader gives them: colour resized to the depth resolution with K scaled, depth registered
into that camera. Frames with an invalid pose (ScanNet marks lost tracking with -inf), and
frames a truncated or damaged file cuts off, are skipped and listed in `Sequence.skipped`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from mvs.io.frames import DepthFormat, Registration, assemble_sequence
from mvs.io.intrinsics import Calibration
from mvs.types import Camera, Capture, Frame, Sequence

SENS_VERSION = 4
COLOUR_RAW, COLOUR_PNG, COLOUR_JPEG = 0, 1, 2
DEPTH_RAW, DEPTH_ZLIB = 0, 1
_HEADER_AFTER_NAME = struct.Struct("<64f2i4IfQ")
_FRAME_HEADER = struct.Struct("<16f4Q")
_COLOUR_SIGNATURES = {COLOUR_JPEG: b"\xff\xd8", COLOUR_PNG: b"\x89P"}
MAX_NAME_BYTES = 4096
MAX_FRAMES = 10_000_000
"""More frames than any capture has (ScanNet scenes have up to ~10^4): a damaged header."""


@dataclass(frozen=True)
class SensHeader:
    """The file header: cameras (K as 3x3, pixels), image formats and frame count."""

    sensor_name: str
    colour_camera: Camera
    depth_camera: Camera
    colour_compression: int
    depth_compression: int
    depth_shift: float
    frame_count: int
    header_bytes: int


@dataclass(frozen=True)
class SensFrameRecord:
    """Where one frame's images lie in the file (byte offsets and sizes), and its pose."""

    index: int
    timestamp: float
    world_T_cam_44: np.ndarray
    pose_source: str
    colour_offset: int
    colour_bytes: int
    depth_offset: int
    depth_bytes: int


def read_sens_header(file: BinaryIO, path: Path) -> SensHeader:
    """The header at the start of `file`; raises ValueError naming `path` when malformed."""
    version = _unpack(file, path, struct.Struct("<IQ"), "header")
    if version[0] != SENS_VERSION:
        raise ValueError(f"{path}: unsupported .sens version {version[0]} (expected {SENS_VERSION})")
    if version[1] > MAX_NAME_BYTES:
        raise ValueError(f"{path}: the header declares a {version[1]}-byte sensor name; the file is damaged")
    name_bytes = file.read(version[1])
    values = _unpack(file, path, _HEADER_AFTER_NAME, "header")
    matrices_444 = np.array(values[:64], dtype=np.float64).reshape(4, 4, 4)
    colour_compression, depth_compression = values[64:66]
    colour_w, colour_h, depth_w, depth_h = values[66:70]
    depth_shift, frame_count = values[70:72]
    if colour_compression not in (COLOUR_RAW, COLOUR_PNG, COLOUR_JPEG):
        raise ValueError(f"{path}: unsupported colour compression type {colour_compression} (0 raw, 1 png, 2 jpeg)")
    if depth_compression not in (DEPTH_RAW, DEPTH_ZLIB):
        raise ValueError(f"{path}: unsupported depth compression type {depth_compression} (0 raw, 1 zlib)")
    if frame_count > MAX_FRAMES:
        raise ValueError(f"{path}: the header declares {frame_count} frames; the file is damaged")
    if min(colour_w, colour_h, depth_w, depth_h) == 0 or not depth_shift > 0:
        raise ValueError(
            f"{path}: expected positive image sizes and depth shift, got colour {colour_w}x{colour_h}, "
            f"depth {depth_w}x{depth_h}, depth shift {depth_shift}"
        )
    return SensHeader(
        sensor_name=name_bytes.decode("utf-8", errors="replace"),
        colour_camera=Camera(matrices_444[0, :3, :3], colour_w, colour_h),
        depth_camera=Camera(matrices_444[2, :3, :3], depth_w, depth_h),
        colour_compression=colour_compression,
        depth_compression=depth_compression,
        depth_shift=depth_shift,
        frame_count=frame_count,
        header_bytes=file.tell(),
    )


def index_sens_frames(path: Path) -> tuple[SensHeader, list[SensFrameRecord], dict[int, str]]:
    """The header, a record per readable frame, and the unreadable frames with the reason.

    One pass over the per-frame headers, seeking past the image data. A frame is unreadable
    when the file ends inside it (every later frame is then missing too), or when its
    colour or depth data is empty or does not start like the header says it is compressed.
    """
    file_size = path.stat().st_size
    records: list[SensFrameRecord] = []
    unreadable: dict[int, str] = {}
    colour_timestamps_us: list[int] = []
    with open(path, "rb", buffering=0) as file:
        header = read_sens_header(file, path)
        offset = header.header_bytes
        for index in range(header.frame_count):
            file.seek(offset)
            data = file.read(_FRAME_HEADER.size)
            if len(data) < _FRAME_HEADER.size:
                unreadable.update(_cut_off(path, file_size, index, header.frame_count))
                break
            values = _FRAME_HEADER.unpack(data)
            colour_timestamp_us, _, colour_bytes, depth_bytes = values[16:]
            colour_offset = offset + _FRAME_HEADER.size
            depth_offset = colour_offset + colour_bytes
            offset = depth_offset + depth_bytes
            if offset > file_size:
                unreadable.update(_cut_off(path, file_size, index, header.frame_count))
                break
            damage = _damage(file, header, colour_offset, colour_bytes, depth_offset, depth_bytes)
            if damage:
                unreadable[index] = f"damaged in {path}: {damage}"
                continue
            world_T_cam_44 = np.array(values[:16], dtype=np.float64).reshape(4, 4)
            records.append(SensFrameRecord(
                index, float(index), world_T_cam_44, f"{path} frame {index}",
                colour_offset, colour_bytes, depth_offset, depth_bytes,
            ))
            colour_timestamps_us.append(colour_timestamp_us)
    if colour_timestamps_us and min(colour_timestamps_us) > 0:
        records = [replace(r, timestamp=t_us * 1e-6) for r, t_us in zip(records, colour_timestamps_us)]
    return header, records, unreadable


def open_sens(path: Path, intrinsics: Calibration | None) -> Sequence:
    """A lazy Sequence over the frames of the `.sens` file at `path`.

    The working camera is the colour camera scaled to the depth resolution (as for ScanNet
    exports); `intrinsics` replaces the colour intrinsics of the header. Timestamps are
    the colour timestamps in seconds when every frame has one, else the frame index.
    """
    header, records, unreadable = index_sens_frames(path)
    colour_size_wh = (header.colour_camera.width, header.colour_camera.height)
    stored_camera = header.colour_camera if intrinsics is None else intrinsics.camera(*colour_size_wh)
    camera = stored_camera.scaled(header.depth_camera.width, header.depth_camera.height)
    depth_format = DepthFormat(header.depth_camera, 1.0 / header.depth_shift)
    registration = Registration(camera, depth_format)
    capture = Capture(depth_metres_per_unit=depth_format.metres_per_unit,
                      depth_registered=depth_format.stored_in(camera))
    return assemble_sequence(
        path, "sens", camera, records,
        lambda kept: SensFrameReader(path, header, registration, kept),
        has_depth=True, has_poses=True, unreadable=unreadable, capture=capture,
    )


@dataclass(frozen=True)
class SensFrameReader:
    """Decodes frames of a `.sens` file by dataset index (picklable, for worker processes)."""

    path: Path
    header: SensHeader
    registration: Registration
    records_by_index: dict[int, SensFrameRecord]

    def __call__(self, index: int) -> Frame:
        record = self.records_by_index.get(index)
        if record is None:
            raise ValueError(f"{self.path}: no frame with dataset index {index}")
        with open(self.path, "rb", buffering=0) as file:
            file.seek(record.colour_offset)
            colour_data = file.read(record.colour_bytes)
            depth_data = file.read(record.depth_bytes)
        if len(depth_data) != record.depth_bytes:
            raise ValueError(f"{self.path}: frame {index}: the file ends inside the frame (changed since it was opened)")
        image_hw3 = self.registration.colour_hw3(self._colour_hw3(index, colour_data))
        depth_hw = self.registration.depth_hw(self._depth_raw_hw(index, depth_data))
        return Frame(index, record.timestamp, image_hw3, depth_hw, record.world_T_cam_44.copy())

    def _colour_hw3(self, index: int, data: bytes) -> np.ndarray:
        """(H, W, 3) uint8 RGB of the colour data, of the header's colour size."""
        camera = self.header.colour_camera
        if self.header.colour_compression == COLOUR_RAW:
            image_hw3 = np.frombuffer(data, np.uint8)
            expected = camera.height * camera.width * 3
            if image_hw3.size != expected:
                raise ValueError(f"{self.path}: frame {index}: expected {expected} raw colour bytes, got {image_hw3.size}")
            return image_hw3.reshape(camera.height, camera.width, 3)
        image_hw3 = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
        if image_hw3 is None:
            raise ValueError(f"{self.path}: frame {index}: cannot decode the colour image")
        if image_hw3.shape[:2] != (camera.height, camera.width):
            raise ValueError(
                f"{self.path}: frame {index}: colour image is {image_hw3.shape[1]}x{image_hw3.shape[0]}, "
                f"the header says {camera.width}x{camera.height}"
            )
        return image_hw3

    def _depth_raw_hw(self, index: int, data: bytes) -> np.ndarray:
        """(H, W) uint16 raw depth of the header's depth size."""
        if self.header.depth_compression == DEPTH_ZLIB:
            try:
                data = zlib.decompress(data)
            except zlib.error as error:
                raise ValueError(f"{self.path}: frame {index}: cannot decompress the depth image ({error})") from None
        camera = self.header.depth_camera
        expected = camera.height * camera.width * 2
        if len(data) != expected:
            raise ValueError(f"{self.path}: frame {index}: expected {expected} bytes of uint16 depth, got {len(data)}")
        return np.frombuffer(data, "<u2").reshape(camera.height, camera.width)


def _unpack(file: BinaryIO, path: Path, layout: struct.Struct, what: str) -> tuple:
    data = file.read(layout.size)
    if len(data) < layout.size:
        raise ValueError(f"{path}: not a ScanNet .sens file (the file ends inside the {what})")
    return layout.unpack(data)


def _cut_off(path: Path, file_size: int, index: int, frame_count: int) -> dict[int, str]:
    """Skip reasons of frame `index` onwards, which a truncated file cuts off."""
    reason = f"truncated: {path} ends at byte {file_size} inside frame {index} of {frame_count}"
    return {i: reason for i in range(index, frame_count)}


def _damage(
    file: BinaryIO, header: SensHeader, colour_offset: int, colour_bytes: int, depth_offset: int, depth_bytes: int
) -> str:
    """Why a frame's data cannot be decoded, from its sizes and first bytes; "" when it looks sound."""
    if colour_bytes == 0 or depth_bytes == 0:
        return f"empty {'colour' if colour_bytes == 0 else 'depth'} data"
    signature = _COLOUR_SIGNATURES.get(header.colour_compression)
    if signature is not None:
        file.seek(colour_offset)
        if file.read(len(signature)) != signature:
            return "colour data is not a JPEG or PNG image as the header says"
    if header.depth_compression == DEPTH_ZLIB:
        file.seek(depth_offset)
        first_2 = file.read(2)
        if len(first_2) < 2 or first_2[0] & 0x0F != 8 or int.from_bytes(first_2, "big") % 31 != 0:
            return "depth data is not a zlib stream as the header says"
    return ""

