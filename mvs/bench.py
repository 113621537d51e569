"""`python -m mvs.bench SUITE`: speed benchmarks that print Markdown tables.

Suites: `depth` (milliseconds per keyframe of the plane sweep and each regressor at 320x240
input, 64 hypotheses, 2 sources), `fusion` (TSDF integration frames per second, 640x480,
2 cm voxels), `inputs` (frames per second out of the folder, `.sens` and video readers) and
`costvolume` (the grid_sample reference against the fused CPU kernels, with the attained
share of the measured float32 peak). They run on ../shared/data/7scenes-redkitchen when
present, else on the synthetic room `synthetic/room0`. Paste the tables into BENCHMARKS.md
with the machine line.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from fusion.tsdf import TSDFVolume
from mvs.bench_costvolume import bench_costvolume
from mvs.bench_inputs import bench_inputs
from mvs.config import DepthConfig, FusionConfig
from mvs.costvolume import inverse_depth_hypotheses_d, same_camera_sweep, zncc_cost_volume
from mvs.depth import ClassicDepthEstimator, LearnedDepthEstimator, grey_b1hw, prepare_inputs
from mvs.geometry import invert_pose_44
from mvs.regressors import classic_regress
from mvs.sequences import open_sequence
from mvs.synth import ensure_room
from mvs.types import Frame, Sequence

SHARED_KITCHEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen"


def bench_sequence() -> Sequence:
    """The real kitchen when it is beside the project, else the default synthetic room."""
    if SHARED_KITCHEN.is_dir():
        return open_sequence(str(SHARED_KITCHEN))
    return open_sequence(str(ensure_room("synthetic/room0", Path("sequences"))))


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of `run()` in milliseconds, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def machine_line() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}")


def posed(sequence: Sequence, position: int) -> Frame:
    frame = sequence[position]
    return replace(frame, world_T_cam_44=sequence.gt_world_T_cam_44[frame.index])


def bench_depth(sequence: Sequence, repeats: int) -> str:
    """Per-keyframe milliseconds of the classic sweep, its regressor and the learned model."""
    config = DepthConfig()
    reference, sources = posed(sequence, 20), [posed(sequence, 10), posed(sequence, 30)]
    camera = sequence.camera
    rows = []
    classic = ClassicDepthEstimator(config, "cpu")
    width, height = config.working_width // config.classic_downscale, config.working_height // config.classic_downscale
    inputs = prepare_inputs(reference, sources, camera, width, height, torch.device("cpu"))
    depth_d = inverse_depth_hypotheses_d(config.near, config.far, config.num_hypotheses, torch.device("cpu"))

    def cost_volume():
        sweep = same_camera_sweep(inputs.K_b33, inputs.src_T_ref_bn44, depth_d, height, width)
        return zncc_cost_volume(grey_b1hw(inputs.ref_image_b3hw), grey_b1hw(inputs.src_images_bn3hw), sweep,
                                config.zncc_window)

    with torch.no_grad():
        volume = cost_volume()
        rows.append((f"classic: ZNCC cost volume at {width}x{height}", median_ms(cost_volume, repeats)))
        rows.append(("classic: winner-take-all regressor + filtering",
                     median_ms(lambda: classic_regress(volume, inputs.ref_image_b3hw, config.classic), repeats)))
    rows.append(("classic: whole keyframe (resize, sweep, regress, upsample)",
                 median_ms(lambda: classic.estimate(reference, sources, camera), repeats)))
    learned = LearnedDepthEstimator(config, "cpu")
    rows.append(("learned: whole keyframe (features, cost volume, U-Net, upsample)",
                 median_ms(lambda: learned.estimate(reference, sources, camera), repeats)))
    table = ["| stage (320x240 input, 64 hypotheses, 2 sources) | ms per keyframe |", "| --- | ---: |"]
    table += [f"| {name} | {ms:.0f} |" for name, ms in rows]
    return "\n".join(table)


def bench_fusion(sequence: Sequence, frames: int) -> str:
    """TSDF integration speed over `frames` consecutive frames (frame loading excluded)."""
    loaded = [sequence[p] for p in range(min(frames, len(sequence)))]
    volume = TSDFVolume(FusionConfig())
    start = time.perf_counter()
    for frame in loaded:
        cam_T_world_44 = invert_pose_44(sequence.gt_world_T_cam_44[frame.index])
        volume.integrate(frame.depth_hw, frame.image_hw3, sequence.camera, cam_T_world_44)
    seconds = time.perf_counter() - start
    return "\n".join([
        f"| TSDF integration ({sequence.camera.width}x{sequence.camera.height}, 2 cm voxels) | value |",
        "| --- | ---: |",
        f"| frames | {len(loaded)} |",
        f"| ms per frame | {seconds / len(loaded) * 1000:.1f} |",
        f"| frames per second | {len(loaded) / seconds:.0f} |",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvs.bench", description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=["depth", "fusion", "inputs", "costvolume", "all"])
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per depth stage and cost volume")
    parser.add_argument("--frames", type=int, default=200, help="frames of the fusion and inputs suites")
    parser.add_argument("--video-frames", type=int, default=1000, help="frames of the inputs suite's video")
    args = parser.parse_args(argv)
    sequence = bench_sequence()
    print(f"machine: {machine_line()}")
    print(f"data: {sequence.root}\n")
    if args.suite in ("depth", "all"):
        print(bench_depth(sequence, args.repeats) + "\n")
    if args.suite in ("fusion", "all"):
        print(bench_fusion(sequence, args.frames) + "\n")
    if args.suite in ("inputs", "all"):
        print(bench_inputs(sequence, args.frames, args.video_frames) + "\n")
    if args.suite in ("costvolume", "all"):
        reference, sources = posed(sequence, 20), [posed(sequence, 10), posed(sequence, 30)]
        print(bench_costvolume(reference, sources, sequence.camera, args.repeats) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
