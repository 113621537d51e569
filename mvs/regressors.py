"""Classic cost-to-depth regression: winner-take-all, sub-plane refinement, edge-aware filtering.

Works on a `CostVolume` (lower cost is better) whose planes are uniform in inverse depth;
depths are metres, images are RGB in [0, 1] at the cost volume's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mvs.costvolume import CostVolume, box_filter_bchw


@dataclass
class ClassicRegressorConfig:
    """Settings of the classic regressor.

    aggregation_window: box filter (pixels) applied to every cost slice before the
        winner-take-all (1 = none).
    confidence_temperature: softness of the cost-to-probability softmax used for confidence.
    median_window: window (pixels) of the confidence- and colour-weighted median filter
        (1 = none).
    colour_sigma: colour difference (RGB in [0, 1]) at which a neighbour's median weight
        falls to exp(-1/2).
    min_confidence: pixels whose confidence stays below it get no depth.
    """

    aggregation_window: int = 15
    confidence_temperature: float = 0.05
    median_window: int = 7
    colour_sigma: float = 0.1
    min_confidence: float = 0.3


@dataclass
class DepthPrediction:
    """Depth and confidence at the cost volume's resolution.

    depth_b1hw: metres, 0 where the pixel has no estimate.
    confidence_b1hw: in [0, 1], higher is more trustworthy.
    """

    depth_b1hw: torch.Tensor
    confidence_b1hw: torch.Tensor


def aggregate_cost_bdhw(cost_bdhw: torch.Tensor, window: int) -> torch.Tensor:
    """Every cost slice averaged over a `window` x `window` box (border-normalised)."""
    return box_filter_bchw(cost_bdhw, window)


def refined_argmin_b1hw(cost_bdhw: torch.Tensor) -> torch.Tensor:
    """Fractional plane index of the cost minimum, refined by a parabola through 3 planes.

    The offset from the best plane k is (c[k-1] - c[k+1]) / (2 (c[k-1] - 2 c[k] + c[k+1])),
    clamped to [-0.5, 0.5]; 0 at the first and last plane and where the curve is not convex.
    """
    d = cost_bdhw.shape[1]
    # min(...).indices is the argmin (the first of equal minima) at a fraction of argmin's cost on the CPU.
    centre_b1hw, best_b1hw = cost_bdhw.min(dim=1, keepdim=True)
    below_b1hw = torch.gather(cost_bdhw, 1, (best_b1hw - 1).clamp(min=0))
    above_b1hw = torch.gather(cost_bdhw, 1, (best_b1hw + 1).clamp(max=d - 1))
    curvature_b1hw = below_b1hw - 2.0 * centre_b1hw + above_b1hw
    interior_b1hw = (best_b1hw > 0) & (best_b1hw < d - 1) & (curvature_b1hw > 1e-9)
    offset_b1hw = torch.where(
        interior_b1hw,
        (below_b1hw - above_b1hw) / (2.0 * curvature_b1hw.clamp(min=1e-9)),
        torch.zeros_like(curvature_b1hw),
    ).clamp(-0.5, 0.5)
    return best_b1hw.to(cost_bdhw.dtype) + offset_b1hw


def index_to_depth_b1hw(index_b1hw: torch.Tensor, depth_d: torch.Tensor) -> torch.Tensor:
    """Depth (metres) at fractional plane indices, interpolating linearly in inverse depth."""
    inverse_d = 1.0 / depth_d
    lower_b1hw = index_b1hw.floor().clamp(0, len(depth_d) - 2).long()
    weight_b1hw = index_b1hw - lower_b1hw.to(index_b1hw.dtype)
    inverse_b1hw = inverse_d[lower_b1hw] * (1.0 - weight_b1hw) + inverse_d[lower_b1hw + 1] * weight_b1hw
    return 1.0 / inverse_b1hw


def peak_confidence_b1hw(cost_bdhw: torch.Tensor, index_b1hw: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probability mass within one plane of the minimum under softmax(-cost / temperature)."""
    if temperature <= 0:
        raise ValueError(f"confidence temperature: expected > 0, got {temperature}")
    probability_bdhw = torch.softmax(-cost_bdhw / temperature, dim=1)
    planes_d = torch.arange(cost_bdhw.shape[1], device=cost_bdhw.device, dtype=cost_bdhw.dtype)
    near_peak_bdhw = (planes_d[None, :, None, None] - index_b1hw).abs() <= 1.5
    return (probability_bdhw * near_peak_bdhw).sum(dim=1, keepdim=True)


def weighted_median_b1hw(
    value_b1hw: torch.Tensor, weight_b1hw: torch.Tensor, guide_b3hw: torch.Tensor, window: int, colour_sigma: float
) -> torch.Tensor:
    """Median of `value` over a window, each neighbour weighted by its own weight times its
    colour similarity to the centre pixel of `guide` (RGB in [0, 1])."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"median window: expected an odd size >= 1, got {window}")
    if window == 1:
        return value_b1hw
    b, _, h, w = value_b1hw.shape
    pad = window // 2
    values_bkp = F.unfold(F.pad(value_b1hw, (pad,) * 4, mode="replicate"), window)
    weights_bkp = F.unfold(F.pad(weight_b1hw, (pad,) * 4), window)
    guides_b3kp = F.unfold(F.pad(guide_b3hw, (pad,) * 4, mode="replicate"), window).reshape(b, 3, -1, h * w)
    colour_distance_bkp = ((guides_b3kp - guide_b3hw.reshape(b, 3, 1, h * w)) ** 2).sum(dim=1)
    weights_bkp = weights_bkp * torch.exp(-0.5 * colour_distance_bkp / colour_sigma**2)
    sorted_bkp, order_bkp = values_bkp.sort(dim=1)
    cumulative_bkp = torch.gather(weights_bkp, 1, order_bkp).cumsum(dim=1)
    half_b1p = 0.5 * cumulative_bkp[:, -1:]
    median_index_b1p = (cumulative_bkp < half_b1p).sum(dim=1, keepdim=True).clamp(max=values_bkp.shape[1] - 1)
    return torch.gather(sorted_bkp, 1, median_index_b1p).reshape(b, 1, h, w)


def classic_regress(cost_volume: CostVolume, image_b3hw: torch.Tensor, config: ClassicRegressorConfig) -> DepthPrediction:
    """Depth from a cost volume: aggregate, winner-take-all with parabolic refinement in
    inverse depth, softmax-peak confidence, a confidence- and colour-weighted median of
    inverse depth guided by the reference image, then low-confidence pixels invalidated."""
    cost_bdhw = aggregate_cost_bdhw(cost_volume.cost_bdhw, config.aggregation_window)
    index_b1hw = refined_argmin_b1hw(cost_bdhw)
    confidence_b1hw = peak_confidence_b1hw(cost_bdhw, index_b1hw, config.confidence_temperature)
    seen_b1hw = cost_volume.valid_count_bdhw.amax(dim=1, keepdim=True) > 0
    confidence_b1hw = torch.where(seen_b1hw, confidence_b1hw, torch.zeros_like(confidence_b1hw))
    inverse_b1hw = 1.0 / index_to_depth_b1hw(index_b1hw, cost_volume.depth_d)
    inverse_b1hw = weighted_median_b1hw(
        inverse_b1hw, confidence_b1hw + 1e-6, image_b3hw, config.median_window, config.colour_sigma
    )
    depth_b1hw = torch.where(
        confidence_b1hw >= config.min_confidence, 1.0 / inverse_b1hw, torch.zeros_like(inverse_b1hw)
    )
    return DepthPrediction(depth_b1hw=depth_b1hw, confidence_b1hw=confidence_b1hw)
