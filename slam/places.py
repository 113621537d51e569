"""Place recognition over keyframes: which keyframes show the place a frame shows.

Two rankings propose candidates. Each keyframe is summarised by a small blurred thumbnail of
its image, normalised to zero mean and unit norm (the relocaliser of PTAM, Klein and Murray
2008); a query ranks the keyframes by the correlation of their thumbnails with its own, which
is cheap and insensitive to exposure but holds only for small viewpoint changes. Where the
query comes with its ORB features (`slam/image_features.py`: relocalising a lost frame,
merging pieces), the keyframes are also ranked by votes: each query feature votes for the
keyframe holding its nearest descriptor. Votes find the kitchen's revisits 20-26 degrees and
25 cm apart, with the camera rolled, which no thumbnail finds. Candidates only count once a
pose from their map points is verified (`slam/relocalise.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from slam.image_features import ImageFeatures, ImageMatcher


@dataclass
class PlaceConfig:
    """thumbnail_width: thumbnail width in pixels (the height keeps the aspect ratio);
    blur_sigma: Gaussian blur of the thumbnail, in its pixels; candidates: keyframes a query
    returns at most from each ranking; min_correlation: the lowest thumbnail correlation of a
    candidate; min_votes: the fewest feature votes of one."""

    thumbnail_width: int = 40
    blur_sigma: float = 1.0
    candidates: int = 6
    min_correlation: float = 0.3
    min_votes: int = 5


class PlaceDatabase:
    """Thumbnails and feature descriptors of keyframes, queried by image."""

    def __init__(self, config: PlaceConfig | None = None, matcher: ImageMatcher | None = None):
        self.config = config or PlaceConfig()
        self.matcher = matcher or ImageMatcher()
        self._positions: list[int] = []
        self._pieces: list[int] = []
        self._thumbnails: list[np.ndarray] = []
        self._descriptors: list[np.ndarray] = []

    def thumbnail_n(self, gray_hw: np.ndarray) -> np.ndarray:
        """The zero-mean, unit-norm blurred thumbnail (T,) of a uint8 image (H, W)."""
        height, width = gray_hw.shape
        size_wh = (self.config.thumbnail_width, max(1, round(height * self.config.thumbnail_width / width)))
        small_hw = cv2.resize(gray_hw, size_wh, interpolation=cv2.INTER_AREA).astype(np.float32)
        small_hw = cv2.GaussianBlur(small_hw, (0, 0), self.config.blur_sigma)
        values_n = small_hw.ravel() - small_hw.mean()
        return values_n / max(float(np.linalg.norm(values_n)), 1e-6)

    def add(self, position: int, piece: int, gray_hw: np.ndarray, features: ImageFeatures) -> None:
        """Remember the keyframe at `position` (of `piece`) by its image (H, W) uint8 and its
        ORB features (the strongest `vote_features` of them vote)."""
        self._positions.append(position)
        self._pieces.append(piece)
        self._thumbnails.append(self.thumbnail_n(gray_hw))
        self._descriptors.append(features.values_m32[: self.matcher.config.vote_features])

    def relabel(self, piece: int, new_piece: int) -> None:
        """Keyframes of `piece` now belong to `new_piece` (after a merge)."""
        self._pieces = [new_piece if p == piece else p for p in self._pieces]

    def move(self, position: int, piece: int) -> None:
        """The keyframe at `position` now belongs to `piece` (relocalised into it)."""
        self._pieces = [piece if k == position else p for k, p in zip(self._positions, self._pieces)]

    def query(
        self,
        gray_hw: np.ndarray,
        features: ImageFeatures | None = None,
        exclude_piece: int | None = None,
        among: list[int] | None = None,
    ) -> list[int]:
        """Positions of the keyframes that best show the place of the image (H, W), none of
        `exclude_piece`, and only positions in `among` when given: the `candidates` most voted
        for by `features` (when given, with at least `min_votes`), then those whose
        thumbnails correlate best (at least `min_correlation`)."""
        if not self._thumbnails:
            return []
        eligible_k = np.ones(len(self._positions), dtype=bool)
        if exclude_piece is not None:
            eligible_k &= np.array(self._pieces) != exclude_piece
        if among is not None:
            eligible_k &= np.isin(self._positions, among)
        found = []
        if features is not None and eligible_k.any():
            chosen_k = np.flatnonzero(eligible_k)
            owner_p = np.concatenate([np.full(len(self._descriptors[k]), j) for j, k in enumerate(chosen_k)])
            pool_p32 = np.concatenate([self._descriptors[k] for k in chosen_k])
            votes_k = self.matcher.votes_k(features, pool_p32, owner_p, len(chosen_k))
            order_k = np.argsort(-votes_k, kind="stable")[: self.config.candidates]
            found = [self._positions[chosen_k[k]] for k in order_k if votes_k[k] >= self.config.min_votes]
        correlation_k = np.where(eligible_k, np.stack(self._thumbnails) @ self.thumbnail_n(gray_hw), -np.inf)
        order_k = np.argsort(-correlation_k, kind="stable")[: self.config.candidates]
        found += [self._positions[k] for k in order_k if correlation_k[k] >= self.config.min_correlation]
        return list(dict.fromkeys(found))
