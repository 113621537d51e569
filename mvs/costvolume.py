"""Plane-sweep cost volumes over fronto-parallel planes of the reference camera.

Pixels (u, v) have their centres at integer coordinates; camera frames are x right, y down,
z forward, in metres. `src_T_ref_44` maps reference-camera points into a source camera. A
cost volume holds one matching cost per depth hypothesis and reference pixel, lower is
better, averaged over the sources that see the pixel's plane point.

Each volume has two implementations that agree to float rounding and flag the same samples
as out of view: fused CPU kernels (`mvs.sweep_kernels`: warp, compare and reduce in one
pass, nothing stored per hypothesis) for float32 inference on the CPU, and the reference
path by `grid_sample` (differentiable, any device) for training and GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from mvs.sweep_kernels import (
    BEHIND_EPS,
    IN_VIEW_TOLERANCE_PX,
    feature_cost_kernel,
    pixel_to_grid_scale,
    use_threads,
    zncc_cost_kernel,
)

# Cost of a pixel no source sees: the cost of uncorrelated signals (1 - correlation 0).
NEUTRAL_COST = 1.0

SEPARABLE_BOX_WINDOW = 7
"""Largest box filter window done as one square kernel (larger ones are separated)."""


@dataclass
class CostVolume:
    """A plane-sweep cost volume.

    cost_bdhw: mean cost over the sources in view, in [0, 2] (1 - correlation); pixels and
        planes no source sees hold `NEUTRAL_COST`.
    valid_count_bdhw: number of sources (float) whose image contains the plane point.
    depth_d: the plane depths in metres, ascending (uniform in inverse depth).
    """

    cost_bdhw: torch.Tensor
    valid_count_bdhw: torch.Tensor
    depth_d: torch.Tensor


def inverse_depth_hypotheses_d(
    near: float, far: float, num_hypotheses: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(D,) float32 plane depths in metres from `near` to `far`, uniform in inverse depth."""
    if not 0 < near < far:
        raise ValueError(f"depth range: expected 0 < near < far, got near={near}, far={far}")
    if num_hypotheses < 2:
        raise ValueError(f"expected at least 2 depth hypotheses, got {num_hypotheses}")
    inverse_d = torch.linspace(1.0 / near, 1.0 / far, num_hypotheses, dtype=torch.float64)
    return (1.0 / inverse_d).to(device=device, dtype=torch.float32)


def plane_homographies_bnd33(
    K_ref_b33: torch.Tensor, K_src_bn33: torch.Tensor, src_T_ref_bn44: torch.Tensor, depth_d: torch.Tensor
) -> torch.Tensor:
    """(B, N, D, 3, 3) homographies mapping reference pixels to source pixels.

    For the plane z = d of the reference camera (normal n = (0, 0, 1)):
    H = K_src (R + t n^T / d) K_ref^-1 with (R, t) = src_T_ref. Applied to a homogeneous
    reference pixel, the third coordinate of the result is z_src / d.
    """
    R_bn33 = src_T_ref_bn44[..., :3, :3]
    t_bn3 = src_T_ref_bn44[..., :3, 3]
    # t n^T has only its last column non-zero: t / d.
    tn_bnd33 = torch.zeros(*t_bn3.shape[:2], len(depth_d), 3, 3, dtype=t_bn3.dtype, device=t_bn3.device)
    tn_bnd33[..., 2] = t_bn3[:, :, None, :] / depth_d.to(t_bn3)[None, None, :, None]
    K_ref_inv_b33 = torch.linalg.inv(K_ref_b33)
    return K_src_bn33[:, :, None] @ (R_bn33[:, :, None] + tn_bnd33) @ K_ref_inv_b33[:, None, None]


@dataclass
class PlaneSweep:
    """Where every reference pixel of every plane lands in every source image.

    H_bnd33: (B, N, D, 3, 3) float64 homographies from reference to source pixels
        (`plane_homographies_bnd33`).
    depth_d: the plane depths in metres.
    height, width: the reference image size; src_height, src_width: the sources' (pixels).

    The sampling grids are computed on first use (`sample_grid_bndhw2`):
    grid_bndhw2: the source pixel in grid_sample's normalised coordinates (align_corners=True:
        -1 and +1 are the centres of the first and last pixels), clamped to [-2, 2], float32.
    valid_bndhw: True where the plane point is in front of the source camera and lands within
        the source's pixel centres [0, W_src - 1] x [0, H_src - 1].
    """

    H_bnd33: torch.Tensor
    depth_d: torch.Tensor
    height: int
    width: int
    src_height: int
    src_width: int

    @cached_property
    def _grid_and_valid(self) -> tuple[torch.Tensor, torch.Tensor]:
        return sample_grid_bndhw2(self.H_bnd33, self.height, self.width, self.src_height, self.src_width)

    @property
    def grid_bndhw2(self) -> torch.Tensor:
        return self._grid_and_valid[0]

    @property
    def valid_bndhw(self) -> torch.Tensor:
        return self._grid_and_valid[1]


def plane_sweep(
    K_ref_b33: torch.Tensor,
    K_src_bn33: torch.Tensor,
    src_T_ref_bn44: torch.Tensor,
    depth_d: torch.Tensor,
    height: int,
    width: int,
    src_height: int,
    src_width: int,
) -> PlaneSweep:
    """The plane homographies (float64) of a (height, width) reference image and
    (src_height, src_width) sources."""
    if K_ref_b33.shape[-2:] != (3, 3) or src_T_ref_bn44.dim() != 4 or src_T_ref_bn44.shape[-2:] != (4, 4):
        raise ValueError(
            f"expected K_ref (B, 3, 3) and src_T_ref (B, N, 4, 4), got {tuple(K_ref_b33.shape)} and "
            f"{tuple(src_T_ref_bn44.shape)}"
        )
    H_bnd33 = plane_homographies_bnd33(
        K_ref_b33.double(), K_src_bn33.double(), src_T_ref_bn44.double(), depth_d.double()
    )
    return PlaneSweep(H_bnd33, depth_d, height, width, src_height, src_width)


def sample_grid_bndhw2(
    H_bnd33: torch.Tensor, height: int, width: int, src_height: int, src_width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """grid_sample grids (B, N, D, H, W, 2) float32 and in-view masks (B, N, D, H, W) of the
    float64 homographies H_bnd33, by the exact arithmetic `mvs.sweep_kernels` repeats."""
    options = {"dtype": H_bnd33.dtype, "device": H_bnd33.device}
    u_1w, v_h1 = torch.arange(width, **options)[None], torch.arange(height, **options)[:, None]
    H_bnd3311 = H_bnd33[..., None, None]

    def row(i: int) -> torch.Tensor:
        """(H_i0 u + H_i1 v) + H_i2 for every pixel: (B, N, D, H, W)."""
        row_bndhw = H_bnd3311[..., i, 0, :, :] * u_1w + H_bnd3311[..., i, 1, :, :] * v_h1
        return row_bndhw.add_(H_bnd3311[..., i, 2, :, :])

    z_bndhw = row(2)
    valid_bndhw = z_bndhw > BEHIND_EPS
    z_bndhw.clamp_(min=BEHIND_EPS)
    grid_bndhw2 = torch.empty(*z_bndhw.shape, 2, dtype=torch.float32, device=H_bnd33.device)
    for axis, size in enumerate((src_width, src_height)):
        scale = pixel_to_grid_scale(size)
        g_bndhw = row(axis).div_(z_bndhw).mul_(scale).sub_(1.0).clamp_(-2.0, 2.0)
        grid_bndhw2[..., axis] = g_bndhw
        valid_bndhw &= g_bndhw.abs_() <= 1.0 + IN_VIEW_TOLERANCE_PX * scale
    return grid_bndhw2, valid_bndhw


def same_camera_sweep(
    K_b33: torch.Tensor, src_T_ref_bn44: torch.Tensor, depth_d: torch.Tensor, height: int, width: int
) -> PlaneSweep:
    """`plane_sweep` for sources that share the reference's intrinsics and resolution."""
    K_bn33 = K_b33[:, None].expand(-1, src_T_ref_bn44.shape[1], -1, -1)
    return plane_sweep(K_b33, K_bn33, src_T_ref_bn44, depth_d, height, width, height, width)


def warp_sources_bncdhw(src_bnchw: torch.Tensor, grid_bndhw2: torch.Tensor) -> torch.Tensor:
    """Source images or features (B, N, C, Hs, Ws) resampled on every plane: (B, N, C, D, H, W).

    Bilinear, border-padded (out-of-view samples must be masked with the grids' valid mask).
    """
    b, n, c, src_h, src_w = src_bnchw.shape
    _, _, d, h, w, _ = grid_bndhw2.shape
    src_Bchw = src_bnchw.reshape(b * n, c, src_h, src_w).contiguous(memory_format=torch.channels_last)
    warped_Bc_dh_w = F.grid_sample(
        src_Bchw,
        grid_bndhw2.reshape(b * n, d * h, w, 2).to(src_bnchw.dtype),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )
    return warped_Bc_dh_w.reshape(b, n, c, d, h, w)


def box_filter_bchw(x_bchw: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a `window` x `window` box per channel, over the pixels inside the image.

    A depthwise convolution (much faster than avg_pool2d on CPU): one square kernel for
    small windows, where the CPU's 3x3 and 5x5 paths win, a row then a column pass for
    windows above `SEPARABLE_BOX_WINDOW` (2 w instead of w^2 operations per pixel), on
    channels-last memory, where oneDNN's depthwise kernels run up to 3 times faster (the
    result stays channels-last; its values are the same).
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"box filter: expected an odd window >= 1, got {window}")
    if window == 1:
        return x_bchw
    x_bchw = x_bchw.contiguous(memory_format=torch.channels_last)
    c, pad = x_bchw.shape[1], window // 2
    ones_11hw = torch.ones_like(x_bchw[:1, :1])
    if window <= SEPARABLE_BOX_WINDOW:
        kernel_c1kk = torch.ones(c, 1, window, window, dtype=x_bchw.dtype, device=x_bchw.device)
        return F.conv2d(x_bchw, kernel_c1kk, padding=pad, groups=c) / F.conv2d(ones_11hw, kernel_c1kk[:1], padding=pad)
    row_c11k = torch.ones(c, 1, 1, window, dtype=x_bchw.dtype, device=x_bchw.device)

    def box_sum(y_bchw: torch.Tensor) -> torch.Tensor:
        channels = y_bchw.shape[1]
        rows_bchw = F.conv2d(y_bchw, row_c11k[:channels], padding=(0, pad), groups=channels)
        return F.conv2d(rows_bchw, row_c11k[:channels].transpose(2, 3), padding=(pad, 0), groups=channels)

    return box_sum(x_bchw) / box_sum(ones_11hw)


def box_mean_variance_bchw(x_bchw: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (clamped at 0) per channel over `window` x `window` boxes."""
    mean_bchw = box_filter_bchw(x_bchw, window)
    return mean_bchw, (box_filter_bchw(x_bchw * x_bchw, window) - mean_bchw**2).clamp(min=0.0)


def patch_moments_bchw(
    ref_b1hw: torch.Tensor, mean_ref_b1hw: torch.Tensor, warped_bchw: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Box mean and variance (clamped at 0) of every channel of `warped_bchw` and its
    covariance with the reference `ref_b1hw` (box mean `mean_ref_b1hw`), over `window` x
    `window` patches: the moments a ZNCC is made of. One box filter call serves all three."""
    c = warped_bchw.shape[1]
    products_bchw = torch.cat([warped_bchw, warped_bchw * warped_bchw, warped_bchw * ref_b1hw], dim=1)
    moments_bchw = box_filter_bchw(products_bchw, window)
    mean_bchw = moments_bchw[:, :c]
    variance_bchw = (moments_bchw[:, c : 2 * c] - mean_bchw**2).clamp(min=0.0)
    return mean_bchw, variance_bchw, moments_bchw[:, 2 * c :] - mean_bchw * mean_ref_b1hw


def _average_over_sources(cost_bndhw: torch.Tensor, sweep: PlaneSweep) -> CostVolume:
    valid_bndhw = sweep.valid_bndhw.to(cost_bndhw.dtype)
    count_bdhw = valid_bndhw.sum(dim=1)
    summed_bdhw = (cost_bndhw * valid_bndhw).sum(dim=1)
    cost_bdhw = torch.where(
        count_bdhw > 0, summed_bdhw / count_bdhw.clamp(min=1.0), torch.full_like(summed_bdhw, NEUTRAL_COST)
    )
    return CostVolume(cost_bdhw=cost_bdhw, valid_count_bdhw=count_bdhw, depth_d=sweep.depth_d)


def check_volume_inputs(ref_bchw: torch.Tensor, src_bnchw: torch.Tensor, sweep: PlaneSweep, channels: int) -> None:
    """Raise ValueError unless the reference (B, C, H, W) and sources (B, N, C, Hs, Ws) fit
    `sweep` and have `channels` channels (0: any number, the same for both)."""
    b, n = sweep.H_bnd33.shape[:2]
    c = channels or ref_bchw.shape[1]
    expected_ref, expected_src = (b, c, sweep.height, sweep.width), (b, n, c, sweep.src_height, sweep.src_width)
    if tuple(ref_bchw.shape) != expected_ref or tuple(src_bnchw.shape) != expected_src:
        raise ValueError(
            f"cost volume: expected a reference of shape {expected_ref} and sources of shape {expected_src} "
            f"for this sweep, got {tuple(ref_bchw.shape)} and {tuple(src_bnchw.shape)}"
        )


def fused_kernels_apply(*tensors: torch.Tensor) -> bool:
    """Whether the fused CPU kernels of `mvs.sweep_kernels` compute a volume of `tensors`:
    float32 on the CPU, with no gradient to propagate (the reference path, grid_sample,
    runs everywhere else: GPUs, training, other dtypes)."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return not needs_grad and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def kernel_array(x: torch.Tensor) -> np.ndarray:
    """A contiguous numpy view (or copy) of a CPU tensor, for the fused kernels."""
    return x.detach().contiguous().numpy()


def feature_cost_volume(ref_feat_bchw: torch.Tensor, src_feat_bnchw: torch.Tensor, sweep: PlaneSweep) -> CostVolume:
    """Cost 1 - cosine similarity of feature vectors (each pixel's C channels L2-normalised).

    ref_feat_bchw (B, C, H, W) and src_feat_bnchw (B, N, C, Hs, Ws) at the resolutions
    `sweep` was made for.
    """
    check_volume_inputs(ref_feat_bchw, src_feat_bnchw, sweep, channels=0)
    ref_unit_bchw, src_unit_bnchw = F.normalize(ref_feat_bchw, dim=1), F.normalize(src_feat_bnchw, dim=2)
    if not fused_kernels_apply(ref_unit_bchw, src_unit_bnchw):
        return feature_cost_volume_reference(ref_unit_bchw, src_unit_bnchw, sweep)
    b, d = ref_feat_bchw.shape[0], len(sweep.depth_d)
    cost_bdhw = torch.empty(b, d, sweep.height, sweep.width)
    count_bdhw = torch.empty_like(cost_bdhw)
    use_threads(torch.get_num_threads())
    feature_cost_kernel(
        kernel_array(ref_unit_bchw.permute(0, 2, 3, 1)),
        kernel_array(src_unit_bnchw.permute(0, 1, 3, 4, 2)),
        kernel_array(sweep.H_bnd33),
        NEUTRAL_COST,
        cost_bdhw.numpy(),
        count_bdhw.numpy(),
    )
    return CostVolume(cost_bdhw=cost_bdhw, valid_count_bdhw=count_bdhw, depth_d=sweep.depth_d)


def feature_cost_volume_reference(ref_unit_bchw: torch.Tensor, src_unit_bnchw: torch.Tensor, sweep: PlaneSweep) -> CostVolume:
    """`feature_cost_volume` of unit feature vectors by grid_sample (differentiable, any device)."""
    warped_bncdhw = warp_sources_bncdhw(src_unit_bnchw, sweep.grid_bndhw2)
    cost_bndhw = 1.0 - (warped_bncdhw * ref_unit_bchw[:, None, :, None]).sum(dim=2)
    return _average_over_sources(cost_bndhw, sweep)


def zncc_cost_volume(
    ref_grey_b1hw: torch.Tensor,
    src_grey_bn1hw: torch.Tensor,
    sweep: PlaneSweep,
    window: int = 5,
    variance_floor: float = 1e-4,
) -> CostVolume:
    """Cost 1 - ZNCC over `window` x `window` reference patches (invariant to gain and offset).

    Images are grey levels in [0, 1] at the resolutions `sweep` was made for.
    `variance_floor` (grey levels squared) pulls the correlation of flat patches to 0.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"ZNCC window: expected an odd size >= 1, got {window}")
    check_volume_inputs(ref_grey_b1hw, src_grey_bn1hw, sweep, channels=1)
    mean_ref_b1hw, var_ref_b1hw = box_mean_variance_bchw(ref_grey_b1hw, window)
    if not fused_kernels_apply(ref_grey_b1hw, src_grey_bn1hw):
        return zncc_cost_volume_reference(
            ref_grey_b1hw, mean_ref_b1hw, var_ref_b1hw, src_grey_bn1hw, sweep, window, variance_floor
        )
    b, d = ref_grey_b1hw.shape[0], len(sweep.depth_d)
    cost_bdhw = torch.empty(b, d, sweep.height, sweep.width)
    count_bdhw = torch.empty_like(cost_bdhw)
    use_threads(torch.get_num_threads())
    zncc_cost_kernel(
        *(kernel_array(x_b1hw[:, 0]) for x_b1hw in (ref_grey_b1hw, mean_ref_b1hw, var_ref_b1hw)),
        kernel_array(src_grey_bn1hw[:, :, 0]),
        kernel_array(sweep.H_bnd33),
        window,
        variance_floor,
        NEUTRAL_COST,
        cost_bdhw.numpy(),
        count_bdhw.numpy(),
    )
    return CostVolume(cost_bdhw=cost_bdhw, valid_count_bdhw=count_bdhw, depth_d=sweep.depth_d)


def zncc_cost_volume_reference(
    ref_grey_b1hw: torch.Tensor,
    mean_ref_b1hw: torch.Tensor,
    var_ref_b1hw: torch.Tensor,
    src_grey_bn1hw: torch.Tensor,
    sweep: PlaneSweep,
    window: int,
    variance_floor: float,
) -> CostVolume:
    """`zncc_cost_volume` by grid_sample and box filters (differentiable, any device), given
    the reference's box means and variances."""
    b, n, d, height, width = sweep.valid_bndhw.shape
    warped_bDhw = warp_sources_bncdhw(src_grey_bn1hw, sweep.grid_bndhw2).reshape(b, n * d, height, width)
    _, var_src_bDhw, covariance_bDhw = patch_moments_bchw(ref_grey_b1hw, mean_ref_b1hw, warped_bDhw, window)
    zncc_bDhw = covariance_bDhw * torch.rsqrt((var_ref_b1hw + variance_floor) * (var_src_bDhw + variance_floor))
    cost_bndhw = (1.0 - zncc_bDhw).reshape(b, n, d, height, width)
    return _average_over_sources(cost_bndhw, sweep)
