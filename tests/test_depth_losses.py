"""Depth losses against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from mvs.losses import LossConfig, depth_loss, gradient_matching_loss, silog_loss
from mvs.network import ModelOutput


def ground_truth_b1hw() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return 0.5 + 4.0 * torch.rand(2, 1, 16, 24, generator=generator)


def test_silog_ignores_a_global_scale_only_with_full_variance_focus() -> None:
    log_error_b1hw = torch.full((2, 1, 8, 8), math.log(1.2))
    mask_b1hw = torch.ones_like(log_error_b1hw)
    assert silog_loss(log_error_b1hw, mask_b1hw, variance_focus=1.0).item() == pytest.approx(0.0, abs=1e-3)
    assert silog_loss(log_error_b1hw, mask_b1hw, variance_focus=0.0).item() == pytest.approx(math.log(1.2), rel=1e-5)


def test_gradient_matching_of_a_step() -> None:
    error_b1hw = torch.zeros(1, 1, 8, 8)
    error_b1hw[..., 4:] = 1.0
    mask_b1hw = torch.ones_like(error_b1hw)
    # One scale: 8 of the 7 * 8 horizontal and 7 * 8 vertical pairs jump by 1.
    assert gradient_matching_loss(error_b1hw, mask_b1hw, 1).item() == pytest.approx(8 / 112)
    assert gradient_matching_loss(torch.full((1, 1, 8, 8), 0.3), mask_b1hw, 4).item() == 0.0
    # Pairs touching a masked pixel do not count.
    mask_b1hw[..., 4:] = 0.0
    assert gradient_matching_loss(error_b1hw, mask_b1hw, 1).item() == 0.0


def outputs_for(depth_b1hw: torch.Tensor) -> ModelOutput:
    """Every scale predicts exactly `depth_b1hw` (no resizing needed)."""
    inverse_b1hw = 1.0 / depth_b1hw
    return ModelOutput(inverse_depths_b1hw=[inverse_b1hw] * 4, confidence_b1hw=torch.full_like(depth_b1hw, 0.5))


def test_perfect_and_scaled_predictions() -> None:
    gt_b1hw = ground_truth_b1hw()
    config = LossConfig()
    perfect = depth_loss(outputs_for(gt_b1hw), gt_b1hw, config)
    assert perfect.inverse_l1 == pytest.approx(0.0, abs=1e-7)
    assert perfect.silog == pytest.approx(0.0, abs=1e-3)
    assert perfect.gradient == pytest.approx(0.0, abs=1e-6)
    assert perfect.confidence == pytest.approx(math.log(2), rel=1e-4)
    scaled = depth_loss(outputs_for(2.0 * gt_b1hw), gt_b1hw, config)
    assert scaled.inverse_l1 == pytest.approx((0.5 / gt_b1hw).mean().item(), rel=1e-5)
    expected_silog = math.sqrt((1 - config.silog_variance_focus) * math.log(2.0) ** 2)
    assert scaled.silog == pytest.approx(expected_silog, rel=1e-4)
    assert scaled.gradient == pytest.approx(0.0, abs=1e-5)


def test_invalid_ground_truth_is_ignored() -> None:
    gt_b1hw = ground_truth_b1hw()
    prediction_b1hw = gt_b1hw.clone()
    prediction_b1hw[..., :5] = 9.0  # wrong, but where the ground truth is missing
    gt_b1hw[..., :5] = 0.0
    terms = depth_loss(outputs_for(prediction_b1hw), gt_b1hw, LossConfig())
    assert terms.inverse_l1 == pytest.approx(0.0, abs=1e-7)
    assert terms.gradient == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(terms.total)
