"""Sparse feature tracking: Shi-Tomasi corners followed by pyramidal Lucas-Kanade flow.

Images are uint8 grayscale (H, W); pixel coordinates (u, v) with centres at integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class KLTConfig:
    """Corner detection and optical-flow settings (pixels of the tracking image).

    max_corners: tracks kept alive at most; min_distance_px: spacing between corners;
    quality: Shi-Tomasi quality level relative to the strongest corner; window_px and
    levels: Lucas-Kanade window and pyramid depth; forward_backward_px: largest distance
    between a point and its position tracked forward then backward.
    """

    max_corners: int = 300
    min_distance_px: float = 12.0
    quality: float = 0.005
    window_px: int = 21
    levels: int = 4
    forward_backward_px: float = 0.75
    border_px: int = 8


def free_mask_hw(shape_hw: tuple[int, int], existing_uv_n2: np.ndarray, config: KLTConfig) -> np.ndarray:
    """uint8 mask (H, W), 255 where a new point may go: away from the border and at least
    `min_distance_px` from every point of `existing_uv_n2`."""
    mask_hw = np.zeros(shape_hw, dtype=np.uint8)
    border = config.border_px
    mask_hw[border:-border, border:-border] = 255
    radius = int(round(config.min_distance_px))
    for u, v in np.rint(existing_uv_n2).astype(np.int64):
        cv2.circle(mask_hw, (int(u), int(v)), radius, 0, -1)
    return mask_hw


def detect_corners_n2(gray_hw: np.ndarray, existing_uv_n2: np.ndarray, count: int, config: KLTConfig) -> np.ndarray:
    """Up to `count` new corners (M, 2) at least `min_distance_px` away from `existing_uv_n2`
    and from the image border."""
    if count <= 0:
        return np.zeros((0, 2), dtype=np.float32)
    mask_hw = free_mask_hw(gray_hw.shape, existing_uv_n2, config)
    corners = cv2.goodFeaturesToTrack(
        gray_hw, maxCorners=count, qualityLevel=config.quality, minDistance=config.min_distance_px, mask=mask_hw
    )
    if corners is None:
        return np.zeros((0, 2), dtype=np.float32)
    return corners.reshape(-1, 2).astype(np.float32)


def track_points_n2(
    prev_gray_hw: np.ndarray,
    gray_hw: np.ndarray,
    uv_n2: np.ndarray,
    config: KLTConfig,
    initial_uv_n2: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 2) in `gray_hw` of the points `uv_n2` of `prev_gray_hw`, and a mask (N,)
    of the points tracked both ways to within `forward_backward_px` and inside the image.

    `initial_uv_n2` (N, 2), when given, is where the search starts in `gray_hw` (a
    prediction), instead of `uv_n2`."""
    if len(uv_n2) == 0:
        return np.zeros((0, 2), dtype=np.float32), np.zeros(0, dtype=bool)
    lk_params = dict(
        winSize=(config.window_px, config.window_px),
        maxLevel=config.levels,
        criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03),
    )
    start_n12 = np.ascontiguousarray(uv_n2, dtype=np.float32).reshape(-1, 1, 2)
    if initial_uv_n2 is None:
        forward_n12, status_forward, _ = cv2.calcOpticalFlowPyrLK(prev_gray_hw, gray_hw, start_n12, None, **lk_params)
    else:
        forward_n12, status_forward, _ = cv2.calcOpticalFlowPyrLK(
            prev_gray_hw,
            gray_hw,
            start_n12,
            np.ascontiguousarray(initial_uv_n2, dtype=np.float32).reshape(-1, 1, 2),
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
            **lk_params,
        )
    backward_n12, status_backward, _ = cv2.calcOpticalFlowPyrLK(
        gray_hw, prev_gray_hw, forward_n12, start_n12.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk_params
    )
    forward_n2 = forward_n12.reshape(-1, 2)
    height, width = gray_hw.shape
    border = config.border_px / 2
    ok_n = (
        (status_forward[:, 0] == 1)
        & (status_backward[:, 0] == 1)
        & (np.linalg.norm(backward_n12.reshape(-1, 2) - uv_n2, axis=1) < config.forward_backward_px)
        & (forward_n2[:, 0] >= border)
        & (forward_n2[:, 0] <= width - 1 - border)
        & (forward_n2[:, 1] >= border)
        & (forward_n2[:, 1] <= height - 1 - border)
    )
    return forward_n2, ok_n
