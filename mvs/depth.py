"""Depth estimators the pipeline calls: a plane sweep with a classic or a learned regressor.

Each estimator takes a reference frame, source frames and the sequence camera; frames
carry `world_T_cam_44` (camera-to-world, metres), the poses to sweep with. Inputs are
resized to the working resolution, depth is estimated there and brought back to the input
resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import torch

from mvs.config import DepthConfig
from mvs.costvolume import inverse_depth_hypotheses_d, same_camera_sweep, zncc_cost_volume
from mvs.geometry import invert_pose_44
from mvs.local_sweep import local_sweep
from mvs.network import load_model, resolve_weights_path
from mvs.regressors import classic_regress
from mvs.types import Camera, Frame

MAX_SOURCES = 7


@dataclass
class DepthResult:
    """Depth of a reference frame at the input resolution.

    depth_hw: float32 z-depth in metres in the reference camera, 0 where no estimate.
    confidence_hw: float32 in [0, 1], higher is more trustworthy.
    """

    depth_hw: np.ndarray
    confidence_hw: np.ndarray


class DepthEstimator(Protocol):
    """Anything that turns a reference frame and posed source frames into depth."""

    def estimate(self, reference: Frame, sources: list[Frame], camera: Camera) -> DepthResult: ...


@dataclass
class SweepInputs:
    """Frames as tensors at one resolution, batch of one.

    ref_image_b3hw: RGB in [0, 1]; src_images_bn3hw: (1, N, 3, H, W) likewise;
    K_b33: intrinsics at this resolution (pixels); src_T_ref_bn44: reference-to-source.
    """

    ref_image_b3hw: torch.Tensor
    src_images_bn3hw: torch.Tensor
    K_b33: torch.Tensor
    src_T_ref_bn44: torch.Tensor


def prepare_inputs(
    reference: Frame, sources: list[Frame], camera: Camera, width: int, height: int, device: torch.device
) -> SweepInputs:
    """Resize the frames to `width` x `height` and pair them with the relative poses."""
    if not 1 <= len(sources) <= MAX_SOURCES:
        raise ValueError(f"expected 1..{MAX_SOURCES} source frames, got {len(sources)}")
    for frame in [reference, *sources]:
        if frame.world_T_cam_44 is None:
            raise ValueError(f"frame {frame.index}: expected a world_T_cam_44 pose to sweep with, got None")
        if frame.image_hw3.shape != (camera.height, camera.width, 3):
            raise ValueError(
                f"frame {frame.index}: expected an image of {camera.height}x{camera.width}x3, "
                f"got {frame.image_hw3.shape}"
            )
    def image_3hw(frame: Frame) -> torch.Tensor:
        resized_hw3 = cv2.resize(frame.image_hw3, (width, height), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(resized_hw3).permute(2, 0, 1).float() / 255.0

    src_T_ref_n44 = np.stack([invert_pose_44(s.world_T_cam_44) @ reference.world_T_cam_44 for s in sources])
    return SweepInputs(
        ref_image_b3hw=image_3hw(reference)[None].to(device),
        src_images_bn3hw=torch.stack([image_3hw(s) for s in sources])[None].to(device),
        K_b33=torch.from_numpy(camera.scaled(width, height).K_33).float()[None].to(device),
        src_T_ref_bn44=torch.from_numpy(src_T_ref_n44).float()[None].to(device),
    )


def upsample_result(depth_hw: np.ndarray, confidence_hw: np.ndarray, width: int, height: int) -> DepthResult:
    """Bring depth to `width` x `height`: bilinear in inverse depth, normalised by the
    bilinear weight of valid pixels so no depth is blended with empty pixels; pixels whose
    nearest source pixel is empty stay empty."""
    valid_hw = (depth_hw > 0).astype(np.float32)
    inverse_hw = np.where(depth_hw > 0, 1.0 / np.maximum(depth_hw, 1e-6), 0.0).astype(np.float32)
    size = (width, height)
    inverse_sum_hw = cv2.resize(inverse_hw, size, interpolation=cv2.INTER_LINEAR)
    weight_hw = cv2.resize(valid_hw, size, interpolation=cv2.INTER_LINEAR)
    keep_hw = cv2.resize(valid_hw, size, interpolation=cv2.INTER_NEAREST) > 0
    upsampled_hw = np.zeros((height, width), dtype=np.float32)
    upsampled_hw[keep_hw] = weight_hw[keep_hw] / inverse_sum_hw[keep_hw]
    confidence_up_hw = cv2.resize(confidence_hw.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return DepthResult(depth_hw=upsampled_hw, confidence_hw=confidence_up_hw)


def grey_b1hw(image_b3hw: torch.Tensor) -> torch.Tensor:
    weights_3 = torch.tensor([0.299, 0.587, 0.114], dtype=image_b3hw.dtype, device=image_b3hw.device)
    return (image_b3hw * weights_3[:, None, None]).sum(dim=-3, keepdim=True)


class ClassicDepthEstimator:
    """ZNCC plane sweep with the winner-take-all regressor of `mvs.regressors`."""

    def __init__(self, config: DepthConfig, device: str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)

    @torch.no_grad()
    def estimate(self, reference: Frame, sources: list[Frame], camera: Camera) -> DepthResult:
        """Depth of `reference` (see `DepthResult`) from 1..7 posed `sources`."""
        c = self.config
        width, height = c.working_width // c.classic_downscale, c.working_height // c.classic_downscale
        inputs = prepare_inputs(reference, sources, camera, width, height, self.device)
        depth_d = inverse_depth_hypotheses_d(
            self.config.near, self.config.far, c.num_hypotheses, self.device
        )
        sweep = same_camera_sweep(inputs.K_b33, inputs.src_T_ref_bn44, depth_d, height, width)
        cost_volume = zncc_cost_volume(
            grey_b1hw(inputs.ref_image_b3hw), grey_b1hw(inputs.src_images_bn3hw), sweep, c.zncc_window
        )
        prediction = classic_regress(cost_volume, inputs.ref_image_b3hw, c.classic)
        return upsample_result(
            prediction.depth_b1hw[0, 0].cpu().numpy(),
            prediction.confidence_b1hw[0, 0].cpu().numpy(),
            camera.width,
            camera.height,
        )


class LearnedDepthEstimator:
    """Plane sweep with the learned regressor of `mvs.network`, loaded from `config.weights`.

    The model sweeps its own trained hypotheses (near, far, count stored with the weights)
    over the scene brought to the depth it was made for (`DepthNet.forward`, the scene's
    median depth `config.keyframe.scene_depth`, which a run estimates from the scene);
    depths outside DepthConfig's [near, far] and pixels below `learned_min_confidence` (the
    network's confidence) get no estimate. Unless `local_sweep.steps` is 0, the depth is then
    refined by `mvs.local_sweep` and its confidence is the ZNCC correlation that confirmed
    it (0 where unconfirmed, which the pipeline does not fuse); otherwise the confidence is
    the network's.
    """

    def __init__(self, config: DepthConfig, device: str = "cpu") -> None:
        self.config = config
        if self.config.working_width % 4 or self.config.working_height % 4:
            raise ValueError(
                f"working size: expected width and height divisible by 4, got "
                f"{self.config.working_width}x{self.config.working_height}"
            )
        self.device = torch.device(device)
        self.model = load_model(resolve_weights_path(config.weights), self.device).model

    @torch.no_grad()
    def estimate(self, reference: Frame, sources: list[Frame], camera: Camera) -> DepthResult:
        """Depth of `reference` (see `DepthResult`) from 1..7 posed `sources`."""
        c = self.config
        inputs = prepare_inputs(reference, sources, camera, c.working_width, c.working_height, self.device)
        output = self.model(
            inputs.ref_image_b3hw, inputs.src_images_bn3hw, inputs.K_b33, inputs.src_T_ref_bn44, c.keyframe.scene_depth
        )
        depth_hw = output.depth_b1hw(c.working_height, c.working_width)[0, 0]
        network_confidence_hw = output.confidence_resized_b1hw(c.working_height, c.working_width)[0, 0]
        keep_hw = (
            (depth_hw >= self.config.near)
            & (depth_hw <= self.config.far)
            & (network_confidence_hw >= c.learned_min_confidence)
        )
        depth_hw = torch.where(keep_hw, depth_hw, torch.zeros_like(depth_hw))
        confidence_hw = network_confidence_hw
        if c.local_sweep.steps > 0:
            refined = local_sweep(
                depth_hw,
                grey_b1hw(inputs.ref_image_b3hw)[0],
                grey_b1hw(inputs.src_images_bn3hw)[0],
                inputs.K_b33[0],
                inputs.src_T_ref_bn44[0],
                c.local_sweep,
            )
            refined_hw = refined.depth_b1hw[0, 0]
            in_range_hw = (refined_hw >= c.near) & (refined_hw <= c.far)
            depth_hw = torch.where(in_range_hw, refined_hw, torch.zeros_like(depth_hw))
            confidence_hw = refined.correlation_b1hw[0, 0]
        return upsample_result(depth_hw.cpu().numpy(), confidence_hw.cpu().numpy(), camera.width, camera.height)
