"""Whole-image features for finding a place again across a wide baseline.

The tracked corners (`slam/features.py`) are few (a few hundred per keyframe, those with a map
point fewer still) and described upright at one scale, which is what following a track needs.
Coming back to a place after a large motion, from another height or with the camera rolled,
needs more: oriented FAST corners over a scale pyramid with rotated BRIEF (OpenCV's ORB), a
thousand per image. On the 7-Scenes kitchen 20 frames apart (15-30 degrees) they give 2-4x more
matches that agree on the epipolar geometry than the tracked corners, and on revisits 200-980
frames apart (camera rolled by 15-25 degrees) about 10x more (upright descriptors at the
tracked corners: 8-24; these: 80-200).

They carry no 3D point. Place recognition votes with them (`slam/places.py`), and their matches
between a frame and a keyframe, verified by the epipolar geometry, give the frame's pixels of
the keyframe's map points observed next to the matched keypoints (`slam/guided_seed.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from slam.features import ratio_test_matches


@dataclass
class ImageFeatureConfig:
    """count: ORB features per image at most; ratio, max_distance: Lowe's ratio test and the
    largest Hamming distance (bits of 256) of a match; epipolar_px and min_matches: the
    fundamental-matrix RANSAC threshold and the fewest matches agreeing with it for a pair of
    images to count as matched; vote_features, vote_distance: the strongest features of an
    image that place recognition keeps, and the largest distance of a vote (matching a query
    against 300 rather than 1000 features per keyframe is 3x faster and ranks the kitchen's
    revisits the same)."""

    count: int = 1000
    ratio: float = 0.8
    max_distance: float = 64.0
    epipolar_px: float = 2.0
    min_matches: int = 20
    vote_features: int = 300
    vote_distance: float = 40.0


@dataclass
class ImageFeatures:
    """ORB features of one image, strongest first: keypoint pixels uv_m2 (M, 2) and
    descriptors values_m32 (M, 32) uint8."""

    uv_m2: np.ndarray
    values_m32: np.ndarray

    def __len__(self) -> int:
        return len(self.uv_m2)


class ImageMatcher:
    """Detects ORB features and matches them between two images (see `ImageFeatureConfig`)."""

    def __init__(self, config: ImageFeatureConfig | None = None):
        self.config = config or ImageFeatureConfig()
        self._orb = cv2.ORB_create(nfeatures=self.config.count)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)

    def detect(self, gray_hw: np.ndarray) -> ImageFeatures:
        """The ORB features of a uint8 image (H, W)."""
        keypoints, values_m32 = self._orb.detectAndCompute(gray_hw, None)
        if values_m32 is None:
            return ImageFeatures(np.zeros((0, 2)), np.zeros((0, 32), dtype=np.uint8))
        order_m = np.argsort([-keypoint.response for keypoint in keypoints], kind="stable")
        uv_m2 = np.array([keypoint.pt for keypoint in keypoints], dtype=np.float64)
        return ImageFeatures(uv_m2[order_m], values_m32[order_m])

    def match(self, a: ImageFeatures, b: ImageFeatures) -> tuple[np.ndarray, np.ndarray]:
        """Matches from `a` to `b` that pass the ratio test and agree on one fundamental
        matrix: positions (K,) into each; empty when fewer than `min_matches` agree."""
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        if len(a) < self.config.min_matches or len(b) < self.config.min_matches:
            return empty
        a_k, b_k = ratio_test_matches(
            self._matcher, a.values_m32, b.values_m32, self.config.max_distance, self.config.ratio
        )
        if len(a_k) < self.config.min_matches:
            return empty
        _, inlier_k1 = cv2.findFundamentalMat(
            a.uv_m2[a_k], b.uv_m2[b_k], cv2.USAC_MAGSAC, self.config.epipolar_px, 0.999, 1000
        )
        if inlier_k1 is None or inlier_k1.sum() < self.config.min_matches:
            return empty
        inlier_k = inlier_k1.ravel().astype(bool)
        return a_k[inlier_k], b_k[inlier_k]

    def votes_k(self, query: ImageFeatures, pool_p32: np.ndarray, owner_p: np.ndarray, owners: int) -> np.ndarray:
        """For each of `owners` images, how many of the query's features have their nearest
        neighbour among the pooled descriptors `pool_p32` (P, 32) in that image (`owner_p`
        (P,) in [0, owners)) within `vote_distance`: (owners,)."""
        if len(query) == 0 or len(pool_p32) == 0:
            return np.zeros(owners, dtype=np.int64)
        nearest = self._matcher.match(query.values_m32, pool_p32)
        close = [m.trainIdx for m in nearest if m.distance <= self.config.vote_distance]
        return np.bincount(owner_p[np.array(close, dtype=np.int64)], minlength=owners)
