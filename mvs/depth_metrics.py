"""Depth-map metrics of the evaluation protocol (AbsRel, SqRel, RMSE, ..., completeness).

A ground-truth pixel counts when its depth lies in (0, max_depth] metres (default 10 m).
Error metrics cover the ground-truth pixels that also received a prediction (> 0 m);
completeness is the share of ground-truth pixels that received one. `DepthBias` gives the
median ratio of predicted to ground-truth depth by the ground truth's depth: a scale error
shows as one ratio, an offset as ratios that fall with the depth.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class DepthMetrics:
    """Depth errors over matched pixels; lengths in metres.

    abs_rel = mean |p - g| / g; sq_rel = mean (p - g)^2 / g (metres); rmse (metres);
    rmse_log = sqrt(mean (log p - log g)^2); silog = sqrt(mean e^2 - (mean e)^2) with
    e = log p - log g (Eigen et al.'s scale-invariant error, natural log, not x100);
    delta_k = share of pixels with max(p/g, g/p) < 1.25^k; completeness = matched pixels /
    ground-truth pixels; num_pixels = matched pixels.
    """

    abs_rel: float
    sq_rel: float
    rmse: float
    rmse_log: float
    silog: float
    delta1: float
    delta2: float
    delta3: float
    completeness: float
    num_pixels: int

    def summary(self) -> str:
        """One line with every metric."""
        return " ".join(
            f"{f.name}={getattr(self, f.name)}" if f.name == "num_pixels" else f"{f.name}={getattr(self, f.name):.4f}"
            for f in fields(self)
        )


class DepthMetricsAccumulator:
    """Pools pixels over many frames: keeps sums of per-pixel terms, so every frame weighs
    by its number of pixels (sums of |p-g|/g, (p-g)^2/g, (p-g)^2, e, e^2, delta counts,
    matched and ground-truth pixel counts, with e = log p - log g)."""

    def __init__(self, max_depth: float = 10.0) -> None:
        if max_depth <= 0:
            raise ValueError(f"max_depth: expected > 0 metres, got {max_depth}")
        self.max_depth = max_depth
        self._sum_abs_rel = 0.0
        self._sum_sq_rel = 0.0
        self._sum_sq = 0.0
        self._sum_log = 0.0
        self._sum_log_sq = 0.0
        self._delta_counts = [0, 0, 0]
        self._num_matched = 0
        self._num_gt = 0

    def add(self, pred_hw: np.ndarray, gt_hw: np.ndarray) -> None:
        """Add one frame: predicted and ground-truth depth (H, W) in metres, 0 = none."""
        pred_hw = np.asarray(pred_hw, dtype=np.float64)
        gt_hw = np.asarray(gt_hw, dtype=np.float64)
        if pred_hw.shape != gt_hw.shape or pred_hw.ndim != 2:
            raise ValueError(
                f"expected prediction and ground truth of one (H, W) shape, got {pred_hw.shape} and {gt_hw.shape}"
            )
        gt_valid_hw = np.isfinite(gt_hw) & (gt_hw > 0) & (gt_hw <= self.max_depth)
        matched_hw = gt_valid_hw & np.isfinite(pred_hw) & (pred_hw > 0)
        p_n, g_n = pred_hw[matched_hw], gt_hw[matched_hw]
        difference_n = p_n - g_n
        log_n = np.log(p_n) - np.log(g_n)
        ratio_n = np.maximum(p_n / g_n, g_n / p_n)
        self._sum_abs_rel += float(np.sum(np.abs(difference_n) / g_n))
        self._sum_sq_rel += float(np.sum(difference_n**2 / g_n))
        self._sum_sq += float(np.sum(difference_n**2))
        self._sum_log += float(np.sum(log_n))
        self._sum_log_sq += float(np.sum(log_n**2))
        for k in range(3):
            self._delta_counts[k] += int(np.sum(ratio_n < 1.25 ** (k + 1)))
        self._num_matched += int(matched_hw.sum())
        self._num_gt += int(gt_valid_hw.sum())

    def result(self) -> DepthMetrics:
        """Metrics over every pixel added so far; NaN errors when no pixel matched."""
        n = self._num_matched
        completeness = n / self._num_gt if self._num_gt else float("nan")
        if n == 0:
            nan = float("nan")
            return DepthMetrics(nan, nan, nan, nan, nan, nan, nan, nan, completeness, 0)
        mean_log = self._sum_log / n
        mean_log_sq = self._sum_log_sq / n
        return DepthMetrics(
            abs_rel=self._sum_abs_rel / n,
            sq_rel=self._sum_sq_rel / n,
            rmse=float(np.sqrt(self._sum_sq / n)),
            rmse_log=float(np.sqrt(mean_log_sq)),
            silog=float(np.sqrt(max(mean_log_sq - mean_log**2, 0.0))),
            delta1=self._delta_counts[0] / n,
            delta2=self._delta_counts[1] / n,
            delta3=self._delta_counts[2] / n,
            completeness=completeness,
            num_pixels=n,
        )


def depth_metrics(pred_hw: np.ndarray, gt_hw: np.ndarray, max_depth: float = 10.0) -> DepthMetrics:
    """Metrics of one frame (see `DepthMetricsAccumulator` for several)."""
    accumulator = DepthMetricsAccumulator(max_depth)
    accumulator.add(pred_hw, gt_hw)
    return accumulator.result()


BIAS_EDGES_M = (0.5, 1.0, 1.5, 2.5, 4.0, 10.0)
"""Ranges of the ground-truth depth (metres) the depth bias is given for."""
LOG_RATIO_BIN = 1e-3
LOG_RATIO_LIMIT = 1.0


@dataclass
class DepthBias:
    """Median ratio of predicted to ground-truth depth (None without pixels) and the pixels
    counted, per range [low, high) of the ground-truth depth in metres: a systematic scale or
    offset shows as ratios away from 1 (an offset as ratios that change with the depth)."""

    ranges_m: list[tuple[float, float]]
    median_ratio: list[float | None]
    pixels: list[int]

    def summary(self) -> str:
        """The ranges with pixels and their median ratios, one line."""
        return ", ".join(
            f"{low:g}-{high:g} m {ratio:.3f}"
            for (low, high), ratio in zip(self.ranges_m, self.median_ratio)
            if ratio is not None
        )


class DepthBiasAccumulator:
    """Pools the log ratios log p - log g of matched pixels (as `DepthMetricsAccumulator`
    matches them) over many frames into a histogram per ground-truth depth range
    (`BIAS_EDGES_M`), of bins LOG_RATIO_BIN wide within +-LOG_RATIO_LIMIT (ratios beyond count
    in the end bins): medians to 0.1 %, in bounded memory."""

    def __init__(self, edges_m: tuple[float, ...] = BIAS_EDGES_M) -> None:
        if len(edges_m) < 2 or any(b <= a for a, b in zip(edges_m, edges_m[1:])) or edges_m[0] <= 0:
            raise ValueError(f"depth bias: expected increasing positive range edges (metres), got {edges_m}")
        self.edges_m = edges_m
        self._bins = int(round(2 * LOG_RATIO_LIMIT / LOG_RATIO_BIN))
        self._counts_rb = np.zeros((len(edges_m) - 1, self._bins), dtype=np.int64)

    def add(self, pred_hw: np.ndarray, gt_hw: np.ndarray) -> None:
        """Add one frame: predicted and ground-truth depth (H, W) in metres, 0 = none."""
        pred_hw = np.asarray(pred_hw, dtype=np.float64)
        gt_hw = np.asarray(gt_hw, dtype=np.float64)
        matched_hw = np.isfinite(gt_hw) & (gt_hw > 0) & np.isfinite(pred_hw) & (pred_hw > 0)
        g_n, p_n = gt_hw[matched_hw], pred_hw[matched_hw]
        range_n = np.searchsorted(self.edges_m, g_n, side="right") - 1
        inside_n = (range_n >= 0) & (range_n < len(self.edges_m) - 1)
        bin_n = np.floor((np.log(p_n[inside_n]) - np.log(g_n[inside_n]) + LOG_RATIO_LIMIT) / LOG_RATIO_BIN)
        bin_n = np.clip(bin_n, 0, self._bins - 1).astype(np.int64)
        np.add.at(self._counts_rb, (range_n[inside_n], bin_n), 1)

    def result(self) -> DepthBias:
        """The median ratio per range over every pixel added so far (the centre of the
        histogram bin holding the median)."""
        ratios, pixels = [], []
        for counts_b in self._counts_rb:
            total = int(counts_b.sum())
            pixels.append(total)
            if total == 0:
                ratios.append(None)
                continue
            median_bin = int(np.searchsorted(np.cumsum(counts_b), (total + 1) / 2))
            ratios.append(float(np.exp((median_bin + 0.5) * LOG_RATIO_BIN - LOG_RATIO_LIMIT)))
        return DepthBias(list(zip(self.edges_m, self.edges_m[1:])), ratios, pixels)
