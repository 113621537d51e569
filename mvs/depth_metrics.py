"""Depth-map metrics of the evaluation protocol (AbsRel, SqRel, RMSE, ..., completeness).

A ground-truth pixel counts when its depth lies in (0, max_depth] metres (default 10 m).
Error metrics cover the ground-truth pixels that also received a prediction (> 0 m);
completeness is the share of ground-truth pixels that received one.
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
