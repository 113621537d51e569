"""Joining the monocular tracker's map at each new keyframe: place memory, merging pieces and
closing loops.

Each keyframe's observations are described (`slam/features.py`) and its image remembered for
place recognition (`slam/places.py`). Each new keyframe of a piece is matched against the
other pieces; where they see a common place, the similarity between them is found from their
matched map points and the piece is merged into the other, then both are adjusted together.
Where the keyframe sees an older place of its own piece, the drift along the loop is
corrected (`slam/loop_closure.py`). Frames posed relative to a keyframe whose camera frame
changed scale follow it.
"""

from __future__ import annotations

import numpy as np

from slam.backend import adjust_keyframes
from slam.features import Describer
from slam.loop_closure import close_loop, correction_size, detect_loop
from slam.map import SparseMap
from slam.pieces import TrackingHistory
from slam.places import PlaceDatabase
from slam.relocalise import match_pieces
from slam.vo_config import VOConfig


class MapJoiner:
    """Remembers the keyframes of `world` as places and joins the pieces and loops they see;
    `history` holds the anchors of the posed frames and the merges; K_33 is the tracking
    image's intrinsics (3, 3)."""

    def __init__(
        self,
        world: SparseMap,
        describer: Describer,
        places: PlaceDatabase,
        history: TrackingHistory,
        K_33: np.ndarray,
        config: VOConfig,
    ):
        self.world = world
        self.describer = describer
        self.places = places
        self.history = history
        self.K_33 = K_33
        self.config = config

    def remember(self, position: int) -> None:
        """Describe the observations and the image of the keyframe at `position` and add it to
        the places."""
        kf = self.world.keyframes[position]
        kf.descriptors = self.describer.describe(kf.gray_hw, kf.uv_n2)
        kf.features = self.places.matcher.detect(kf.gray_hw)
        self.places.add(position, kf.piece, kf.gray_hw, kf.features)

    def join(self, position: int) -> bool:
        """Merge the piece of the keyframe at `position` with another piece it sees, then
        close a loop it closes; True when either moved the keyframe (its piece may have taken
        another id)."""
        kf = self.world.keyframes[position]
        joined = False
        if any(other.piece != kf.piece for other in self.world.keyframes):
            joined = self._try_merge(position)
        if self.config.loop.enabled:
            joined = self._try_close_loop(position) or joined
        return joined

    def _try_merge(self, position: int) -> bool:
        """Merge the keyframe's piece with another one that the keyframe at `position` sees:
        the piece with fewer keyframes moves into the other's frame and scale and takes its
        id. False when it sees none."""
        keyframes = self.world.keyframes
        kf = keyframes[position]
        candidates = self.places.query(kf.gray_hw, kf.features, exclude_piece=kf.piece)
        found = match_pieces(
            self.world, self.describer, self.places.matcher, position, candidates, self.K_33, self.config.relocalise, self.config.klt
        )
        if found is None:
            return False
        moved, kept = kf.piece, keyframes[found.other_position].piece
        similarity = found.other_T_piece
        if len(self.world.piece_positions(moved)) > len(self.world.piece_positions(kept)):
            moved, kept, similarity = kept, moved, similarity.inverse()
        kept_T_moved_44 = np.eye(4)
        kept_T_moved_44[:3, :3], kept_T_moved_44[:3, 3] = similarity.R_33, similarity.t_3
        self.world.transform_piece(moved, similarity.scale, kept_T_moved_44)
        self._scale_anchors({k: similarity.scale for k in self.world.piece_positions(moved)})
        for other in keyframes:
            if other.piece == moved:
                other.piece = kept
        self.places.relabel(moved, kept)
        self.history.merged_into[moved] = kept
        kf.add_observations(found.other_ids_n, found.uv_n2)
        positions = self.world.piece_positions(kept)
        adjust_keyframes(self.world, self.K_33, positions[:2], positions[2:], self.config.global_bundle)
        return True

    def _try_close_loop(self, position: int) -> bool:
        """Correct the drift along a loop that the keyframe at `position` closes, if any;
        True when the correction moved the keyframes."""
        loop = detect_loop(self.world, self.describer, self.places, position, self.K_33, self.config)
        if loop is None:
            return False
        if correction_size(self.world, loop) < self.config.loop.min_correction:
            self.world.keyframes[position].add_observations(loop.other_ids_n, loop.uv_n2)
            return False
        self._scale_anchors(close_loop(self.world, loop, self.config.loop))
        return True

    def _scale_anchors(self, scale_of_position: dict[int, float]) -> None:
        """Frames posed relative to the keyframes whose camera frame changed scale follow it."""
        for frame_index, (position, kf_T_cam_44) in self.history.anchors.items():
            if position in scale_of_position:
                scaled_44 = kf_T_cam_44.copy()
                scaled_44[:3, 3] *= scale_of_position[position]
                self.history.anchors[frame_index] = (position, scaled_44)
