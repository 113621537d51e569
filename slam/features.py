"""Descriptors at tracked corners and their matching, for associations KLT cannot make.

KLT follows corners from frame to frame; when the motion is too large, the view is blurred, or
the camera comes back to a place after losing track, the corners are matched by appearance
instead. Descriptors are computed at the tracker's own corners (Shi-Tomasi, on the tracking
image), upright and at one scale: room captures keep the camera roughly level, and a keyframe
and a frame that see the same place from a similar distance are what relocalisation and map
merging need to match. `kind` "orb" gives 256-bit binary descriptors (Hamming distance), "sift"
128-float ones (L2); the default and why are in `DescriptorConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from slam.klt import KLTConfig, detect_corners_n2


@dataclass
class DescriptorConfig:
    """Which descriptor and how matches are accepted.

    kind: "orb" (binary, fast to compute and match) or "sift" (float, more distinctive under
    blur and viewpoint change, about 5x slower to compute). patch_px: the side of the patch
    described, in tracking-image pixels; corners closer than half of it (plus a margin) to the
    border get no descriptor. ratio: Lowe's ratio test between the best and second-best
    match distance; max_distance: the largest accepted distance (Hamming bits for ORB, L2 of
    unit-normalised SIFT vectors times 512 for SIFT), None for the kind's default (64 bits of
    256; 250).
    """

    kind: str = "orb"
    patch_px: int = 31
    ratio: float = 0.8
    max_distance: float | None = None


@dataclass
class Descriptors:
    """Descriptors (N, D) of the pixels that have one, and the rows of the described pixels
    they belong to: `rows_n` (N,) indexes the (M, 2) pixel array given to `describe`."""

    values_nd: np.ndarray
    rows_n: np.ndarray

    def __len__(self) -> int:
        return len(self.rows_n)


class Describer:
    """Computes and matches one kind of descriptor (see `DescriptorConfig`)."""

    def __init__(self, config: DescriptorConfig | None = None):
        self.config = config or DescriptorConfig()
        if self.config.kind == "orb":
            border = self.config.patch_px // 2 + 4
            self._extractor = cv2.ORB_create(edgeThreshold=border, patchSize=self.config.patch_px)
            self._norm = cv2.NORM_HAMMING
        elif self.config.kind == "sift":
            self._extractor = cv2.SIFT_create()
            self._norm = cv2.NORM_L2
        else:
            raise ValueError(f"DescriptorConfig.kind: expected 'orb' or 'sift', got {self.config.kind!r}")
        self._matcher = cv2.BFMatcher(self._norm)
        default_distance = 64.0 if self.config.kind == "orb" else 250.0
        self.max_distance = default_distance if self.config.max_distance is None else self.config.max_distance

    def describe(self, gray_hw: np.ndarray, uv_n2: np.ndarray) -> Descriptors:
        """Upright descriptors of the uint8 image `gray_hw` (H, W) at pixels `uv_n2` (M, 2);
        pixels too close to the border get none."""
        size = float(self.config.patch_px)
        keypoints = [cv2.KeyPoint(float(u), float(v), size, 0.0, 0.0, 0, row) for row, (u, v) in enumerate(uv_n2)]
        if not keypoints:
            return _empty(self.config.kind)
        kept, values_nd = self._extractor.compute(gray_hw, keypoints)
        if values_nd is None or not kept:
            return _empty(self.config.kind)
        rows_n = np.array([keypoint.class_id for keypoint in kept], dtype=np.int64)
        if self.config.kind == "sift":
            values_nd = values_nd / np.maximum(np.linalg.norm(values_nd, axis=1, keepdims=True), 1e-12) * 512.0
            values_nd = values_nd.astype(np.float32)
        return Descriptors(values_nd, rows_n)

    def match(self, query: Descriptors, train: Descriptors) -> tuple[np.ndarray, np.ndarray]:
        """Ratio-test matches from `query` to `train`: positions (K,) into each (not their
        `rows_n`); a train descriptor that several queries claim is left unmatched."""
        if len(query) == 0 or len(train) < 2:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        query_k, train_k = ratio_test_matches(
            self._matcher, query.values_nd, train.values_nd, self.max_distance, self.config.ratio
        )
        claims_k = np.bincount(train_k, minlength=len(train))[train_k] if len(train_k) else train_k
        once_k = claims_k == 1
        return query_k[once_k], train_k[once_k]

    def describe_corners(self, gray_hw: np.ndarray, max_corners: int, klt: KLTConfig) -> tuple[np.ndarray, Descriptors]:
        """Up to `max_corners` fresh corners (M, 2) of the uint8 image `gray_hw` (H, W), detected
        as the tracker detects them (`klt`), and their descriptors: how a frame to relocalise,
        or to match to a piece's reference, is described."""
        corners_n2 = detect_corners_n2(gray_hw, np.zeros((0, 2)), max_corners, klt)
        return corners_n2, self.describe(gray_hw, corners_n2)


def ratio_test_matches(
    matcher: cv2.DescriptorMatcher, query_nd: np.ndarray, train_md: np.ndarray, max_distance: float, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each query descriptor (N, D) matched to its nearest train descriptor (M, D, M >= 2)
    when that is within `max_distance` and closer than `ratio` times the second nearest
    (Lowe's ratio test): query and train positions (K,), (K,)."""
    query_k, train_k = [], []
    for pair in matcher.knnMatch(query_nd, train_md, k=2):
        if len(pair) < 2:
            continue
        best, second = pair
        if best.distance <= max_distance and best.distance < ratio * second.distance:
            query_k.append(best.queryIdx)
            train_k.append(best.trainIdx)
    return np.array(query_k, dtype=np.int64), np.array(train_k, dtype=np.int64)


def _empty(kind: str) -> Descriptors:
    width, dtype = (32, np.uint8) if kind == "orb" else (128, np.float32)
    return Descriptors(np.zeros((0, width), dtype=dtype), np.zeros(0, dtype=np.int64))
