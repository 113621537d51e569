"""Depth metrics against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mvs.depth_metrics import DepthBiasAccumulator, DepthMetricsAccumulator, depth_metrics


def ground_truth_hw() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.5, 8.0, (30, 40))


def test_ten_percent_too_far_everywhere() -> None:
    gt_hw = ground_truth_hw()
    metrics = depth_metrics(1.1 * gt_hw, gt_hw)
    assert metrics.abs_rel == pytest.approx(0.1, abs=1e-12)
    assert metrics.sq_rel == pytest.approx(0.01 * gt_hw.mean(), rel=1e-9)
    assert metrics.rmse == pytest.approx(0.1 * math.sqrt(np.mean(gt_hw**2)), rel=1e-9)
    assert metrics.rmse_log == pytest.approx(math.log(1.1), rel=1e-9)
    assert metrics.silog == pytest.approx(0.0, abs=1e-6)
    assert (metrics.delta1, metrics.delta2, metrics.delta3) == (1.0, 1.0, 1.0)
    assert metrics.completeness == 1.0
    assert metrics.num_pixels == gt_hw.size


def test_deltas_count_ratios_below_powers_of_1_25() -> None:
    gt_hw = np.ones((1, 4))
    pred_hw = np.array([[1.2, 1.5, 1.9, 2.5]])  # ratios below 1.25, 1.5625, 1.953125, none
    metrics = depth_metrics(pred_hw, gt_hw)
    assert metrics.delta1 == pytest.approx(0.25)
    assert metrics.delta2 == pytest.approx(0.5)
    assert metrics.delta3 == pytest.approx(0.75)
    log_e = np.log(pred_hw)
    assert metrics.silog == pytest.approx(math.sqrt(np.mean(log_e**2) - np.mean(log_e) ** 2), rel=1e-9)


def test_completeness_and_ground_truth_range() -> None:
    gt_hw = ground_truth_hw()
    gt_hw[0] = 0.0  # invalid
    gt_hw[1] = 12.0  # beyond 10 m: not counted
    pred_hw = gt_hw.copy()
    pred_hw[:, :20] = 0.0  # half the columns get no prediction
    metrics = depth_metrics(pred_hw, gt_hw)
    valid = 28 * 40
    assert metrics.num_pixels == 28 * 20
    assert metrics.completeness == pytest.approx(28 * 20 / valid)
    assert metrics.abs_rel == 0.0


def test_accumulator_pools_pixels_over_frames() -> None:
    gt_hw = ground_truth_hw()
    pred_a_hw = gt_hw * 1.2
    pred_b_hw = gt_hw * 0.9
    pred_b_hw[:10] = 0.0
    accumulator = DepthMetricsAccumulator()
    accumulator.add(pred_a_hw, gt_hw)
    accumulator.add(pred_b_hw, gt_hw)
    pooled = accumulator.result()
    together = depth_metrics(np.concatenate([pred_a_hw, pred_b_hw]), np.concatenate([gt_hw, gt_hw]))
    assert pooled.abs_rel == pytest.approx(together.abs_rel, rel=1e-12)
    assert pooled.abs_rel == pytest.approx((0.2 * 1200 + 0.1 * 800) / 2000, rel=1e-12)
    assert pooled.silog == pytest.approx(together.silog, rel=1e-9)
    assert pooled.completeness == pytest.approx(2000 / 2400)


def test_no_match_and_bad_input() -> None:
    metrics = depth_metrics(np.zeros((3, 3)), np.ones((3, 3)))
    assert metrics.completeness == 0.0 and metrics.num_pixels == 0 and math.isnan(metrics.abs_rel)
    with pytest.raises(ValueError, match="one \\(H, W\\) shape"):
        depth_metrics(np.ones((3, 3)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="max_depth"):
        DepthMetricsAccumulator(max_depth=0.0)


def test_depth_bias_gives_a_scale_as_one_ratio_and_an_offset_as_ratios_falling_with_depth() -> None:
    """Ground truth in three bands (0.75, 2 and 3 m) and two outside the ranges (0.3, 12 m):
    a depth 2 % too far is 1.02 in every range with pixels; 3 cm too far is 1.04, 1.015 and
    1.01; both to the histogram's 0.1 %."""
    gt_hw = np.repeat(np.array([0.3, 0.75, 2.0, 3.0, 12.0]), 4)[None].repeat(3, axis=0)
    scaled = DepthBiasAccumulator()
    scaled.add(1.02 * gt_hw, gt_hw)
    bias = scaled.result()
    assert bias.ranges_m == [(0.5, 1.0), (1.0, 1.5), (1.5, 2.5), (2.5, 4.0), (4.0, 10.0)]
    assert bias.pixels == [12, 0, 12, 12, 0]
    assert bias.median_ratio[1] is None and bias.median_ratio[4] is None
    for k in (0, 2, 3):
        assert bias.median_ratio[k] == pytest.approx(1.02, rel=1e-3)
    offset = DepthBiasAccumulator()
    offset.add(gt_hw + 0.03, gt_hw)
    offset.add(np.zeros_like(gt_hw), gt_hw)  # a frame with no prediction adds nothing
    ratios = offset.result().median_ratio
    assert [ratios[0], ratios[2], ratios[3]] == pytest.approx([1.04, 1.015, 1.01], rel=1e-3)
    assert "0.5-1 m 1.040" in offset.result().summary()
    with pytest.raises(ValueError, match="increasing positive range edges"):
        DepthBiasAccumulator((1.0, 0.5))
