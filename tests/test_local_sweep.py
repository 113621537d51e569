"""The local photometric sweep: it moves a perturbed depth back onto a textured plane and
confirms only what the images support."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mvs.geometry import make_pose_44
from mvs.local_sweep import (
    LocalSweepConfig, local_sweep, pixel_rays_3hw, propagated_correction_11hw, warp_by_depth_nkhw,
)
from test_costvolume import rotation_33, small_camera, textured_plane_views

PLANE_DEPTH_M = 2.0
SRC_T_REF_N44 = np.stack(
    [
        make_pose_44(rotation_33([0, 1, 0], 0.03), np.array([0.15, 0.02, 0.01])),
        make_pose_44(rotation_33([1, 0, 0], -0.02), np.array([-0.12, 0.06, -0.02])),
    ]
)


def plane_views() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey reference (1, H, W), sources (N, 1, H, W), K (3, 3) and src_T_ref (N, 4, 4) of a
    textured plane at PLANE_DEPTH_M, 160x120."""
    camera = small_camera(160, 120)
    ref_11hw, src_1n1hw = textured_plane_views(camera, PLANE_DEPTH_M, SRC_T_REF_N44, channels=1, seed=1)
    K_33 = torch.from_numpy(camera.K_33).float()
    return ref_11hw[0].float(), src_1n1hw[0].float(), K_33, torch.from_numpy(SRC_T_REF_N44).float()


def test_warp_at_the_true_depth_reproduces_the_reference() -> None:
    ref_1hw, src_n1hw, K_33, src_T_ref_n44 = plane_views()
    depth_khw = torch.full((3, *ref_1hw.shape[1:]), PLANE_DEPTH_M)
    depth_khw[1] *= 1.1  # a wrong depth: the warp no longer matches
    rays_3hw = pixel_rays_3hw(K_33, 120, 160)
    warped_nkhw, inside_nkhw = warp_by_depth_nkhw(src_n1hw, depth_khw, rays_3hw, K_33, src_T_ref_n44)
    assert warped_nkhw.shape == inside_nkhw.shape == (2, 3, 120, 160)
    assert inside_nkhw.float().mean() > 0.8
    difference_nkhw = (warped_nkhw - ref_1hw).abs()
    for k in (0, 2):
        # Bilinear resampling of a smooth texture twice (rendering, warping): within 2 % of its range.
        assert difference_nkhw[:, k][inside_nkhw[:, k]].median() < 0.02
    assert difference_nkhw[:, 1][inside_nkhw[:, 1]].median() > 0.04


@pytest.mark.parametrize("relative_error", [-0.04, 0.03])
def test_a_depth_a_few_percent_off_moves_onto_the_plane(relative_error: float) -> None:
    ref_1hw, src_n1hw, K_33, src_T_ref_n44 = plane_views()
    start_hw = torch.full(ref_1hw.shape[1:], PLANE_DEPTH_M * (1 + relative_error))
    start_hw[:, :10] = 0.0  # no estimate: stays empty, never confirmed
    result = local_sweep(start_hw, ref_1hw, src_n1hw, K_33, src_T_ref_n44, LocalSweepConfig())
    confirmed_hw = result.correlation_b1hw[0, 0] > 0
    assert confirmed_hw.float().mean() > 0.8
    assert not confirmed_hw[:, :10].any() and (result.depth_b1hw[0, 0, :, :10] == 0).all()
    relative_n = (result.depth_b1hw[0, 0][confirmed_hw] - PLANE_DEPTH_M).abs() / PLANE_DEPTH_M
    # Steps of 2.5 % then 0.8 % of inverse depth; the parabola resolves a fraction of them
    # (measured: median 0.20 %, 95th percentile 0.9 %).
    assert relative_n.median() < 0.003
    assert (relative_n < 0.012).float().mean() > 0.95
    assert (result.correlation_b1hw[0, 0][confirmed_hw] >= LocalSweepConfig().min_correlation).all()


def test_depth_outside_the_local_range_or_on_a_flat_image_stays_unconfirmed() -> None:
    ref_1hw, src_n1hw, K_33, src_T_ref_n44 = plane_views()
    far_off_hw = torch.full(ref_1hw.shape[1:], PLANE_DEPTH_M * 1.3)  # beyond the +-12.5 % of inverse depth swept
    result = local_sweep(far_off_hw, ref_1hw, src_n1hw, K_33, src_T_ref_n44, LocalSweepConfig(propagation_window=0))
    confirmed_hw = result.correlation_b1hw[0, 0] > 0
    assert confirmed_hw.float().mean() < 0.05
    assert torch.equal(result.depth_b1hw[0, 0][~confirmed_hw], far_off_hw[~confirmed_hw])
    flat = local_sweep(
        torch.full(ref_1hw.shape[1:], PLANE_DEPTH_M),
        torch.full_like(ref_1hw, 0.5),
        torch.full_like(src_n1hw, 0.5),
        K_33,
        src_T_ref_n44,
        LocalSweepConfig(),
    )
    assert not (flat.correlation_b1hw > 0).any()


# 9 % off: beyond the +-6 % swept before the fine sweep was added, within the +-12.5 % now.
@pytest.mark.parametrize("relative_error", [-0.09, 0.09])
def test_the_fine_sweep_confirms_a_subset_of_the_coarse_one_close_to_it(relative_error: float) -> None:
    ref_1hw, src_n1hw, K_33, src_T_ref_n44 = plane_views()
    start_hw = torch.full(ref_1hw.shape[1:], PLANE_DEPTH_M * (1 + relative_error))
    config = LocalSweepConfig(propagation_window=0)
    both = local_sweep(start_hw, ref_1hw, src_n1hw, K_33, src_T_ref_n44, config)
    coarse = local_sweep(start_hw, ref_1hw, src_n1hw, K_33, src_T_ref_n44, LocalSweepConfig(fine_steps=0, propagation_window=0))
    confirmed_hw, coarse_confirmed_hw = both.correlation_b1hw[0, 0] > 0, coarse.correlation_b1hw[0, 0] > 0
    assert not (confirmed_hw & ~coarse_confirmed_hw).any()
    assert confirmed_hw.float().mean() > 0.9 * coarse_confirmed_hw.float().mean()
    inverse_shift_n = coarse.depth_b1hw[0, 0][confirmed_hw] / both.depth_b1hw[0, 0][confirmed_hw] - 1
    assert inverse_shift_n.abs().max() < config.fine_steps * config.fine_step + 1e-4
    unconfirmed_hw = ~confirmed_hw
    assert torch.equal(both.depth_b1hw[0, 0][unconfirmed_hw], start_hw[unconfirmed_hw])


def test_the_propagated_correction_is_the_confirmed_pixels_one_where_they_are_near() -> None:
    input_11hw = torch.full((1, 1, 60, 80), 2.2)
    confirmed_11hw = torch.zeros(1, 1, 60, 80, dtype=torch.bool)
    confirmed_11hw[..., :30] = True
    refined_11hw = torch.where(confirmed_11hw, torch.full_like(input_11hw, 2.0), input_11hw)
    correction_11hw = propagated_correction_11hw(input_11hw, refined_11hw, confirmed_11hw, window=9)
    # Within reach of the confirmed columns (three 9-pixel boxes reach 12 columns) the factor
    # is theirs, 2.0 / 2.2, exactly: the average of a constant; beyond, no correction.
    torch.testing.assert_close(correction_11hw[..., :40], torch.full((1, 1, 60, 40), 2.0 / 2.2))
    torch.testing.assert_close(correction_11hw[..., 43:], torch.ones(1, 1, 60, 37))


def test_pixels_the_sweep_cannot_confirm_take_the_correction_around_them() -> None:
    ref_1hw, src_n1hw, K_33, src_T_ref_n44 = plane_views()
    ref_1hw = ref_1hw.clone()
    ref_1hw[:, 50:70, 70:90] = 0.5  # a flat patch: nothing to correlate
    start_hw = torch.full(ref_1hw.shape[1:], PLANE_DEPTH_M * 1.05)
    kept = local_sweep(start_hw, ref_1hw, src_n1hw, K_33, src_T_ref_n44, LocalSweepConfig(propagation_window=0))
    spread = local_sweep(start_hw, ref_1hw, src_n1hw, K_33, src_T_ref_n44, LocalSweepConfig())
    patch_hw = (slice(55, 65), slice(75, 85))
    assert not (spread.correlation_b1hw[0, 0][patch_hw] > 0).any()
    assert torch.equal(spread.correlation_b1hw, kept.correlation_b1hw)
    torch.testing.assert_close(kept.depth_b1hw[0, 0][patch_hw], start_hw[patch_hw])
    # 5 % off before; the surrounding plane's correction brings the patch within 0.5 %.
    relative_hw = (spread.depth_b1hw[0, 0][patch_hw] - PLANE_DEPTH_M).abs() / PLANE_DEPTH_M
    assert relative_hw.max() < 0.005
    confirmed_hw = spread.correlation_b1hw[0, 0] > 0
    assert torch.equal(spread.depth_b1hw[0, 0][confirmed_hw], kept.depth_b1hw[0, 0][confirmed_hw])


def test_zero_steps_returns_the_input_unconfirmed_and_bad_settings_raise() -> None:
    ref_1hw, src_n1hw, K_33, src_T_ref_n44 = plane_views()
    start_hw = torch.full(ref_1hw.shape[1:], 1.7)
    off = local_sweep(start_hw, ref_1hw, src_n1hw, K_33, src_T_ref_n44, LocalSweepConfig(steps=0))
    assert torch.equal(off.depth_b1hw[0, 0], start_hw) and not (off.correlation_b1hw > 0).any()
    with pytest.raises(ValueError, match="local sweep"):
        local_sweep(start_hw, ref_1hw, src_n1hw, K_33, src_T_ref_n44, LocalSweepConfig(step=0.0))
    with pytest.raises(ValueError, match="propagation_window"):
        local_sweep(start_hw, ref_1hw, src_n1hw, K_33, src_T_ref_n44, LocalSweepConfig(propagation_window=24))
