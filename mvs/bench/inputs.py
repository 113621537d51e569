"""`inputs` suite: how fast frames come out of each reader.

The first FRAMES redkitchen frames are written once more as a ScanNet `.sens`
file (JPEG colour at quality 95, zlib depth) and as an MPEG-4 video, in a temporary folder;
then each input is opened and read in order, and the video also every third frame and
with a seek before every frame, all in this process, back to back. The video holds
VIDEO_FRAMES frames (the kitchen's, cycled).
"""

from __future__ import annotations

import resource
import struct
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext
from mvs.io.layout import open_sequence
from mvs.types import Sequence

VIDEO_FPS = 30.0
FRAMES = 300
VIDEO_FRAMES = 5000


def write_sens_file(path: Path, sequence: Sequence, count: int) -> Path:
    """The first `count` frames of `sequence` (with depth and poses) as a `.sens` file."""
    camera = sequence.camera
    K_44 = np.eye(4)
    K_44[:3, :3] = camera.K_33
    matrix = struct.Struct("<16f")
    name = b"bench"
    parts = [struct.pack("<IQ", 4, len(name)), name, matrix.pack(*K_44.ravel()), matrix.pack(*np.eye(4).ravel()),
             matrix.pack(*K_44.ravel()), matrix.pack(*np.eye(4).ravel()),
             struct.pack("<2i4IfQ", 2, 1, camera.width, camera.height, camera.width, camera.height, 1000.0, count)]
    with open(path, "wb") as file:
        file.write(b"".join(parts))
        for position in range(count):
            frame = sequence[position]
            colour = cv2.imencode(".jpg", frame.image_hw3[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            depth = zlib.compress(np.rint(frame.depth_hw * 1000).astype("<u2").tobytes())
            timestamp_us = int(frame.timestamp * 1e6) + 1
            file.write(matrix.pack(*frame.world_T_cam_44.ravel()))
            file.write(struct.pack("<4Q", timestamp_us, timestamp_us, len(colour), len(depth)))
            file.write(colour + depth)
    return path


def write_video_file(path: Path, sequence: Sequence, count: int) -> Path:
    """`count` frames cycling through `sequence` as an MPEG-4 part 2 video."""
    camera = sequence.camera
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (camera.width, camera.height))
    for position in range(count):
        writer.write(np.ascontiguousarray(sequence[position % len(sequence)].image_hw3[..., ::-1]))
    writer.release()
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(context: BenchContext) -> tuple[list[Table], dict]:
    """Open time and frames per second of each reader on the same frames."""
    sequence = open_sequence(context.kitchen)
    frames, video_frames = min(FRAMES, len(sequence)), VIDEO_FRAMES
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        sens_path = write_sens_file(Path(folder) / "bench.sens", sequence, frames)
        video_path = write_video_file(Path(folder) / "bench.mp4", sequence, video_frames)
        intrinsics = tuple(float(v) for v in (sequence.camera.fx, sequence.camera.fy,
                                                sequence.camera.cx, sequence.camera.cy))
        inputs = [
            (f"{sequence.layout} folder", lambda: open_sequence(str(sequence.root), frames=f"0:{frames}")),
            (".sens file", lambda: open_sequence(str(sens_path))),
            ("MPEG-4 video", lambda: open_sequence(str(video_path), intrinsics=intrinsics)),
        ]
        for label, open_input in inputs:
            start = time.perf_counter()
            opened = open_input()
            open_ms = (time.perf_counter() - start) * 1000.0
            rows.append((f"{label}, in order", len(opened), open_ms, *_read_rate(opened, opened.indices)))
        video = inputs[-1][1]()
        every_third = video.indices[::3]
        rows.append(("MPEG-4 video, every 3rd frame", len(every_third), float("nan"), *_read_rate(video, every_third)))
        seek_each = video.indices[: frames // 3][::-1]  # backwards: a seek before every frame
        rows.append(("MPEG-4 video, backwards (seek per frame)", len(seek_each), float("nan"),
                     *_read_rate(video, seek_each)))
    table = Table(
        f"Readers: the first {frames} redkitchen frames as a folder and a .sens file, {video_frames} as an MPEG-4 video",
        [],
        [f"input ({sequence.camera.width}x{sequence.camera.height})", "frames", "open (ms)", "frames/s",
         "peak RSS growth (MB)"],
        "lrrrr",
        notes="Read back in one process, back to back; a video read in order never seeks.",
    )
    for label, count, open_ms, rate, growth_mb in rows:
        table.add_row(label, str(count), "" if np.isnan(open_ms) else fmt(open_ms, 0), fmt(rate, 0), fmt(growth_mb, 0))
    return [table], {"rows": rows}


def _read_rate(sequence: Sequence, indices: list[int]) -> tuple[float, float]:
    """Frames per second reading `indices` in that order, and the growth of peak memory (MB)."""
    before_mb = peak_rss_mb()
    start = time.perf_counter()
    for index in indices:
        sequence.load_frame(index)
    seconds = time.perf_counter() - start
    return len(indices) / seconds, peak_rss_mb() - before_mb
