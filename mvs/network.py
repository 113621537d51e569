"""The learned cost-to-depth model: a matching feature encoder, plane-sweep cost volumes and
a small U-Net that turns costs, guided by the reference image's local contrast, into
inverse depth.

Input images are RGB in [0, 1] at the working resolution (H, W), both divisible by 4. The
learned-feature and a ZNCC cost volume live at (H/4, W/4); a second ZNCC volume over
larger patches at (H/2, W/2) carries the fine geometry; the same volume averaged over
wide windows, as a classic sweep aggregates its costs, anchors the finest depth to what
the images match (see `ModelConfig.aggregation_window`). Depth comes out as inverse depth
(1/metres) at 1/16, 1/8, 1/4 and 1/2 of the input resolution. The two coarse scales are
sigmoids squashed into [1/far, 1/near]; the two fine ones are expectations over the swept
planes (soft-argmin) of per-plane scores, so each plane's cost maps onto its own score and
the depth stays anchored to the geometry of the sweep. A confidence in [0, 1] comes at 1/2.

The reference image reaches the U-Net only as its local contrast (gain- and
offset-invariant, like ZNCC), which marks edges and texture for the regulariser; its raw
appearance is used for matching alone, so priors of the synthetic training rooms' looks
have no path to the depth.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mvs.costvolume import (
    box_filter_bchw,
    box_mean_variance_bchw,
    feature_cost_volume,
    inverse_depth_hypotheses_d,
    same_camera_sweep,
    zncc_cost_volume,
)

IMAGE_MEAN_3 = (0.45, 0.45, 0.45)
IMAGE_STD_3 = (0.25, 0.25, 0.25)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def resolve_weights_path(weights: str) -> Path:
    """A model named `weights` under mvs/weights/ (`depthnet` is the one shipped), or a
    path when `weights` ends in `.pt`."""
    return Path(weights) if weights.endswith(".pt") else WEIGHTS_DIR / f"{weights}.pt"


INITIAL_DEPTH_M = 2.0
"""Depth the untrained depth heads start at (their bias), a typical room distance."""

LOCAL_CONTRAST_FLOOR = 0.02**2
"""Variance (grey levels squared) below which a patch counts as flat in `local_contrast_b1hw`."""

INITIAL_COST_GAIN = 5.0
"""Plane scores per unit of matching cost (costs lie in [0, 2]) before training."""


@dataclass
class ModelConfig:
    """Architecture and plane sweep of the model (stored with its weights).

    near, far, num_hypotheses: planes uniform in inverse depth (metres).
    feature_channels: channels of the matching features correlated in the cost volume.
    zncc_window: patch size of the photometric ZNCC cost at 1/4 resolution (pixels).
    fine_zncc_window: patch size of the ZNCC cost at 1/2 resolution (pixels).
    widths: U-Net channels at 1/4, 1/8, 1/16 and 1/32 of the input resolution.
    reference_depth: the median depth (metres) of the scenes the model is made for: its
        training rooms are seen from 1-4 m and its sources chosen for a room at 2.3 m (the
        keyframe planner's `reference_depth`). `DepthNet.forward` shows it a scene of
        another depth at this one (see there).
    aggregation_window, aggregated_cost_gain: the 1/2-resolution ZNCC costs averaged over
        `aggregation_window` x `aggregation_window` pixels (a box at 1/2 resolution) enter
        the finest plane scores times this fixed gain. Costs pooled over large patches are
        the part of the evidence that transfers from synthetic training rooms to real ones
        (they are what a classic sweep's winner-take-all relies on); the network's learned
        corrections add to them instead of replacing them. 0 turns the term off.
    """

    near: float = 0.25
    far: float = 20.0
    num_hypotheses: int = 64
    feature_channels: int = 16
    zncc_window: int = 3
    fine_zncc_window: int = 5
    widths: tuple[int, int, int, int] = (48, 64, 96, 128)
    aggregation_window: int = 25
    aggregated_cost_gain: float = 40.0
    reference_depth: float = 2.3


@dataclass
class ModelOutput:
    """What the model predicts for a batch of references.

    inverse_depths_b1hw: inverse depth (1/metres) from coarse to fine, at 1/16, 1/8, 1/4
        and 1/2 of the input resolution.
    confidence_b1hw: at 1/2 of the input resolution, in [0, 1].
    """

    inverse_depths_b1hw: list[torch.Tensor]
    confidence_b1hw: torch.Tensor

    def depth_b1hw(self, height: int, width: int) -> torch.Tensor:
        """The finest inverse depth resized (bilinear) to (height, width), as depth in metres."""
        inverse_b1hw = F.interpolate(
            self.inverse_depths_b1hw[-1], size=(height, width), mode="bilinear", align_corners=False
        )
        return 1.0 / inverse_b1hw

    def confidence_resized_b1hw(self, height: int, width: int) -> torch.Tensor:
        """The confidence resized (bilinear) to (height, width)."""
        return F.interpolate(self.confidence_b1hw, size=(height, width), mode="bilinear", align_corners=False)


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Convolution, batch norm, ReLU. Stride 2 uses a 4x4 kernel so that output pixel i is
    centred on input 2i + 0.5, the pixel-centre convention of bilinear resizing."""
    kernel = 4 if stride == 2 else 3
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FeatureEncoder(nn.Module):
    """Image (B, 3, H, W) to matching features (B, `feature_channels`, H/4, W/4)."""

    def __init__(self, feature_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            conv_block(3, 16, stride=2),
            conv_block(16, 16),
            conv_block(16, 32, stride=2),
            conv_block(32, 32),
            conv_block(32, 32),
            nn.Conv2d(32, feature_channels, 1),
        )

    def forward(self, image_b3hw: torch.Tensor) -> torch.Tensor:
        return self.layers(image_b3hw)


def local_contrast_b1hw(grey_b1hw: torch.Tensor, window: int, floor: float = LOCAL_CONTRAST_FLOOR) -> torch.Tensor:
    """Grey levels standardised over `window` x `window` patches: (I - mean) / sqrt(var + floor).

    Invariant to gain and offset like the ZNCC cost, so it shows the network where edges
    and texture are without the appearance of the rooms it was trained on.
    """
    mean_b1hw, var_b1hw = box_mean_variance_bchw(grey_b1hw, window)
    return (grey_b1hw - mean_b1hw) * torch.rsqrt(var_b1hw + floor)


class UpBlock(nn.Module):
    """Upsample to the skip's size, concatenate the skip, two 3x3 convolutions."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(
            conv_block(in_channels + skip_channels, out_channels), conv_block(out_channels, out_channels)
        )

    def forward(self, x_bchw: torch.Tensor, skip_bchw: torch.Tensor) -> torch.Tensor:
        up_bchw = F.interpolate(x_bchw, size=skip_bchw.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([up_bchw, skip_bchw], dim=1))


def soft_argmin_inverse_b1hw(scores_bdhw: torch.Tensor, depth_d: torch.Tensor) -> torch.Tensor:
    """Expected inverse depth (1/metres) under softmax(scores) over the planes at `depth_d`."""
    probability_bdhw = torch.softmax(scores_bdhw, dim=1)
    return (probability_bdhw * (1.0 / depth_d)[None, :, None, None]).sum(dim=1, keepdim=True)


class DepthNet(nn.Module):
    """Plane-sweep stereo network (see the module docstring for inputs and outputs)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.num_hypotheses
        w0, w1, w2, w3 = config.widths
        self.encoder = FeatureEncoder(config.feature_channels)
        self.stem = nn.Sequential(conv_block(2 * d + 1, w0), conv_block(w0, w0))
        self.down1 = nn.Sequential(conv_block(w0, w1, stride=2), conv_block(w1, w1))
        self.down2 = nn.Sequential(conv_block(w1, w2, stride=2), conv_block(w2, w2))
        self.down3 = nn.Sequential(conv_block(w2, w3, stride=2), conv_block(w3, w3))
        self.up2 = UpBlock(w3, w2, w2)
        self.up1 = UpBlock(w2, w1, w1)
        self.up0 = UpBlock(w1, w0, w0)
        self.fine_cost_squeeze = nn.Sequential(nn.Conv2d(d, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.up_half = UpBlock(w0, 17, 32)
        self.coarse_heads = nn.ModuleList([nn.Conv2d(c, 1, 3, padding=1) for c in (w2, w1)])
        self.quarter_scores = nn.Conv2d(w0, d, 3, padding=1)
        self.half_scores = nn.Conv2d(32, d, 3, padding=1)
        self.confidence_head = nn.Conv2d(32, 1, 3, padding=1)
        # Scores start as the negated costs times these gains, the network adding its corrections.
        self.cost_gain = nn.Parameter(torch.tensor(INITIAL_COST_GAIN))
        self.fine_cost_gain = nn.Parameter(torch.tensor(INITIAL_COST_GAIN))
        for head in self.coarse_heads:
            nn.init.constant_(head.bias, self.inverse_depth_logit(INITIAL_DEPTH_M))
        # The half-resolution scores refine the upsampled quarter-resolution ones: start at no change.
        nn.init.zeros_(self.half_scores.weight)
        nn.init.zeros_(self.half_scores.bias)
        self.register_buffer("image_mean_3", torch.tensor(IMAGE_MEAN_3), persistent=False)
        self.register_buffer("image_std_3", torch.tensor(IMAGE_STD_3), persistent=False)

    def depth_hypotheses_d(self, device: torch.device) -> torch.Tensor:
        """(D,) plane depths in metres the model sweeps."""
        return inverse_depth_hypotheses_d(self.config.near, self.config.far, self.config.num_hypotheses, device)

    def inverse_depth_logit(self, depth: float) -> float:
        """The logit that `to_inverse_depth` maps to 1 / `depth` (metres)."""
        lo, hi = 1.0 / self.config.far, 1.0 / self.config.near
        share = min(max((1.0 / depth - lo) / (hi - lo), 1e-4), 1 - 1e-4)
        return math.log(share / (1.0 - share))

    def to_inverse_depth(self, logit_b1hw: torch.Tensor) -> torch.Tensor:
        """Sigmoid of a logit mapped linearly onto [1/far, 1/near] (1/metres)."""
        lo, hi = 1.0 / self.config.far, 1.0 / self.config.near
        return lo + (hi - lo) * torch.sigmoid(logit_b1hw)

    def forward(
        self,
        ref_image_b3hw: torch.Tensor,
        src_images_bn3hw: torch.Tensor,
        K_b33: torch.Tensor,
        src_T_ref_bn44: torch.Tensor,
        scene_depth: float | None = None,
    ) -> ModelOutput:
        """ref_image_b3hw and src_images_bn3hw: RGB in [0, 1] at (H, W); K_b33: intrinsics at
        (H, W) in pixels; src_T_ref_bn44: reference-to-source transforms (metres).

        scene_depth: the scene's median depth (metres, or the poses' units). Images fix a
        scene only up to scale with its poses: a desk at 0.4 m seen from 4 cm apart looks
        exactly like a room at 2.3 m seen from 23 cm apart. The sweep runs at that scale,
        the translations times `config.reference_depth / scene_depth`, so the model meets
        the depths and baselines it was trained on, and the depths come back in the poses'
        units. None: the poses' units as they are."""
        scale = 1.0 if scene_depth is None else scene_depth / self.config.reference_depth
        if not scale > 0:
            raise ValueError(f"scene_depth: expected a positive depth, got {scene_depth}")
        if scale != 1.0:
            src_T_ref_bn44 = src_T_ref_bn44.clone()
            src_T_ref_bn44[..., :3, 3] /= scale
        b, n, _, h, w = src_images_bn3hw.shape
        if h % 4 or w % 4 or ref_image_b3hw.shape[-2:] != (h, w):
            raise ValueError(
                f"expected reference and source images of one size divisible by 4, got "
                f"{tuple(ref_image_b3hw.shape[-2:])} and {(h, w)}"
            )
        images_b3hw = torch.cat([ref_image_b3hw[:, None], src_images_bn3hw], dim=1).reshape(b * (n + 1), 3, h, w)
        normalised_b3hw = (images_b3hw - self.image_mean_3[:, None, None]) / self.image_std_3[:, None, None]
        matching_bchw = self.encoder(normalised_b3hw)
        matching_bnchw = matching_bchw.reshape(b, n + 1, *matching_bchw.shape[1:])
        depth_d = self.depth_hypotheses_d(ref_image_b3hw.device)
        sweep = same_camera_sweep(scale_intrinsics_b33(K_b33, 0.25), src_T_ref_bn44, depth_d, h // 4, w // 4)
        feature_cost = feature_cost_volume(matching_bnchw[:, 0], matching_bnchw[:, 1:], sweep)
        grey_half_b1hw = F.avg_pool2d(images_b3hw.mean(dim=1, keepdim=True), 2)
        grey_half_bn1hw = grey_half_b1hw.reshape(b, n + 1, 1, h // 2, w // 2)
        grey_bn1hw = F.avg_pool2d(grey_half_b1hw, 2).reshape(b, n + 1, 1, h // 4, w // 4)
        zncc_cost = zncc_cost_volume(grey_bn1hw[:, 0], grey_bn1hw[:, 1:], sweep, self.config.zncc_window)
        half_sweep = same_camera_sweep(scale_intrinsics_b33(K_b33, 0.5), src_T_ref_bn44, depth_d, h // 2, w // 2)
        fine_cost = zncc_cost_volume(
            grey_half_bn1hw[:, 0], grey_half_bn1hw[:, 1:], half_sweep, self.config.fine_zncc_window
        )
        contrast_quarter_b1hw = local_contrast_b1hw(grey_bn1hw[:, 0], self.config.zncc_window)
        contrast_half_b1hw = local_contrast_b1hw(grey_half_bn1hw[:, 0], self.config.fine_zncc_window)
        x0 = self.stem(torch.cat([feature_cost.cost_bdhw, zncc_cost.cost_bdhw, contrast_quarter_b1hw], dim=1))
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        y2 = self.up2(x3, x2)
        y1 = self.up1(y2, x1)
        y0 = self.up0(y1, x0)
        quarter_cost_bdhw = 0.5 * (feature_cost.cost_bdhw + zncc_cost.cost_bdhw)
        scores_quarter_bdhw = self.quarter_scores(y0) - self.cost_gain * quarter_cost_bdhw
        y_half = self.up_half(y0, torch.cat([contrast_half_b1hw, self.fine_cost_squeeze(fine_cost.cost_bdhw)], dim=1))
        scores_half_bdhw = (
            self.half_scores(y_half)
            - self.fine_cost_gain * fine_cost.cost_bdhw
            + F.interpolate(scores_quarter_bdhw, size=(h // 2, w // 2), mode="bilinear", align_corners=False)
        )
        if self.config.aggregated_cost_gain > 0:
            aggregated_bdhw = box_filter_bchw(fine_cost.cost_bdhw, self.config.aggregation_window)
            scores_half_bdhw = scores_half_bdhw - self.config.aggregated_cost_gain * aggregated_bdhw
        coarse_b1hw = [self.to_inverse_depth(head(y)) for head, y in zip(self.coarse_heads, (y2, y1))]
        fine_b1hw = [soft_argmin_inverse_b1hw(scores, depth_d) for scores in (scores_quarter_bdhw, scores_half_bdhw)]
        return ModelOutput(
            inverse_depths_b1hw=[inverse_b1hw / scale for inverse_b1hw in coarse_b1hw + fine_b1hw],
            confidence_b1hw=torch.sigmoid(self.confidence_head(y_half)),
        )


def scale_intrinsics_b33(K_b33: torch.Tensor, factor: float) -> torch.Tensor:
    """Intrinsics of images resized by `factor`, pixel centres at integers."""
    K_scaled_b33 = K_b33.clone()
    K_scaled_b33[:, :2, :2] *= factor
    K_scaled_b33[:, :2, 2] = (K_b33[:, :2, 2] + 0.5) * factor - 0.5
    return K_scaled_b33


def save_model(
    path: Path, model: DepthNet, training_config: dict[str, Any], validation: dict[str, float]
) -> None:
    """Write the state_dict, model config, training config and validation metrics.

    Everything stored is a tensor or a plain type, so `load_model` can use weights_only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": dataclasses.asdict(model.config),
        "training_config": training_config,
        "validation": validation,
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    partial.replace(path)


@dataclass
class LoadedModel:
    """A model read by `load_model`, in eval mode and channels-last memory layout, with what
    was stored alongside it."""

    model: DepthNet
    training_config: dict[str, Any]
    validation: dict[str, float]


def load_model(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Read a file written by `save_model` (torch.load with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model weights not found; train some with `python -m mvs.train --name NAME`")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    stored = payload["model_config"]
    config = ModelConfig(**{**stored, "widths": tuple(stored["widths"])})
    model = DepthNet(config)
    model.load_state_dict(payload["state_dict"])
    # Convolutions in NHWC run about 1.4x faster than in NCHW on the CPU (oneDNN), as on GPUs.
    model.to(device, memory_format=torch.channels_last).eval()
    return LoadedModel(model=model, training_config=payload["training_config"], validation=payload["validation"])
