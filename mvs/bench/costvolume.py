"""The `costvolume` suite of `python -m mvs.bench`: the plane-sweep cost volumes of
`mvs.costvolume` by the grid_sample reference path and by the fused CPU kernels, timed
alternately in this process, against the measured float32 peak of the machine.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from mvs.bench.depth import posed
from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext
from mvs.config import DepthConfig
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
from mvs.depth import grey_b1hw, prepare_inputs
from mvs.io.layout import open_sequence

REPEATS = 10


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


def alternating_median_ms(runs: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time (ms) of each of `runs`, called in turn `repeats` times after one
    warm-up call each, so that all see the same machine load."""
    for run in runs:
        run()
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, run_times in zip(runs, times):
            start = time.perf_counter()
            run()
            run_times.append((time.perf_counter() - start) * 1000.0)
    return [statistics.median(run_times) for run_times in times]


def peak_gflops(repeats: int, size: int = 2048) -> float:
    """Measured float32 compute peak: GFLOP/s of a size x size matrix product."""
    a_nn, b_nn = torch.randn(size, size), torch.randn(size, size)
    (ms,) = alternating_median_ms([lambda: a_nn @ b_nn], repeats)
    return 2 * size**3 / 1e9 / (ms / 1000.0)


def copy_gbps(repeats: int, megabytes: int = 256) -> float:
    """Measured memory bandwidth: GB/s read plus written by copying `megabytes`."""
    src_n = torch.ones(megabytes * 2**18)
    dst_n = torch.empty_like(src_n)
    (ms,) = alternating_median_ms([lambda: dst_n.copy_(src_n)], repeats)
    return 2 * src_n.numel() * 4 / 1e9 / (ms / 1000.0)


def run(context: BenchContext) -> tuple[list[Table], dict]:
    """Reference (grid_sample) against fused cost volumes on redkitchen frames 10, 20, 30 with
    ground-truth poses (20 the reference), 64 hypotheses, 2 sources."""
    sequence = open_sequence(context.kitchen)
    reference, sources, camera = posed(sequence, 20), [posed(sequence, 10), posed(sequence, 30)], sequence.camera
    config = DepthConfig()
    depth_d = inverse_depth_hypotheses_d(config.near, config.far, config.num_hypotheses)
    peak, bandwidth = peak_gflops(REPEATS), copy_gbps(REPEATS)
    table = Table(
        f"Cost volumes ({len(depth_d)} hypotheses, {len(sources)} sources): grid_sample reference against fused kernels",
        [],
        ["cost volume", "grid_sample ms", "fused ms", "speed-up", "GFLOP", "fused GFLOP/s", "share of peak"],
        "lrrrrrr",
        notes=f"Measured peak: {peak:.0f} GFLOP/s (float32 2048x2048 matrix product), memory copy {bandwidth:.1f} GB/s "
              f"(read + write); median of {REPEATS} alternating runs each, in the benchmark process.",
    )
    data = {"peak_gflops": peak, "copy_gbps": bandwidth, "cases": {}}
    generator = torch.Generator().manual_seed(0)
    for case in COST_VOLUME_CASES:
        print(f"  {case.name}", flush=True)
        inputs = prepare_inputs(reference, sources, camera, case.width, case.height, torch.device("cpu"))

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
            naive_ms, fused_ms = alternating_median_ms([naive, fused], REPEATS)
        gflop = case.gflop(len(depth_d), len(sources))
        attained = gflop / (fused_ms / 1000.0)
        table.add_row(case.name, fmt(naive_ms, 0), fmt(fused_ms, 1), f"{naive_ms / fused_ms:.1f}x", fmt(gflop, 2),
                      fmt(attained, 1), f"{attained / peak:.1%}")
        data["cases"][case.name] = {"grid_sample_ms": naive_ms, "fused_ms": fused_ms, "gflop": gflop}
    return [table], data
