"""Training losses for depth: scale-invariant log, L1 on inverse depth, gradient matching,
and a confidence term, over several output scales and masked to valid ground truth.

Depths are metres; inverse depths 1/metres. Every prediction is upsampled (bilinear, in
inverse depth) to the ground truth's resolution before it is compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mvs.network import ModelOutput


@dataclass
class LossConfig:
    """Weights of the loss terms.

    silog_weight, silog_variance_focus: Eigen et al.'s sqrt(mean e^2 - lambda (mean e)^2)
        with e = log p - log g and lambda = silog_variance_focus.
    inverse_l1_weight: mean |1/p - 1/g| (1/metres).
    gradient_weight, gradient_scales: multi-scale gradient matching of e (finest output).
    confidence_weight, confidence_tolerance: binary cross-entropy of the confidence against
        |e| < confidence_tolerance.
    scale_decay: output k scales below the finest weighs scale_decay^k.
    """

    silog_weight: float = 1.0
    silog_variance_focus: float = 0.85
    inverse_l1_weight: float = 1.0
    gradient_weight: float = 0.5
    gradient_scales: int = 4
    confidence_weight: float = 0.05
    confidence_tolerance: float = 0.1
    scale_decay: float = 0.5


@dataclass
class LossTerms:
    """The weighted total (a differentiable scalar) and its unweighted parts (floats)."""

    total: torch.Tensor
    silog: float
    inverse_l1: float
    gradient: float
    confidence: float


def silog_loss(log_error_b1hw: torch.Tensor, mask_b1hw: torch.Tensor, variance_focus: float) -> torch.Tensor:
    """sqrt(mean e^2 - lambda (mean e)^2) per image over masked pixels, averaged over images."""
    count_b = mask_b1hw.sum(dim=(1, 2, 3)).clamp(min=1.0)
    mean_b = (log_error_b1hw * mask_b1hw).sum(dim=(1, 2, 3)) / count_b
    mean_sq_b = (log_error_b1hw**2 * mask_b1hw).sum(dim=(1, 2, 3)) / count_b
    return torch.sqrt((mean_sq_b - variance_focus * mean_b**2).clamp(min=1e-8)).mean()


def masked_mean(value_b1hw: torch.Tensor, mask_b1hw: torch.Tensor) -> torch.Tensor:
    """Mean of `value` over the masked pixels of the whole batch."""
    return (value_b1hw * mask_b1hw).sum() / mask_b1hw.sum().clamp(min=1.0)


def gradient_matching_loss(log_error_b1hw: torch.Tensor, mask_b1hw: torch.Tensor, scales: int) -> torch.Tensor:
    """Mean |d/dx e| + |d/dy e| over pixel pairs both masked, at `scales` subsamplings
    (every 1, 2, 4, ... pixels), summed over scales (Li and Snavely, MegaDepth)."""
    total = log_error_b1hw.new_zeros(())
    for k in range(scales):
        step = 2**k
        e_b1hw = log_error_b1hw[..., ::step, ::step]
        m_b1hw = mask_b1hw[..., ::step, ::step]
        mask_x = m_b1hw[..., :, 1:] * m_b1hw[..., :, :-1]
        mask_y = m_b1hw[..., 1:, :] * m_b1hw[..., :-1, :]
        grad_x = (e_b1hw[..., :, 1:] - e_b1hw[..., :, :-1]).abs()
        grad_y = (e_b1hw[..., 1:, :] - e_b1hw[..., :-1, :]).abs()
        count = (mask_x.sum() + mask_y.sum()).clamp(min=1.0)
        total = total + ((grad_x * mask_x).sum() + (grad_y * mask_y).sum()) / count
    return total


def upsample_b1hw(x_b1hw: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize to (height, width) (identity when the size already matches)."""
    if x_b1hw.shape[-2:] == (height, width):
        return x_b1hw
    return F.interpolate(x_b1hw, size=(height, width), mode="bilinear", align_corners=False)


def depth_loss(output: ModelOutput, gt_depth_b1hw: torch.Tensor, config: LossConfig) -> LossTerms:
    """All terms for a batch; ground truth is valid where > 0 metres. The reported SI-log
    and inverse L1 parts are those of the finest output."""
    if not output.inverse_depths_b1hw:
        raise ValueError("expected at least one predicted scale, got none")
    height, width = gt_depth_b1hw.shape[-2:]
    mask_b1hw = (gt_depth_b1hw > 0).to(gt_depth_b1hw.dtype)
    gt_safe_b1hw = torch.where(gt_depth_b1hw > 0, gt_depth_b1hw, torch.ones_like(gt_depth_b1hw))
    gt_inverse_b1hw = mask_b1hw / gt_safe_b1hw
    gt_log_b1hw = torch.log(gt_safe_b1hw)
    num_scales = len(output.inverse_depths_b1hw)
    total = gt_depth_b1hw.new_zeros(())
    for k, inverse_b1hw in enumerate(output.inverse_depths_b1hw):
        weight = config.scale_decay ** (num_scales - 1 - k)
        inverse_b1hw = upsample_b1hw(inverse_b1hw, height, width)
        log_error_b1hw = -torch.log(inverse_b1hw) - gt_log_b1hw
        silog = silog_loss(log_error_b1hw, mask_b1hw, config.silog_variance_focus)
        inverse_l1 = masked_mean((inverse_b1hw - gt_inverse_b1hw).abs(), mask_b1hw)
        total = total + weight * (config.silog_weight * silog + config.inverse_l1_weight * inverse_l1)
    gradient = gradient_matching_loss(log_error_b1hw, mask_b1hw, config.gradient_scales)
    confidence_b1hw = upsample_b1hw(output.confidence_b1hw, height, width).clamp(1e-4, 1 - 1e-4)
    correct_b1hw = (log_error_b1hw.detach().abs() < config.confidence_tolerance).to(confidence_b1hw.dtype)
    confidence = masked_mean(F.binary_cross_entropy(confidence_b1hw, correct_b1hw, reduction="none"), mask_b1hw)
    total = total + config.gradient_weight * gradient + config.confidence_weight * confidence
    return LossTerms(
        total=total,
        silog=float(silog.detach()),
        inverse_l1=float(inverse_l1.detach()),
        gradient=float(gradient.detach()),
        confidence=float(confidence.detach()),
    )
