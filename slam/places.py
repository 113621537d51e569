"""Place recognition over keyframes: which keyframes show the place a frame shows.

Each keyframe is summarised by a small blurred thumbnail of its image, normalised to zero mean
and unit norm (the relocaliser of PTAM, Klein and Murray 2008); a query ranks the keyframes by
the correlation of their thumbnails with its own. The ranking only proposes candidates: a
candidate counts once descriptor matches against its map points give a camera pose
(`slam/relocalise.py`). Thumbnails are insensitive to exposure (normalised) and, blurred, to
small viewpoint changes; a revisit seen from a very different direction is found by the
matches against the recent keyframes instead, or when the path comes closer.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class PlaceConfig:
    """thumbnail_width: thumbnail width in pixels (the height keeps the aspect ratio);
    blur_sigma: Gaussian blur of the thumbnail, in its pixels; candidates: keyframes a query
    returns at most; min_correlation: the lowest thumbnail correlation of a candidate."""

    thumbnail_width: int = 40
    blur_sigma: float = 1.0
    candidates: int = 6
    min_correlation: float = 0.3


class PlaceDatabase:
    """Thumbnails of keyframes, queried by image."""

    def __init__(self, config: PlaceConfig | None = None):
        self.config = config or PlaceConfig()
        self._positions: list[int] = []
        self._pieces: list[int] = []
        self._thumbnails: list[np.ndarray] = []

    def thumbnail_n(self, gray_hw: np.ndarray) -> np.ndarray:
        """The zero-mean, unit-norm blurred thumbnail (T,) of a uint8 image (H, W)."""
        height, width = gray_hw.shape
        size_wh = (self.config.thumbnail_width, max(1, round(height * self.config.thumbnail_width / width)))
        small_hw = cv2.resize(gray_hw, size_wh, interpolation=cv2.INTER_AREA).astype(np.float32)
        small_hw = cv2.GaussianBlur(small_hw, (0, 0), self.config.blur_sigma)
        values_n = small_hw.ravel() - small_hw.mean()
        return values_n / max(float(np.linalg.norm(values_n)), 1e-6)

    def add(self, position: int, piece: int, gray_hw: np.ndarray) -> None:
        """Remember the keyframe at `position` (of `piece`) by its image (H, W) uint8."""
        self._positions.append(position)
        self._pieces.append(piece)
        self._thumbnails.append(self.thumbnail_n(gray_hw))

    def relabel(self, piece: int, new_piece: int) -> None:
        """Keyframes of `piece` now belong to `new_piece` (after a merge)."""
        self._pieces = [new_piece if p == piece else p for p in self._pieces]

    def query(self, gray_hw: np.ndarray, exclude_piece: int | None = None, among: list[int] | None = None) -> list[int]:
        """Positions of the keyframes whose thumbnails correlate best with the image's, best
        first, at most `candidates`, none of `exclude_piece`, and only positions in `among`
        when given."""
        if not self._thumbnails:
            return []
        correlation_k = np.stack(self._thumbnails) @ self.thumbnail_n(gray_hw)
        if exclude_piece is not None:
            correlation_k[np.array(self._pieces) == exclude_piece] = -np.inf
        if among is not None:
            correlation_k[~np.isin(self._positions, among)] = -np.inf
        order_k = np.argsort(-correlation_k, kind="stable")[: self.config.candidates]
        return [self._positions[k] for k in order_k if correlation_k[k] >= self.config.min_correlation]
