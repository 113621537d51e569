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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from fusion.tsdf import TSDFVolume
from mvs.bench_inputs import bench_inputs
from mvs.config import DepthConfig, FusionConfig
from mvs.costvolume import (
    CostVolume,
    PlaneSweep,
    box_filter_bchw,
    feature_cost_volume,
    feature_cost_volume_reference,
    inverse_depth_hypotheses_d,
    same_camera_sweep,
    zncc_cost_volume,
    zncc_cost_volume_reference,
)
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


@dataclass
class CostVolumeCase:
    """One cost volume to time: `window` None is the feature cost over `channels` random
    feature channels, else the ZNCC cost of grey images with that window."""

    name: str
    width: int
    height: int
    channels: int = 1
    window: int | None = None

    def gflop(self, planes: int, sources: int) -> float:
        """Nominal work in GFLOP, per hypothesis, pixel and source: bilinear sampling
        (4 multiplies, 3 adds per channel), then the dot product (2 per channel) or, for
        ZNCC, the squared and cross products (2), separable box sums of three images
        (3 x 2 x window adds) and the moments and correlation (9)."""
        per_sample = 9 * self.channels if self.window is None else 7 + 2 + 6 * self.window + 9
        return per_sample * planes * sources * self.width * self.height / 1e9


COST_VOLUME_CASES = [
    CostVolumeCase("feature cost, 32 channels, 320x240", 320, 240, channels=32),
    CostVolumeCase("feature cost, 16 channels, 80x60 (learned)", 80, 60, channels=16),
    CostVolumeCase("ZNCC 3x3, 80x60 (learned)", 80, 60, window=3),
    CostVolumeCase("ZNCC 5x5, 160x120 (classic)", 160, 120, window=5),
]


def paired_median_ms(run_a: Callable[[], object], run_b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall times (ms) of `run_a()` and `run_b()`, called alternately after one
    warm-up call each, so that both see the same machine load."""
    run_a(), run_b()
    times_a, times_b = [], []
    for _ in range(repeats):
        for run, times in ((run_a, times_a), (run_b, times_b)):
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times_a), statistics.median(times_b)


def peak_gflops(repeats: int, size: int = 2048) -> float:
    """Measured float32 compute peak: GFLOP/s of a size x size matrix product."""
    a_nn, b_nn = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / 1e9 / (median_ms(lambda: a_nn @ b_nn, repeats) / 1000.0)


def copy_gbps(repeats: int, megabytes: int = 256) -> float:
    """Measured memory bandwidth: GB/s read plus written by copying `megabytes`."""
    src_n = torch.ones(megabytes * 2**18)
    dst_n = torch.empty_like(src_n)
    return 2 * src_n.numel() * 4 / 1e9 / (median_ms(lambda: dst_n.copy_(src_n), repeats) / 1000.0)


def bench_costvolume(sequence: Sequence, repeats: int) -> str:
    """Reference (grid_sample) against fused cost volumes, 64 hypotheses, 2 sources."""
    config = DepthConfig()
    reference, sources = posed(sequence, 20), [posed(sequence, 10), posed(sequence, 30)]
    depth_d = inverse_depth_hypotheses_d(config.near, config.far, config.num_hypotheses)
    peak = peak_gflops(repeats)
    lines = [
        f"Measured peak: {peak:.0f} GFLOP/s (float32 2048x2048 matrix product), memory copy "
        f"{copy_gbps(repeats):.1f} GB/s (read + write); median of {repeats} alternating runs each.",
        "",
        "| cost volume (64 hypotheses, 2 sources) | grid_sample ms | fused ms | speed-up | GFLOP | fused GFLOP/s "
        "| share of peak |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    generator = torch.Generator().manual_seed(0)
    for case in COST_VOLUME_CASES:
        inputs = prepare_inputs(reference, sources, sequence.camera, case.width, case.height, torch.device("cpu"))

        def sweep() -> PlaneSweep:
            return same_camera_sweep(inputs.K_b33, inputs.src_T_ref_bn44, depth_d, case.height, case.width)

        if case.window is None:
            ref_bchw = torch.randn(1, case.channels, case.height, case.width, generator=generator)
            src_bnchw = torch.randn(1, len(sources), case.channels, case.height, case.width, generator=generator)

            def naive() -> CostVolume:
                ref_unit_bchw, src_unit_bnchw = F.normalize(ref_bchw, dim=1), F.normalize(src_bnchw, dim=2)
                return feature_cost_volume_reference(ref_unit_bchw, src_unit_bnchw, sweep())

            def fused() -> CostVolume:
                return feature_cost_volume(ref_bchw, src_bnchw, sweep())
        else:
            ref_b1hw, src_bn1hw, window = grey_b1hw(inputs.ref_image_b3hw), grey_b1hw(inputs.src_images_bn3hw), case.window

            def naive() -> CostVolume:
                mean_b1hw = box_filter_bchw(ref_b1hw, window)
                var_b1hw = (box_filter_bchw(ref_b1hw**2, window) - mean_b1hw**2).clamp(min=0.0)
                return zncc_cost_volume_reference(ref_b1hw, mean_b1hw, var_b1hw, src_bn1hw, sweep(), window, 1e-4)

            def fused() -> CostVolume:
                return zncc_cost_volume(ref_b1hw, src_bn1hw, sweep(), window)

        with torch.no_grad():
            naive_ms, fused_ms = paired_median_ms(naive, fused, repeats)
        gflop = case.gflop(len(depth_d), len(sources))
        attained = gflop / (fused_ms / 1000.0)
        lines.append(f"| {case.name} | {naive_ms:.0f} | {fused_ms:.1f} | {naive_ms / fused_ms:.1f}x | {gflop:.2f} "
                     f"| {attained:.1f} | {attained / peak:.1%} |")
    return "\n".join(lines)


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
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per depth stage")
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
        print(bench_costvolume(sequence, args.repeats) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
