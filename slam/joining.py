"""Joining the monocular tracker's map at each new keyframe: place memory, merging pieces and
closing loops.

Each keyframe's observations are described (`slam/features.py`) and its image remembered for
place recognition (`slam/places.py`). Each new keyframe of a piece is matched against the
other pieces; where they see a common place, the similarity between them is found from their
matched map points and the piece is merged into the other, then both are adjusted together.
Where the keyframe sees an older place of its own piece, the drift along the loop is
corrected (`slam/loop_closure.py`). Frames posed relative to a keyframe whose camera frame
changed scale follow it. After the last frame, the keyframes of pieces that never joined the
main map are relocalised against it, now that it holds every place it will, and their pieces
merged by the poses found (`rejoin`); so are the frames never posed (`pose_lost`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mvs.geometry import invert_pose_44, make_pose_44, rotation_angle, transform_n3
from slam.alignment import Similarity, similarity_from_poses
from slam.backend import adjust_keyframes
from slam.features import Describer
from slam.guided_seed import triangulated_seed
from slam.image_features import ImageFeatures
from slam.loop_closure import close_loop, correction_size, detect_loop
from slam.map import SparseMap
from slam.pieces import Run, TrackingHistory, pieces_of_frames
from slam.places import PlaceDatabase
from slam.relocalise import Relocalisation, match_pieces, relocalise
from slam.vo_config import VOConfig


@dataclass
class _PosedKeyframe:
    """A keyframe of a piece that never joined, posed in the main map after the last frame:
    camera-to-world in its piece and in the main map (4, 4), and the median depth of the
    points that posed it (main-map units)."""

    piece_world_T_cam_44: np.ndarray
    main_world_T_cam_44: np.ndarray
    depth: float


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
        self._merge_piece(moved, kept, similarity)
        kf.add_observations(found.other_ids_n, found.uv_n2)
        positions = self.world.piece_positions(kept)
        adjust_keyframes(self.world, self.K_33, positions[:2], positions[2:], self.config.global_bundle)
        return True

    def _merge_piece(self, moved: int, kept: int, kept_T_moved: Similarity) -> None:
        """Piece `moved` joins piece `kept`: its keyframes and points move by the similarity
        into `kept`'s frame and scale (the frames posed relative to them follow) and take its id."""
        positions = self.world.piece_positions(moved)
        self.world.transform_piece(moved, kept_T_moved.scale, make_pose_44(kept_T_moved.R_33, kept_T_moved.t_3))
        self._scale_anchors({k: kept_T_moved.scale for k in positions})
        for k in positions:
            self.world.keyframes[k].piece = kept
        self.places.relabel(moved, kept)
        self.history.merged_into[moved] = kept

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
        """After the last frame: relocalise each keyframe of a piece that never joined the main
        map against the main map's places (`slam/relocalise.py`). Once two or more keyframes of
        a piece have been posed so, and one similarity carries them all from their poses in
        the piece to those in the main map, the rest of the piece merges with it, its other
        frames with it; until then each posed keyframe moves alone. A keyframe relocalisation
        cannot pose may still be posed from features triangulated between main-map keyframes
        (`triangulated_seed`): such a pose, which brings no map point, counts only towards a
        merge of its piece, and only where another keyframe still in it is posed too (two
        poses fit a similarity whatever their errors: a keyframe that moved alone and one
        seed would fix the piece's scale by their distance alone), so it is not sought for a
        piece of one keyframe. Rounds repeat while a keyframe joins, as what joined can pose
        the rest. Returns the dataset indices of the keyframes that moved into the main map;
        keyframes whose image was not kept are not relocalised."""
        moved = []
        posed: dict[int, list[_PosedKeyframe]] = {}  # per piece, its keyframes posed in the main map
        while True:
            _, main = pieces_of_frames(self.world, self.history)
            joined = False
            for piece in sorted({kf.piece for kf in self.world.keyframes} - {main}):
                positions = self.world.piece_positions(piece)
                found, seeded = {}, []
                for position in positions:
                    kf = self.world.keyframes[position]
                    if kf.gray_hw is None:
                        continue
                    candidates = self.places_in(kf.gray_hw, kf.features, main)
                    relocalisation = self.relocalise_in(kf.gray_hw, kf.features, candidates)
                    if relocalisation is not None:
                        found[position] = relocalisation
                        continue
                    seed = self._triangulated_pose(kf.features, candidates) if len(positions) >= 2 else None
                    if seed is not None:
                        seed_position, cam_T_world_44 = seed
                        seed_ids_n = self.world.point_ids_n(self.world.keyframes[seed_position])
                        seeded.append(self._posed_keyframe(position, cam_T_world_44, seed_ids_n))
                posed.setdefault(piece, []).extend(
                    self._posed_keyframe(k, r.cam_T_world_44, r.point_ids_n) for k, r in found.items()
                )
                trial = posed[piece] + (seeded if len(found) + len(seeded) >= 2 else [])
                if len(trial) >= 2 and self._merge_by_poses(piece, main, trial):
                    for position, relocalisation in found.items():
                        self.world.keyframes[position].add_observations(relocalisation.point_ids_n, relocalisation.uv_n2)
                    moved += [self.world.keyframes[k].frame_index for k in positions]
                    joined = True
                elif found:
                    for position, relocalisation in found.items():
                        self._move_keyframe(position, relocalisation)
                        moved.append(self.world.keyframes[position].frame_index)
                    joined = True
            if not joined:
                return sorted(moved)

    def _posed_keyframe(self, position: int, cam_T_world_44: np.ndarray, point_ids_n: np.ndarray) -> _PosedKeyframe:
        """The keyframe at `position`'s pose in its piece and the pose `cam_T_world_44` it was
        given in the main map, at the median depth there of the map points `point_ids_n` (N,)
        in front of it: those that posed it, or for a triangulated seed, which brings none,
        those of the keyframe that seeded it."""
        depth_n = transform_n3(cam_T_world_44, self.world.points.xyz_n3[point_ids_n])[:, 2]
        return _PosedKeyframe(
            invert_pose_44(self.world.keyframes[position].cam_T_world_44),
            invert_pose_44(cam_T_world_44),
            float(np.median(depth_n[depth_n > 0])) if (depth_n > 0).any() else 0.0,
        )

    def _merge_by_poses(self, piece: int, main: int, posed: list[_PosedKeyframe]) -> bool:
        """Merge the keyframes left in `piece` into `main` by the similarity that carries the
        `posed` keyframes from their poses in the piece to those in the main map. False
        (nothing changes) when it misplaces one of them: its points at its median depth would
        land farther than `merge_threshold_relative` of that depth from where it was posed."""
        similarity = similarity_from_poses(
            np.stack([p.piece_world_T_cam_44 for p in posed]), np.stack([p.main_world_T_cam_44 for p in posed])
        )
        if similarity is None:
            return False
        for p in posed:
            mapped_44 = similarity.apply_to_world_T_cam_44(p.piece_world_T_cam_44)
            shift = np.linalg.norm(mapped_44[:3, 3] - p.main_world_T_cam_44[:3, 3])
            shift += rotation_angle(mapped_44[:3, :3].T @ p.main_world_T_cam_44[:3, :3]) * p.depth
            if shift > self.config.relocalise.merge_threshold_relative * p.depth:
                return False
        self._merge_piece(piece, main, similarity)
        return True

    def pose_lost(self, gray_of: Callable[[int], np.ndarray]) -> list[int]:
        """After the last frame: relocalise each frame not posed in the main map (lost, waiting
        for a piece that never started, or in a piece that never joined) against the main
        map's places, and where that finds too few of its points, from features triangulated
        between its keyframes (`triangulated_seed`). One that poses is posed relative to the
        keyframe that posed it (and moves with it in the global adjustment), and consecutive
        ones form a run. `gray_of` gives a frame's tracking image (H, W) uint8 by dataset
        index. Returns the dataset indices posed."""
        _, main = pieces_of_frames(self.world, self.history)
        posed = []
        order = self.history.frame_order
        for position, index in enumerate(order):
            anchor = self.history.anchors.get(index)
            if anchor is not None and self.world.keyframes[anchor[0]].piece == main:
                continue
            gray_hw = gray_of(index)
            features = self.places.matcher.detect(gray_hw)
            candidates = self.places_in(gray_hw, features, main)
            found = self.relocalise_in(gray_hw, features, candidates)
            if found is not None:
                pose = (found.position, found.cam_T_world_44)
            else:
                pose = self._triangulated_pose(features, candidates)
            if pose is None:
                continue
            kf_position, cam_T_world_44 = pose
            kf = self.world.keyframes[kf_position]
            self.history.anchors[index] = (kf_position, kf.cam_T_world_44 @ invert_pose_44(cam_T_world_44))
            if not posed or position == 0 or posed[-1] != order[position - 1]:
                self.history.runs.append(Run(index, "relocalised", main))
            posed.append(index)
        return posed

    def _triangulated_pose(self, features: ImageFeatures, candidates: list[int]) -> tuple[int, np.ndarray] | None:
        """The position of the first of the `candidates` keyframes that poses the image with
        ORB `features` from features triangulated between it and its neighbours, agreed on by
        at least `merge_min_inliers`, and that pose (cam_T_world, 4x4); None when none does."""
        for candidate in candidates:
            seed = triangulated_seed(
                self.world, candidate, features, self.places.matcher, self.K_33, self.config.relocalise.guided,
                self.config.relocalise.merge_min_inliers,
            )
            if seed is not None:
                return candidate, seed.cam_T_world_44
        return None

    def places_in(self, gray_hw: np.ndarray, features: ImageFeatures, piece: int) -> list[int]:
        """The keyframes of `piece` that place recognition proposes for a tracking image (H, W)
        with its ORB `features`."""
        return self.places.query(gray_hw, features, among=self.world.piece_positions(piece))

    def relocalise_in(self, gray_hw: np.ndarray, features: ImageFeatures, candidates: list[int]) -> Relocalisation | None:
        """The pose of a tracking image (H, W) with its ORB `features`, relocalised against the
        `candidates` keyframes (`places_in`); None when none poses it."""
        corners_n2, query = self.describer.describe_corners(gray_hw, self.config.relocalise_corners, self.config.klt)
        return relocalise(
            self.world, self.describer, query, corners_n2, gray_hw, features, self.places.matcher, candidates,
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
