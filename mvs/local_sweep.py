"""Photometric refinement of a depth map by a local sweep around it at the working resolution.

The learned regressor sweeps 64 planes at a quarter and a half of the working resolution:
its depth is right on the whole but blurred, a few per cent off on most surfaces, too much
for a 5 cm surface at 2 m. Here each pixel tests a few inverse depths close to its own
estimate against the sources at the full working resolution, ZNCC over small patches, and
moves to the parabola-refined minimum; a second sweep of finer steps around that minimum
must find it again (on real rooms this rejects minima the coarse steps only straddle; on a
clean textured plane it moves the depth by a median 0.07 %). Pixels whose best
correlation is weak, or whose minimum lies at the edge of the local range, in either sweep,
are flagged unconfirmed. The regressor's error varies slowly over the image, so those take
the correction the sweep measured on the confirmed pixels around them (a normalised
convolution of log(refined / input)), where there are any: it takes the AbsRel over every
pixel from 0.103 to 0.100 on redkitchen, 0.201 to 0.198 on the tabletop and 0.0142 to 0.0136 on
the synthetic room.
Depths are metres, poses reference-to-source (`src_T_ref`), pixel centres at integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mvs.costvolume import box_filter_bchw, box_mean_variance_bchw, patch_moments_bchw
from mvs.regressors import refined_argmin_b1hw
from mvs.sweep_kernels import BEHIND_EPS, pixel_to_grid_scale

MIN_PATCH_VARIANCE = 1e-4
"""Grey-level variance (intensities in [0, 1]) below which a patch is too flat to correlate."""

MIN_PROPAGATION_SUPPORT = 0.01
"""Smallest share of confirmed pixels (weighted by the propagation kernel) around an
unconfirmed pixel for it to take their correction."""


@dataclass
class LocalSweepConfig:
    """The local sweep.

    steps: hypotheses on each side of the estimate (0 turns the refinement off).
    step: their spacing, a share of the estimate's inverse depth.
    fine_steps, fine_step: the same for a second sweep around the first one's result
        (0 steps: none); a pixel is confirmed only when both are.
    zncc_window: ZNCC patch size (pixels at the working resolution).
    aggregation_window: box (pixels) the ZNCC costs are averaged over before the minimum.
    min_correlation: pixels whose mean ZNCC at the minimum is lower stay unconfirmed. With the
        ZNCC averaged over 4 sources, 0.4 rather than 0.5 fuses more of the surfaces both
        sweeps agree on: mesh F-score at 5 cm on redkitchen 0:1000:2 0.561 -> 0.566 (0.569 at
        0.3, 0.571 at 0.2), tabletop 0.580 -> 0.583, synthetic room0 0.966 -> 0.966. Lower
        thresholds let a single source confirm pixels it does not see (at 0.3, 10 % of such
        pixels in `tests/test_depth_confidence.py`, 6 % at 0.4).
    propagation_window: box (pixels) applied three times, about a Gaussian of standard
        deviation window / 2, over which the corrections of confirmed pixels are averaged
        for the unconfirmed ones (0: unconfirmed pixels keep their input depth).
    """

    steps: int = 5
    step: float = 0.025
    fine_steps: int = 3
    fine_step: float = 0.008
    zncc_window: int = 7
    aggregation_window: int = 5
    min_correlation: float = 0.4
    propagation_window: int = 25


@dataclass
class LocalSweepResult:
    """depth_b1hw: refined depth (metres); where unconfirmed, the input's times the correction
    propagated from confirmed pixels around (the input's where there are none); 0 where it was 0;
    correlation_b1hw: mean ZNCC over the sources at the chosen depth where confirmed, else 0."""

    depth_b1hw: torch.Tensor
    correlation_b1hw: torch.Tensor


def pixel_rays_3hw(K_33: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, H, W) camera-frame rays with unit z through every pixel centre."""
    v_hw, u_hw = torch.meshgrid(
        torch.arange(height, dtype=K_33.dtype, device=K_33.device),
        torch.arange(width, dtype=K_33.dtype, device=K_33.device),
        indexing="ij",
    )
    return torch.stack([(u_hw - K_33[0, 2]) / K_33[0, 0], (v_hw - K_33[1, 2]) / K_33[1, 1], torch.ones_like(u_hw)])


def warp_by_depth_nkhw(
    src_n1hw: torch.Tensor,
    depth_khw: torch.Tensor,
    rays_3hw: torch.Tensor,
    K_33: torch.Tensor,
    src_T_ref_n44: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each source image sampled (bilinear) where the reference pixels land at each of K
    depth maps `depth_khw`, (N, K, H, W), and whether they land inside it in front of the
    camera, (N, K, H, W)."""
    n, _, h, w = src_n1hw.shape
    k = depth_khw.shape[0]
    # A point at depth d on a unit-z ray r lands at R (d r) + t = d (R r) + t in a source.
    rotated_n3p = src_T_ref_n44[:, :3, :3] @ rays_3hw.reshape(3, -1)
    src_n3p = (rotated_n3p[:, :, None] * depth_khw.reshape(1, 1, k, -1)).reshape(n, 3, -1) + src_T_ref_n44[:, :3, 3:]
    z_np = src_n3p[:, 2]
    safe_z_np = z_np.clamp(min=BEHIND_EPS)
    u_np = K_33[0, 0] * src_n3p[:, 0] / safe_z_np + K_33[0, 2]
    v_np = K_33[1, 1] * src_n3p[:, 1] / safe_z_np + K_33[1, 2]
    inside_np = (z_np > BEHIND_EPS) & (u_np >= 0) & (u_np <= w - 1) & (v_np >= 0) & (v_np <= h - 1)
    # Pixel centres to grid_sample coordinates as the plane sweep maps them (`mvs.costvolume`).
    grid_np2 = torch.stack([u_np * pixel_to_grid_scale(w) - 1, v_np * pixel_to_grid_scale(h) - 1], dim=-1)
    warped_n1qw = F.grid_sample(
        src_n1hw, grid_np2.reshape(n, k * h, w, 2), mode="bilinear", padding_mode="border", align_corners=True
    )
    return warped_n1qw.reshape(n, k, h, w), inside_np.reshape(n, k, h, w)


@dataclass
class _Views:
    """What every sweep stage compares: the grey reference `ref_11hw` with its box mean and
    variance over the ZNCC window, the grey sources (N, 1, H, W), the unit-z pixel rays
    (3, H, W), the intrinsics and the reference-to-source poses (N, 4, 4)."""

    ref_11hw: torch.Tensor
    ref_mean_11hw: torch.Tensor
    ref_variance_11hw: torch.Tensor
    src_grey_n1hw: torch.Tensor
    rays_3hw: torch.Tensor
    K_33: torch.Tensor
    src_T_ref_n44: torch.Tensor


@dataclass
class _Stage:
    """One sweep around the current depth: `depth_11hw` moved to the refined minimum where
    `confirmed_11hw`, the input elsewhere; `correlation_11hw` the mean ZNCC at the minimum."""

    depth_11hw: torch.Tensor
    correlation_11hw: torch.Tensor
    confirmed_11hw: torch.Tensor


def _sweep_stage(depth_hw: torch.Tensor, views: _Views, steps: int, step: float, config: LocalSweepConfig) -> _Stage:
    """Test 2 `steps` + 1 inverse depths `step` apart (a share of each pixel's own) around
    `depth_hw` (H, W, metres, 0 = none) and move to the parabola-refined ZNCC minimum."""
    h, w = depth_hw.shape
    valid_hw = depth_hw > 0
    inverse_hw = torch.where(valid_hw, 1.0 / depth_hw.clamp(min=1e-6), torch.zeros_like(depth_hw))
    offsets_k = torch.arange(-steps, steps + 1, dtype=depth_hw.dtype, device=depth_hw.device)
    inverse_khw = inverse_hw[None] * (1.0 + offsets_k[:, None, None] * step)
    hypotheses_khw = torch.where(valid_hw[None], 1.0 / inverse_khw.clamp(min=1e-6), torch.ones_like(inverse_khw))
    warped_nkhw, inside_nkhw = warp_by_depth_nkhw(
        views.src_grey_n1hw, hypotheses_khw, views.rays_3hw, views.K_33, views.src_T_ref_n44
    )
    # All N x K warped images as the channels of one batch: one call for all their moments.
    _, src_variance_1chw, covariance_1chw = patch_moments_bchw(
        views.ref_11hw, views.ref_mean_11hw, warped_nkhw.reshape(1, -1, h, w), config.zncc_window
    )
    zncc_1chw = covariance_1chw / torch.sqrt((src_variance_1chw * views.ref_variance_11hw).clamp(min=1e-12))
    zncc_nkhw = zncc_1chw.reshape_as(warped_nkhw)
    seen_nkhw = inside_nkhw & (src_variance_1chw.reshape_as(warped_nkhw) > MIN_PATCH_VARIANCE)
    count_khw = seen_nkhw.sum(dim=0)
    mean_zncc_khw = torch.where(seen_nkhw, zncc_nkhw, torch.zeros_like(zncc_nkhw)).sum(dim=0) / count_khw.clamp(min=1)
    cost_khw = torch.where(count_khw > 0, 1.0 - mean_zncc_khw, torch.ones_like(mean_zncc_khw))
    cost_1khw = box_filter_bchw(cost_khw[None], config.aggregation_window)
    index_11hw = refined_argmin_b1hw(cost_1khw)
    best_cost_11hw, best_11hw = cost_1khw.min(dim=1, keepdim=True)
    correlation_11hw = 1.0 - best_cost_11hw
    # The parabola offset is 0 at the first and last hypothesis: those minima are not bracketed.
    bracketed_11hw = (best_11hw > 0) & (best_11hw < len(offsets_k) - 1)
    confirmed_11hw = (
        valid_hw[None, None]
        & bracketed_11hw
        & (correlation_11hw >= config.min_correlation)
        & (views.ref_variance_11hw > MIN_PATCH_VARIANCE)
    )
    refined_11hw = 1.0 / (inverse_hw[None, None] * (1.0 + (index_11hw - steps) * step)).clamp(min=1e-6)
    return _Stage(torch.where(confirmed_11hw, refined_11hw, depth_hw[None, None]), correlation_11hw, confirmed_11hw)


def propagated_correction_11hw(
    input_11hw: torch.Tensor, refined_11hw: torch.Tensor, confirmed_11hw: torch.Tensor, window: int
) -> torch.Tensor:
    """(1, 1, H, W) factor taking each pixel's input depth towards the refined depths of the
    confirmed pixels around it: exp of the average of log(refined / input) over them (three
    box passes of `window` pixels); 1 where they weigh less than MIN_PROPAGATION_SUPPORT."""
    log_ratio_11hw = torch.log(refined_11hw.clamp(min=1e-6) / input_11hw.clamp(min=1e-6))
    weighted_12hw = torch.cat(
        [torch.where(confirmed_11hw, log_ratio_11hw, torch.zeros_like(log_ratio_11hw)), confirmed_11hw.to(log_ratio_11hw.dtype)],
        dim=1,
    )
    for _ in range(3):
        weighted_12hw = box_filter_bchw(weighted_12hw, window)
    support_11hw = weighted_12hw[:, 1:]
    mean_log_ratio_11hw = weighted_12hw[:, :1] / support_11hw.clamp(min=1e-12)
    return torch.where(
        support_11hw >= MIN_PROPAGATION_SUPPORT, torch.exp(mean_log_ratio_11hw), torch.ones_like(mean_log_ratio_11hw)
    )


def local_sweep(
    depth_hw: torch.Tensor,
    ref_grey_1hw: torch.Tensor,
    src_grey_n1hw: torch.Tensor,
    K_33: torch.Tensor,
    src_T_ref_n44: torch.Tensor,
    config: LocalSweepConfig,
) -> LocalSweepResult:
    """Refine `depth_hw` (H, W, metres, 0 = none) of a reference (grey (1, H, W) in [0, 1])
    against N sources (grey (N, 1, H, W)) with intrinsics `K_33` at (H, W); see the module."""
    if min(config.steps, config.fine_steps) < 0 or min(config.step, config.fine_step) <= 0 or config.min_correlation > 1:
        raise ValueError(
            "local sweep: expected steps, fine_steps >= 0, step, fine_step > 0 and min_correlation <= 1, got "
            f"{config.steps}, {config.fine_steps}, {config.step}, {config.fine_step}, {config.min_correlation}"
        )
    if config.propagation_window < 0 or (config.propagation_window and config.propagation_window % 2 == 0):
        raise ValueError(f"local sweep: expected propagation_window 0 or odd, got {config.propagation_window}")
    if config.steps == 0:
        return LocalSweepResult(depth_hw[None, None], torch.zeros_like(depth_hw)[None, None])
    h, w = depth_hw.shape
    ref_11hw = ref_grey_1hw[None]
    views = _Views(
        ref_11hw,
        *box_mean_variance_bchw(ref_11hw, config.zncc_window),
        src_grey_n1hw,
        pixel_rays_3hw(K_33, h, w),
        K_33,
        src_T_ref_n44,
    )
    stage = _sweep_stage(depth_hw, views, config.steps, config.step, config)
    if config.fine_steps > 0:
        coarse = stage
        fine = _sweep_stage(coarse.depth_11hw[0, 0], views, config.fine_steps, config.fine_step, config)
        confirmed_11hw = coarse.confirmed_11hw & fine.confirmed_11hw
        stage = _Stage(
            torch.where(confirmed_11hw, fine.depth_11hw, depth_hw[None, None]), fine.correlation_11hw, confirmed_11hw
        )
    depth_11hw = stage.depth_11hw
    if config.propagation_window > 0:
        input_11hw = depth_hw[None, None]
        correction_11hw = propagated_correction_11hw(input_11hw, depth_11hw, stage.confirmed_11hw, config.propagation_window)
        depth_11hw = torch.where(stage.confirmed_11hw, depth_11hw, input_11hw * correction_11hw)
    return LocalSweepResult(
        depth_b1hw=depth_11hw,
        correlation_b1hw=torch.where(stage.confirmed_11hw, stage.correlation_11hw, torch.zeros_like(stage.correlation_11hw)),
    )
