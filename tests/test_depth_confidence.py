"""Where the cost volume has no clear minimum, learned depth is not fused.

A textured plane facing the cameras at a known depth carries a blank (one flat colour)
rectangle, and the source, moved sideways, does not see a strip at the reference's left
edge. With the shipped model and default settings, most textured pixels the source sees
keep a correct depth, while most blank and unseen pixels get no depth or a confidence the
pipeline does not fuse (`fuse_min_confidence`). The network's own confidence is lower where
the source sees nothing (on the blank rectangle it may fill in the depth of the plane
around it, rightly, so its confidence there is not asked to be low).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from mvs.config import DepthConfig
from mvs.depth import LearnedDepthEstimator
from mvs.geometry import make_pose_44
from mvs.types import Camera, Frame

WIDTH, HEIGHT, FOCAL = 320, 240, 262.5
CAMERA = Camera(np.array([[FOCAL, 0, (WIDTH - 1) / 2], [0, FOCAL, (HEIGHT - 1) / 2], [0, 0, 1.0]]), WIDTH, HEIGHT)
TEXTURE_PX_PER_UNIT = 500.0
"""Texture pixels per unit of plane coordinate (the plane's X / Z, Y / Z at the reference)."""
BLANK_CENTRE_2, BLANK_HALF_2 = np.array([0.15, 0.0]), np.array([0.175, 0.15])
"""The blank rectangle in plane coordinates (X / Z, Y / Z)."""
BASELINE_SHARE = 0.2
"""The source sits BASELINE_SHARE * Z to the right of the reference."""


def texture_hw() -> np.ndarray:
    """Smooth random grey texture in [0.2, 0.8] (three octaves of cubic-interpolated noise)."""
    rng = np.random.default_rng(0)
    size_hw = (1500, 2000)
    texture_hw = np.zeros(size_hw, np.float32)
    for cell in (4, 16, 64):
        noise_hw = rng.uniform(0, 1, (size_hw[0] // cell + 2, size_hw[1] // cell + 2)).astype(np.float32)
        texture_hw += cv2.resize(noise_hw, size_hw[::-1], interpolation=cv2.INTER_CUBIC) / 3
    return 0.2 + 0.6 * np.clip(texture_hw, 0, 1)


def plane_coordinates_hw2(camera_x: float, depth: float) -> np.ndarray:
    """(H, W, 2) plane coordinates (X / depth, Y / depth in the reference frame) each pixel of
    a camera at (camera_x, 0, 0), looking down +z like the reference, sees on the plane z = depth."""
    v_hw, u_hw = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    return np.stack([camera_x / depth + (u_hw - CAMERA.cx) / FOCAL, (v_hw - CAMERA.cy) / FOCAL], axis=-1)


def render_hw3(texture: np.ndarray, camera_x: float, depth: float) -> np.ndarray:
    """The plane z = depth seen from (camera_x, 0, 0): texture with the blank rectangle, uint8 RGB."""
    plane_hw2 = plane_coordinates_hw2(camera_x, depth)
    map_hw2 = (plane_hw2 + [2.0, 1.5]) * TEXTURE_PX_PER_UNIT
    grey_hw = cv2.remap(texture, map_hw2[..., 0].astype(np.float32), map_hw2[..., 1].astype(np.float32), cv2.INTER_LINEAR)
    blank_hw = np.all(np.abs(plane_hw2 - BLANK_CENTRE_2) < BLANK_HALF_2, axis=-1)
    grey_hw = np.where(blank_hw, 0.55, grey_hw)
    return np.repeat(np.rint(grey_hw * 255).astype(np.uint8)[..., None], 3, axis=2)


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    return texture_hw()


@pytest.mark.parametrize("depth", [0.8, 2.0])
def test_blank_and_unseen_pixels_are_not_fused(texture: np.ndarray, depth: float) -> None:
    baseline = BASELINE_SHARE * depth
    reference = Frame(0, 0.0, render_hw3(texture, 0.0, depth), None, make_pose_44(np.eye(3), np.zeros(3)))
    source = Frame(1, 1.0, render_hw3(texture, baseline, depth), None, make_pose_44(np.eye(3), np.array([baseline, 0, 0])))
    plane_hw2 = plane_coordinates_hw2(0.0, depth)
    v_hw, u_hw = np.mgrid[0:HEIGHT, 0:WIDTH]
    shift_px = FOCAL * BASELINE_SHARE  # how far the source's view is moved, pixels
    margin = 0.04  # plane units (~10 pixels) around the blank rectangle's edges
    blank_hw = np.all(np.abs(plane_hw2 - BLANK_CENTRE_2) < BLANK_HALF_2 - margin, axis=-1)
    near_blank_hw = np.all(np.abs(plane_hw2 - BLANK_CENTRE_2) < BLANK_HALF_2 + 2 * margin, axis=-1)
    unseen_hw = u_hw < shift_px - 8
    textured_hw = ~near_blank_hw & (u_hw > shift_px + 8) & (u_hw < WIDTH - 8) & (v_hw > 8) & (v_hw < HEIGHT - 8)
    assert blank_hw.sum() > 2000 and unseen_hw.sum() > 5000 and textured_hw.sum() > 30000

    config = DepthConfig()
    result = LearnedDepthEstimator(config).estimate(reference, [source], CAMERA)
    fused_hw = (result.depth_hw > 0) & (result.confidence_hw > config.fuse_min_confidence)
    correct_hw = fused_hw & (np.abs(result.depth_hw - depth) < 0.05 * depth)
    assert correct_hw[textured_hw].mean() > 0.9
    assert fused_hw[blank_hw].mean() < 0.1
    assert fused_hw[unseen_hw].mean() < 0.1

    # The network's own confidence, before the photometric check, is lower where the source sees nothing.
    network_only = dataclasses.replace(config, local_sweep=dataclasses.replace(config.local_sweep, steps=0))
    confidence_hw = LearnedDepthEstimator(network_only).estimate(reference, [source], CAMERA).confidence_hw
    assert np.median(confidence_hw[unseen_hw]) < np.median(confidence_hw[textured_hw]) - 0.1
