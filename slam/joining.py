"""Joining the monocular tracker's map at each new keyframe: place memory, merging pieces and
closing loops.

Each keyframe's observations are described (`slam/features.py`) and its image remembered for
place recognition (`slam/places.py`). Each new keyframe of a piece is matched against the
other pieces; where they see a common place, the similarity between them is found from their
matched map points and the piece is merged into the other, then both are adjusted together.
Where the keyframe sees an older place of its own piece, the drift along the loop is
corrected (`slam/loop_closure.py`). Frames posed relative to a keyframe whose camera frame
changed scale follow it. After the last frame, the keyframes of pieces that never joined the
main map are relocalised against it, now that it holds every place it will (`rejoin`).
"""

from __future__ import annotations

import numpy as np

from mvs.geometry import invert_pose_44
from slam.backend import adjust_keyframes
from slam.features import Describer
from slam.klt import detect_corners_n2
from slam.loop_closure import close_loop, correction_size, detect_loop
from slam.map import SparseMap
from slam.pieces import Run, TrackingHistory, pieces_of_frames
from slam.places import PlaceDatabase
from slam.relocalise import Relocalisation, match_pieces, relocalise
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

    def rejoin(self) -> list[int]:
        """After the last frame: pose each keyframe of a piece that never joined the main map
        by relocalisation against the main map's places (`slam/relocalise.py`), and move it
        into the main map with the points it was posed from; rounds repeat while one more
        joins, as a moved keyframe's points can pose its neighbours. Returns the dataset
        indices of the moved keyframes. Keyframes whose image was not kept are left as they are.
        """
        moved = []
        while True:
            _, main = pieces_of_frames(self.world, self.history)
            joined = False
            for position, kf in enumerate(self.world.keyframes):
                if kf.piece == main or kf.gray_hw is None:
                    continue
                found = self._relocalise_in(position, main)
                if found is not None:
                    self._move_keyframe(position, found)
                    moved.append(kf.frame_index)
                    joined = True
            if not joined:
                return moved

    def _relocalise_in(self, position: int, piece: int) -> Relocalisation | None:
        """The pose in `piece` of the keyframe at `position`, relocalised against the places of
        that piece its image recalls; None when none poses it."""
        kf = self.world.keyframes[position]
        corners_n2 = detect_corners_n2(kf.gray_hw, np.zeros((0, 2)), self.config.relocalise_corners, self.config.klt)
        query = self.describer.describe(kf.gray_hw, corners_n2)
        candidates = self.places.query(kf.gray_hw, kf.features, among=self.world.piece_positions(piece))
        return relocalise(
            self.world, self.describer, query, corners_n2, kf.gray_hw, kf.features, self.places.matcher, candidates,
            self.K_33, self.config.relocalise, self.config.klt,
        )

    def _move_keyframe(self, position: int, found: Relocalisation) -> None:
        """The keyframe at `position` moves into `found.piece` at its relocalised pose,
        observing the points it was posed from. The frames posed relative to it follow the
        nearest keyframe left in its old piece (none left: they are lost), as their offsets are
        in the old piece's scale."""
        kf = self.world.keyframes[position]
        world_T_kf_44 = invert_pose_44(kf.cam_T_world_44)
        left = [k for k in self.world.piece_positions(kf.piece) if k != position]
        for frame_index, (anchor, kf_T_cam_44) in list(self.history.anchors.items()):
            if anchor != position or frame_index == kf.frame_index:
                continue
            if left:
                nearest = min(left, key=lambda k: abs(k - position))
                self.history.anchors[frame_index] = (
                    nearest, self.world.keyframes[nearest].cam_T_world_44 @ world_T_kf_44 @ kf_T_cam_44
                )
            else:
                del self.history.anchors[frame_index]
                self.history.lost.append(frame_index)
        kf.cam_T_world_44 = found.cam_T_world_44
        kf.piece = found.piece
        kf.track_ids_n, kf.uv_n2 = found.point_ids_n.copy(), found.uv_n2.astype(np.float64)
        kf.valid_n = np.ones(len(kf.track_ids_n), dtype=bool)
        kf.depth_n = None if kf.depth_n is None else np.full(len(kf.track_ids_n), np.nan)
        kf.descriptors = self.describer.describe(kf.gray_hw, kf.uv_n2)
        self.places.move(position, found.piece)
        self.history.anchors[kf.frame_index] = (position, np.eye(4))
        self.history.runs.append(Run(kf.frame_index, "relocalised", found.piece))

    def _scale_anchors(self, scale_of_position: dict[int, float]) -> None:
        """Frames posed relative to the keyframes whose camera frame changed scale follow it."""
        for frame_index, (position, kf_T_cam_44) in self.history.anchors.items():
            if position in scale_of_position:
                scaled_44 = kf_T_cam_44.copy()
                scaled_44[:3, 3] *= scale_of_position[position]
                self.history.anchors[frame_index] = (position, scaled_44)
