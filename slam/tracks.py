"""The monocular tracker's live KLT tracks: the id of each tracked corner and its pixel in the
current tracking image. A track's id is also the id of its map point once one is
triangulated (`slam/map.py`); new tracks start at new corners, whose birth keyframe and pixel
the map points record.
"""

from __future__ import annotations

import numpy as np

from slam.klt import KLTConfig, detect_corners_n2
from slam.map import Keyframe, MapPoints


class Tracks:
    """Track ids `ids_n` (N,) and their pixels `uv_n2` (N, 2) in the current tracking image;
    `next_id` is the id of the next new track."""

    def __init__(self, points: MapPoints, klt: KLTConfig):
        self.points = points
        self.klt = klt
        self.ids_n = np.zeros(0, dtype=np.int64)
        self.uv_n2 = np.zeros((0, 2), dtype=np.float32)
        self.next_id = 0

    def __len__(self) -> int:
        return len(self.ids_n)

    def replace(self, ids_n: np.ndarray, uv_n2: np.ndarray) -> None:
        """The tracks are now `ids_n` (N,) at pixels `uv_n2` (N, 2)."""
        self.ids_n = ids_n
        self.uv_n2 = uv_n2

    def clear(self) -> None:
        self.replace(np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.float32))

    def keep(self, keep_n: np.ndarray) -> None:
        """Keep the tracks where the mask `keep_n` (N,) is True."""
        self.replace(self.ids_n[keep_n], self.uv_n2[keep_n])

    def extend(self, ids_n: np.ndarray, uv_n2: np.ndarray) -> None:
        """Track `ids_n` (M,) from pixels `uv_n2` (M, 2) too."""
        self.replace(np.concatenate([self.ids_n, ids_n]), np.concatenate([self.uv_n2, uv_n2]))

    def drop_rejected(self, kf: Keyframe) -> None:
        """Stop the tracks whose observation in the keyframe `kf` was rejected."""
        rejected_ids_n = kf.track_ids_n[~kf.valid_n]
        self.keep(~np.isin(self.ids_n, rejected_ids_n))

    def add_corners(self, gray_hw: np.ndarray, birth_kf: int) -> np.ndarray:
        """Start tracks at new corners of the tracking image (H, W), born at the keyframe
        position `birth_kf` (-1 before the piece's first keyframe exists); returns their ids."""
        uv_n2 = detect_corners_n2(gray_hw, self.uv_n2, self.klt.max_corners - len(self.ids_n), self.klt)
        ids_n = np.arange(self.next_id, self.next_id + len(uv_n2))
        self.next_id += len(uv_n2)
        self.points.reserve(self.next_id)
        self.points.birth_kf_n[ids_n] = birth_kf
        self.points.birth_uv_n2[ids_n] = uv_n2
        self.extend(ids_n, uv_n2)
        return ids_n
