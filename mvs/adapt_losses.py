"""Self-supervised losses for depth from posed images alone (no depth ground truth).

- Photometric reprojection (Monodepth2, Godard et al. 2019): the reference image is
  rebuilt from each source image through the predicted depth and the known poses; the
  error is 0.85 (1 - SSIM) / 2 + 0.15 |I - I'| (colours in [0, 1]), minimum over the
  sources per pixel (a pixel occluded in one source is seen in another), auto-masked:
  where an unwarped source already matches the reference better than any warped one
  (no parallax, a static camera, a flat region), the pixel teaches nothing.
- Edge-aware smoothness of mean-normalised inverse depth: gradients of 1/depth divided
  by its mean, down-weighted by exp(-|image gradient|).
- Depth consistency between neighbouring keyframes (Bian et al. 2019): one keyframe's
  depth is carried into the other's camera and compared with that keyframe's own depth,
  |z - z'| / (z + z').

Conventions: depths in metres (z along the optical axis), images RGB in [0, 1], pixel
centres at integers, `src_T_ref_44` maps reference-camera points into a source camera;
every image of one call shares the intrinsics `K_33` at its resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mvs.local_sweep import pixel_rays_3hw, warp_by_depth_nkhw

SSIM_WEIGHT = 0.85
"""Weight of the SSIM dissimilarity in the photometric error; L1 takes the rest (Monodepth2)."""

SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
UNSEEN_ERROR = 1e3
"""Photometric error given to a source sample outside the source image (never the minimum
while another source sees the pixel)."""


def ssim_dissimilarity_b3hw(x_b3hw: torch.Tensor, y_b3hw: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 per pixel and channel, in [0, 1], over 3x3 patches (reflection padded)."""
    x_pad, y_pad = F.pad(x_b3hw, (1, 1, 1, 1), mode="reflect"), F.pad(y_b3hw, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x_pad, 3, 1), F.avg_pool2d(y_pad, 3, 1)
    sigma_x = F.avg_pool2d(x_pad * x_pad, 3, 1) - mu_x**2
    sigma_y = F.avg_pool2d(y_pad * y_pad, 3, 1) - mu_y**2
    sigma_xy = F.avg_pool2d(x_pad * y_pad, 3, 1) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + SSIM_C1) * (2 * sigma_xy + SSIM_C2)
    denominator = (mu_x**2 + mu_y**2 + SSIM_C1) * (sigma_x + sigma_y + SSIM_C2)
    return ((1 - numerator / denominator) / 2).clamp(0, 1)


def photometric_error_b1hw(target_b3hw: torch.Tensor, image_b3hw: torch.Tensor) -> torch.Tensor:
    """0.85 (1 - SSIM) / 2 + 0.15 |target - image|, averaged over the colour channels."""
    l1_b1hw = (target_b3hw - image_b3hw).abs().mean(dim=1, keepdim=True)
    ssim_b1hw = ssim_dissimilarity_b3hw(target_b3hw, image_b3hw).mean(dim=1, keepdim=True)
    return SSIM_WEIGHT * ssim_b1hw + (1 - SSIM_WEIGHT) * l1_b1hw


def warp_sources_bn3hw(
    src_images_bn3hw: torch.Tensor, depth_b1hw: torch.Tensor, K_b33: torch.Tensor, src_T_ref_bn44: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each source image resampled (bilinear) at the pixels where the reference pixels land
    at `depth_b1hw` (metres): the reference as each source sees it, (B, N, 3, H, W), and
    whether the pixel lands inside the source in front of its camera, (B, N, 1, H, W).
    Differentiable with respect to the depth."""
    b, n, c, h, w = src_images_bn3hw.shape
    warped, inside = [], []
    for i in range(b):
        # Every colour channel is warped as a one-channel image with its source's pose.
        channels_Q1hw = src_images_bn3hw[i].reshape(n * c, 1, h, w)
        poses_Q44 = src_T_ref_bn44[i].repeat_interleave(c, dim=0)
        warped_Q1hw, inside_Q1hw = warp_by_depth_nkhw(
            channels_Q1hw, depth_b1hw[i], pixel_rays_3hw(K_b33[i], h, w), K_b33[i], poses_Q44
        )
        warped.append(warped_Q1hw.reshape(n, c, h, w))
        inside.append(inside_Q1hw.reshape(n, c, h, w)[:, :1])
    return torch.stack(warped), torch.stack(inside)


@dataclass
class PhotometricLoss:
    """loss: mean over the pixels some source sees of the per-pixel error (the minimum over
    the sources, or the unwarped one where auto-masked); error_b1hw: that per-pixel error;
    kept_b1hw: pixels whose warped error beat every unwarped one (not auto-masked);
    seen_b1hw: pixels that land inside at least one source."""

    loss: torch.Tensor
    error_b1hw: torch.Tensor
    kept_b1hw: torch.Tensor
    seen_b1hw: torch.Tensor


def photometric_loss(
    ref_image_b3hw: torch.Tensor,
    src_images_bn3hw: torch.Tensor,
    depth_b1hw: torch.Tensor,
    K_b33: torch.Tensor,
    src_T_ref_bn44: torch.Tensor,
    automask: bool = True,
) -> PhotometricLoss:
    """Photometric reprojection loss of a reference depth (metres) against N posed sources
    (see the module docstring); images RGB in [0, 1] at the depth's resolution, `K_b33`
    in pixels at that resolution."""
    if src_images_bn3hw.shape[-2:] != depth_b1hw.shape[-2:] or ref_image_b3hw.shape[-2:] != depth_b1hw.shape[-2:]:
        raise ValueError(
            f"photometric loss: expected images of the depth's size {tuple(depth_b1hw.shape[-2:])}, got "
            f"{tuple(ref_image_b3hw.shape[-2:])} and {tuple(src_images_bn3hw.shape[-2:])}"
        )
    b, n = src_images_bn3hw.shape[:2]
    warped_bn3hw, inside_bn1hw = warp_sources_bn3hw(src_images_bn3hw, depth_b1hw, K_b33, src_T_ref_bn44)
    errors_bn1hw = torch.stack([photometric_error_b1hw(ref_image_b3hw, warped_bn3hw[:, k]) for k in range(n)], dim=1)
    errors_bn1hw = torch.where(inside_bn1hw, errors_bn1hw, torch.full_like(errors_bn1hw, UNSEEN_ERROR))
    warped_error_b1hw = errors_bn1hw.min(dim=1).values
    seen_b1hw = inside_bn1hw.any(dim=1)
    error_b1hw = warped_error_b1hw
    kept_b1hw = seen_b1hw
    if automask:
        with torch.no_grad():
            identity_b1hw = torch.stack(
                [photometric_error_b1hw(ref_image_b3hw, src_images_bn3hw[:, k]) for k in range(n)], dim=1
            ).min(dim=1).values
        kept_b1hw = seen_b1hw & (warped_error_b1hw.detach() < identity_b1hw)
        error_b1hw = torch.where(kept_b1hw, warped_error_b1hw, identity_b1hw)
    loss = torch.where(seen_b1hw, error_b1hw, torch.zeros_like(error_b1hw)).sum() / seen_b1hw.sum().clamp(min=1)
    return PhotometricLoss(loss=loss, error_b1hw=error_b1hw, kept_b1hw=kept_b1hw, seen_b1hw=seen_b1hw)


def smoothness_loss(inverse_depth_b1hw: torch.Tensor, image_b3hw: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness: mean |d/dx D| exp(-|d/dx I|) + |d/dy D| exp(-|d/dy I|) of the
    inverse depth D (1/metres) divided by its per-image mean (so the loss has no units and
    does not favour shrinking the depth), I the image (RGB in [0, 1], channel mean of the
    gradient magnitude), both at one resolution."""
    normalised_b1hw = inverse_depth_b1hw / inverse_depth_b1hw.mean(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    grad_x = (normalised_b1hw[..., :, 1:] - normalised_b1hw[..., :, :-1]).abs()
    grad_y = (normalised_b1hw[..., 1:, :] - normalised_b1hw[..., :-1, :]).abs()
    image_x = (image_b3hw[..., :, 1:] - image_b3hw[..., :, :-1]).abs().mean(dim=1, keepdim=True)
    image_y = (image_b3hw[..., 1:, :] - image_b3hw[..., :-1, :]).abs().mean(dim=1, keepdim=True)
    return (grad_x * torch.exp(-image_x)).mean() + (grad_y * torch.exp(-image_y)).mean()


def depth_consistency_loss(
    depth_a_b1hw: torch.Tensor, depth_b_b1hw: torch.Tensor, K_b33: torch.Tensor, b_T_a_b44: torch.Tensor
) -> torch.Tensor:
    """Mean |z - z'| / (z + z') over the pixels of keyframe a that land inside keyframe b:
    z is the depth (metres) in b's camera of a's pixel back-projected at `depth_a`, z' the
    depth b itself predicts there (bilinear). 0 when both depths describe one surface;
    `b_T_a_b44` maps a's camera points into b's."""
    b, _, h, w = depth_a_b1hw.shape
    differences = []
    for i in range(b):
        rays_3hw = pixel_rays_3hw(K_b33[i], h, w)
        sampled_11hw, inside_11hw = warp_by_depth_nkhw(
            depth_b_b1hw[i : i + 1], depth_a_b1hw[i], rays_3hw, K_b33[i], b_T_a_b44[i : i + 1]
        )
        # z of the point d r in b's camera: the third row of R (d r) + t.
        z_hw = (b_T_a_b44[i, 2, :3] @ rays_3hw.reshape(3, -1)).reshape(h, w) * depth_a_b1hw[i, 0] + b_T_a_b44[i, 2, 3]
        difference_hw = (z_hw - sampled_11hw[0, 0]).abs() / (z_hw + sampled_11hw[0, 0]).clamp(min=1e-6)
        differences.append(difference_hw[inside_11hw[0, 0]])
    kept = torch.cat(differences)
    return kept.mean() if kept.numel() else depth_a_b1hw.new_zeros(())
