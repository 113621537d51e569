"""Classic regressor: sub-plane refinement, confidence, weighted median, a plane end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvs.costvolume import inverse_depth_hypotheses_d, same_camera_sweep, zncc_cost_volume
from mvs.geometry import make_pose_44
from mvs.regressors import (
    ClassicRegressorConfig,
    classic_regress,
    index_to_depth_b1hw,
    peak_confidence_b1hw,
    refined_argmin_b1hw,
    weighted_median_b1hw,
)
from test_costvolume import small_camera, textured_plane_views


def test_parabola_refinement_recovers_a_quadratic_minimum() -> None:
    planes_d = torch.arange(32, dtype=torch.float64)
    minima = torch.tensor([7.0, 20.3, 11.75], dtype=torch.float64)
    cost_bdhw = ((planes_d[None, :] - minima[:, None]) ** 2)[:, :, None, None]
    refined_b1hw = refined_argmin_b1hw(cost_bdhw)
    assert torch.allclose(refined_b1hw.flatten(), minima, atol=1e-9)
    # At the first plane there is no neighbour below: no refinement.
    edge_bdhw = ((planes_d - -3.0) ** 2)[None, :, None, None]
    assert refined_argmin_b1hw(edge_bdhw).item() == 0.0


def test_fractional_index_interpolates_inverse_depth() -> None:
    depth_d = inverse_depth_hypotheses_d(0.25, 20.0, 64)
    index_b1hw = torch.tensor([2.5, 0.0, 63.0]).reshape(1, 1, 1, 3)
    depth_b1hw = index_to_depth_b1hw(index_b1hw, depth_d)
    expected_inverse = 0.5 * (1 / depth_d[2] + 1 / depth_d[3])
    assert depth_b1hw[0, 0, 0, 0].item() == pytest.approx(1 / expected_inverse.item(), rel=1e-5)
    assert depth_b1hw[0, 0, 0, 1].item() == pytest.approx(0.25, rel=1e-5)
    assert depth_b1hw[0, 0, 0, 2].item() == pytest.approx(20.0, rel=1e-5)


def test_confidence_is_high_for_a_sharp_minimum_and_low_for_a_flat_curve() -> None:
    sharp_d = torch.ones(64)
    sharp_d[30] = 0.0
    cost_bdhw = torch.stack([sharp_d, torch.ones(64)])[:, :, None, None]
    index_b1hw = refined_argmin_b1hw(cost_bdhw)
    confidence_b1hw = peak_confidence_b1hw(cost_bdhw, index_b1hw, temperature=0.05)
    assert confidence_b1hw[0].item() == pytest.approx(1.0, abs=1e-6)
    # A flat curve spreads the probability evenly: the 2 planes around plane 0.
    assert confidence_b1hw[1].item() == pytest.approx(2 / 64, abs=1e-6)


def test_weighted_median_removes_outliers_but_keeps_a_colour_edge() -> None:
    height, width = 20, 20
    guide_b3hw = torch.zeros(1, 3, height, width)
    guide_b3hw[..., 10:] = 1.0
    value_b1hw = torch.ones(1, 1, height, width)
    value_b1hw[..., 10:] = 2.0
    noisy_b1hw = value_b1hw.clone()
    generator = torch.Generator().manual_seed(0)
    outliers_b1hw = torch.rand(1, 1, height, width, generator=generator) < 0.15
    noisy_b1hw[outliers_b1hw] = 5.0
    filtered_b1hw = weighted_median_b1hw(noisy_b1hw, torch.ones_like(noisy_b1hw), guide_b3hw, 5, 0.1)
    assert torch.equal(filtered_b1hw, value_b1hw)
    # Zero-weight neighbours do not count: the median follows the trusted pixels.
    weight_b1hw = (~outliers_b1hw).float()
    assert torch.equal(weighted_median_b1hw(noisy_b1hw, weight_b1hw, guide_b3hw, 3, 0.1), value_b1hw)


def test_classic_regressor_finds_a_textured_plane() -> None:
    camera = small_camera(160, 120)
    plane_depth = 1.7
    src_T_ref_n44 = np.stack(
        [make_pose_44(np.eye(3), np.array([0.12, 0.02, 0.0])), make_pose_44(np.eye(3), np.array([-0.1, 0.05, 0.03]))]
    )
    ref_1chw, src_1nchw = textured_plane_views(camera, plane_depth, src_T_ref_n44, channels=3)
    depth_d = inverse_depth_hypotheses_d(0.25, 20.0, 64)
    sweep = same_camera_sweep(
        torch.from_numpy(camera.K_33).float()[None], torch.from_numpy(src_T_ref_n44).float()[None], depth_d, 120, 160
    )
    cost_volume = zncc_cost_volume(ref_1chw.mean(1, keepdim=True), src_1nchw.mean(2, keepdim=True), sweep, 5)
    prediction = classic_regress(cost_volume, ref_1chw, ClassicRegressorConfig())
    depth_hw = prediction.depth_b1hw[0, 0]
    estimated_hw = depth_hw > 0
    assert estimated_hw.float().mean() > 0.6
    relative_error_n = (depth_hw[estimated_hw] - plane_depth).abs() / plane_depth
    assert relative_error_n.median() < 0.01
    assert (relative_error_n < 0.03).float().mean() > 0.95
    assert prediction.confidence_b1hw.min() >= 0 and prediction.confidence_b1hw.max() <= 1 + 1e-6
