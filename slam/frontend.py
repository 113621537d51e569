"""Monocular visual odometry that keeps one map: KLT tracks, PnP per frame, keyframes with
windowed bundle adjustment, relocalisation and merging of pieces.

Each frame's KLT tracks that carry a map point give 2D-3D matches for PnP (RANSAC, then LM
refinement). A keyframe is inserted when the camera has moved far enough relative to the
scene depth, turned, or lost too many tracks. There, map points of recent keyframes that are
no longer tracked are searched for again around their projection; new points are triangulated
between the keyframe where a track was born and the new one; the last keyframes are
bundle-adjusted with fixed older keyframes that see the same points (the gauge and the
monocular scale); new corners fill the image; and the keyframe's observations are described
(`slam/features.py`) and its image remembered for place recognition (`slam/places.py`).
Non-keyframe poses are stored relative to their keyframe, so bundle adjustment moves them too.

When PnP fails (large motion, blur, a blank view, a cut in the video), the frame is
relocalised (`slam/relocalise.py`): its corners are described and matched against the recent
keyframes and the keyframes place recognition proposes, and posed by PnP-RANSAC against their
map points; it becomes a keyframe of the piece it was found in and tracking goes on there.
While no frame relocalises, a new piece is initialised from two views, with its own gauge and
scale (never chained to the last pose). Each new keyframe of a piece is matched against the
other pieces; where they see a common place, the similarity between them is found from their
matched map points and the piece is merged into the other, then both are adjusted together.
After the last frame every piece is bundle-adjusted globally (`slam/backend.py`); the piece
that posed the most frames is the main map, and the frames of pieces that never joined it are
reported, not posed. Poses are in "tracking units": a piece's first map has median depth 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import cv2
import numpy as np
from tqdm import tqdm

from mvs.geometry import backproject_n3, invert_pose_44, project_n2, transform_n3
from mvs.types import Camera, Sequence
from slam.backend import adjust_keyframes, adjust_piece_globally, window_of
from slam.features import Describer, Descriptors
from slam.klt import detect_corners_n2, track_points_n2
from slam.loop_closure import close_loop, correction_size, detect_loop
from slam.map import Keyframe, SparseMap, reacquire, sensor_depth_n
from slam.pieces import Run, TrackingHistory, main_map_result
from slam.places import PlaceDatabase
from slam.pnp import solve_pnp
from slam.relocalise import match_pieces, match_unmapped, relocalise
from slam.result import TrackingFailed, TrackingResult
from slam.trajectory import rotation_angle_deg
from slam.twoview import checked_triangulation, initialise_two_view
from slam.vo_config import VOConfig

__all__ = ["MonocularTracker", "VOConfig", "track_sequence"]


@dataclass
class _PendingFrame:
    """A frame seen before its piece was initialised: its tracks, posed later by PnP."""

    frame_index: int
    track_ids_n: np.ndarray
    uv_n2: np.ndarray


class MonocularTracker:
    """Feed frames in order with `process`; read poses with `result`."""

    def __init__(self, camera: Camera, config: VOConfig | None = None):
        self.config = config or VOConfig()
        for name, lowest in (("window", 1), ("window_fixed", 1), ("max_width", 32), ("pnp_min_inliers", 6)):
            if getattr(self.config, name) < lowest:
                raise ValueError(f"VOConfig.{name}: expected at least {lowest}, got {getattr(self.config, name)}")
        width = min(camera.width, self.config.max_width)
        height = int(round(camera.height * width / camera.width))
        self.tracking_size_wh = (width, height)
        self.K_33 = camera.scaled(width, height).K_33
        self.map = SparseMap()
        self.describer = Describer(self.config.descriptors)
        self.places = PlaceDatabase(self.config.places)
        self.history = TrackingHistory(anchors={}, lost=[], frame_order=[], runs=[], merged_into={})
        self.piece = -1
        self.next_piece = 0
        self.initialised = False
        self.prev_gray_hw: np.ndarray | None = None
        self.track_ids_n = np.zeros(0, dtype=np.int64)
        self.track_uv_n2 = np.zeros((0, 2), dtype=np.float32)
        self.next_track_id = 0
        self.reference_index = -1
        self.reference_gray_hw: np.ndarray | None = None
        self.reference_depth_hw: np.ndarray | None = None
        self.reference_descriptors: tuple[Descriptors, np.ndarray] | None = None
        self.depth_hw: np.ndarray | None = None
        self.pending: list[_PendingFrame] = []
        self.last_cam_T_world_44: np.ndarray | None = None
        self.velocity_44 = np.eye(4)
        self.frames_since_keyframe = 0

    @property
    def keyframes(self) -> list[Keyframe]:
        return self.map.keyframes

    @property
    def points(self):
        return self.map.points

    # ------------------------------------------------------------------ frames
    def process(self, frame_index: int, image_hw3: np.ndarray, depth_hw: np.ndarray | None = None) -> None:
        """Track one RGB uint8 frame (H, W, 3) of the sequence camera's size, with its
        sensor depth (H, W) in metres (0 invalid) when the global adjustment should use it."""
        self.depth_hw = depth_hw
        self.history.frame_order.append(frame_index)
        gray_hw = cv2.cvtColor(image_hw3, cv2.COLOR_RGB2GRAY)
        if gray_hw.shape[1] != self.tracking_size_wh[0]:
            gray_hw = cv2.resize(gray_hw, self.tracking_size_wh, interpolation=cv2.INTER_AREA)
        if self.prev_gray_hw is None:
            self._start_piece(frame_index, gray_hw)
            return
        uv_n2, ok_n = track_points_n2(self.prev_gray_hw, gray_hw, self.track_uv_n2, self.config.klt, self._predicted_uv_n2())
        self.track_ids_n = self.track_ids_n[ok_n]
        self.track_uv_n2 = uv_n2[ok_n]
        self.prev_gray_hw = gray_hw
        if self.initialised:
            self._track(frame_index, gray_hw)
        elif self.keyframes and self._relocalise(frame_index, gray_hw, continuing=False):
            self._abandon_piece()
        else:
            self._try_initialise(frame_index, gray_hw)

    def _predicted_uv_n2(self) -> np.ndarray | None:
        """Where the tracks should land in the next frame under the constant-velocity motion
        model (N, 2): map points projected by the predicted pose, the other tracks at the
        median depth of the last keyframe; None (search from the last positions) before a
        piece is initialised or when the predicted motion is under `predict_min_px`."""
        if not self.initialised or len(self.track_ids_n) == 0:
            return None
        last_T_next_44 = invert_pose_44(self.velocity_44)
        has_point_n = self.points.ok_n[self.track_ids_n]
        last_n3 = np.column_stack([self.track_uv_n2, np.ones(len(self.track_uv_n2))]) @ np.linalg.inv(self.K_33).T
        last_n3 *= self.map.median_depth(self.keyframes[-1])
        last_n3[has_point_n] = transform_n3(self.last_cam_T_world_44, self.points.xyz_n3[self.track_ids_n[has_point_n]])
        predicted_n2, z_n = project_n2(transform_n3(invert_pose_44(last_T_next_44), last_n3), self.K_33)
        usable_n = (z_n > 0) & np.all(np.isfinite(predicted_n2), axis=1)
        predicted_n2 = np.where(usable_n[:, None], predicted_n2, self.track_uv_n2)
        if np.median(np.linalg.norm(predicted_n2 - self.track_uv_n2, axis=1)) < self.config.predict_min_px:
            return None
        return predicted_n2

    def _start_piece(self, frame_index: int, gray_hw: np.ndarray) -> None:
        """Begin a new map with `frame_index` as the two-view reference frame."""
        self.initialised = False
        self.reference_index = frame_index
        self.reference_gray_hw = gray_hw
        self.reference_depth_hw = self.depth_hw
        self.pending = []
        self.prev_gray_hw = gray_hw
        self.track_ids_n = np.zeros(0, dtype=np.int64)
        self.track_uv_n2 = np.zeros((0, 2), dtype=np.float32)
        ids_n = self._add_corners(gray_hw, birth_kf=-1)
        if self.config.lift_depth and self.depth_hw is not None and self._start_from_depth(frame_index, gray_hw):
            return
        descriptors = self.describer.describe(gray_hw, self.points.birth_uv_n2[ids_n])
        self.reference_descriptors = (descriptors, ids_n[descriptors.rows_n])

    def _start_from_depth(self, frame_index: int, gray_hw: np.ndarray) -> bool:
        """With sensor depth, the piece starts at this frame: it becomes the first keyframe and
        its corners are lifted to 3D (metres). False when too few corners have a depth."""
        depth_n = self._sensor_depth_n(self.depth_hw, self.track_uv_n2)
        if np.count_nonzero(np.isfinite(depth_n)) < self.config.init_min_points:
            return False
        self.piece = self.next_piece
        self.next_piece += 1
        self.points.birth_kf_n[self.track_ids_n] = len(self.keyframes)
        self.history.runs.append(Run(frame_index, "initialised", self.piece))
        self.initialised = True
        self.velocity_44 = np.eye(4)
        self._insert_keyframe(frame_index, gray_hw, np.eye(4))
        return True

    def _add_corners(self, gray_hw: np.ndarray, birth_kf: int) -> np.ndarray:
        """Start tracks at new corners; returns their ids."""
        uv_n2 = detect_corners_n2(
            gray_hw, self.track_uv_n2, self.config.klt.max_corners - len(self.track_ids_n), self.config.klt
        )
        ids_n = np.arange(self.next_track_id, self.next_track_id + len(uv_n2))
        self.next_track_id += len(uv_n2)
        self.points.reserve(self.next_track_id)
        self.points.birth_kf_n[ids_n] = birth_kf
        self.points.birth_uv_n2[ids_n] = uv_n2
        self.track_ids_n = np.concatenate([self.track_ids_n, ids_n])
        self.track_uv_n2 = np.concatenate([self.track_uv_n2, uv_n2])
        return ids_n

    def _abandon_piece(self) -> None:
        """The reference and pending frames of a piece that never initialised are lost."""
        self.history.lost.append(self.reference_index)
        self.history.lost.extend(p.frame_index for p in self.pending)
        self.pending = []

    # ---------------------------------------------------------- initialisation
    def _try_initialise(self, frame_index: int, gray_hw: np.ndarray) -> None:
        config = self.config
        if len(self.track_ids_n) < config.init_min_tracks:
            self._rematch_reference(gray_hw)
        if len(self.track_ids_n) < config.init_min_tracks or len(self.pending) >= config.init_max_frames:
            self._abandon_piece()
            self._start_piece(frame_index, gray_hw)
            return
        self.pending.append(_PendingFrame(frame_index, self.track_ids_n.copy(), self.track_uv_n2.astype(np.float64)))
        reference_uv_n2 = self.points.birth_uv_n2[self.track_ids_n]
        flow_px = float(np.median(np.linalg.norm(self.track_uv_n2 - reference_uv_n2, axis=1)))
        if flow_px < config.init_min_flow_px:
            return
        two_view = initialise_two_view(
            reference_uv_n2,
            self.track_uv_n2,
            self.K_33,
            ransac_threshold_px=config.init_ransac_px,
            min_inliers=config.init_min_points,
            min_median_angle_deg=config.init_min_parallax_deg,
            max_error_px=config.triangulation_max_error_px,
            min_point_angle_deg=config.triangulation_min_angle_deg,
        )
        if two_view is None:
            return
        self._build_initial_map(frame_index, gray_hw, reference_uv_n2, two_view.b_T_a_44, two_view.points_n3, two_view.inlier_n)

    def _rematch_reference(self, gray_hw: np.ndarray) -> None:
        """Where KLT lost the reference frame's corners (a large motion), find them again by
        descriptor matches; they replace the tracks when there are more of them."""
        descriptors, ids_n = self.reference_descriptors
        corners_n2 = detect_corners_n2(gray_hw, np.zeros((0, 2)), self.config.relocalise_corners, self.config.klt)
        query = self.describer.describe(gray_hw, corners_n2)
        query_k, train_k = self.describer.match(query, descriptors)
        if len(query_k) > len(self.track_ids_n):
            self.track_ids_n = ids_n[train_k]
            self.track_uv_n2 = corners_n2[query.rows_n[query_k]].astype(np.float32)

    def _build_initial_map(
        self,
        frame_index: int,
        gray_hw: np.ndarray,
        reference_uv_n2: np.ndarray,
        b_T_a_44: np.ndarray,
        points_n3: np.ndarray,
        inlier_n: np.ndarray,
    ) -> None:
        """A new piece: two keyframes and the triangulated inliers; then pose the pending frames."""
        ids_n = self.track_ids_n
        self.points.xyz_n3[ids_n[inlier_n]] = points_n3[inlier_n]
        self.points.ok_n[ids_n[inlier_n]] = True
        self.piece = self.next_piece
        self.next_piece += 1
        first_kf = len(self.keyframes)
        self.points.birth_kf_n[ids_n] = first_kf
        all_n = np.ones(len(ids_n), dtype=bool)
        reference = Keyframe(self.reference_index, np.eye(4), ids_n.copy(), reference_uv_n2, all_n, self.reference_gray_hw, self.piece)
        reference.depth_n = self._sensor_depth_n(self.reference_depth_hw, reference_uv_n2)
        self.keyframes.append(reference)
        self._remember(first_kf)
        self.keyframes.append(
            Keyframe(frame_index, b_T_a_44, ids_n.copy(), self.track_uv_n2.astype(np.float64), all_n.copy(), gray_hw, self.piece)
        )
        self.history.runs.append(Run(self.reference_index, "initialised", self.piece))
        self._local_bundle_adjustment()
        self._normalise_piece_scale(first_kf)
        self.history.anchors[self.reference_index] = (first_kf, np.eye(4))
        self.history.anchors[frame_index] = (first_kf + 1, np.eye(4))
        for pending in self.pending[:-1]:
            self._pose_pending_frame(pending, first_kf)
        self.pending = []
        self.initialised = True
        self.last_cam_T_world_44 = self.keyframes[-1].cam_T_world_44
        self.velocity_44 = np.eye(4)
        self._drop_outlier_tracks(self.keyframes[-1])
        self._finish_keyframe(gray_hw)

    def _normalise_piece_scale(self, first_kf: int) -> None:
        """Scale the new piece's map so its first keyframe sees a median depth of 1."""
        kf0 = self.keyframes[first_kf]
        ids_n = kf0.track_ids_n[self.points.ok_n[kf0.track_ids_n]]
        depth = float(np.median(transform_n3(kf0.cam_T_world_44, self.points.xyz_n3[ids_n])[:, 2]))
        self.map.transform_piece(self.piece, 1.0 / depth, np.eye(4))

    def _pose_pending_frame(self, pending: _PendingFrame, first_kf: int) -> None:
        has_point_n = self.points.ok_n[pending.track_ids_n]
        pnp = solve_pnp(
            self.points.xyz_n3[pending.track_ids_n[has_point_n]],
            pending.uv_n2[has_point_n],
            self.K_33,
            threshold_px=self.config.pnp_threshold_px,
            min_inliers=self.config.pnp_min_inliers,
            cam_T_world_guess_44=self.keyframes[first_kf].cam_T_world_44,
        )
        if pnp is None:
            self.history.lost.append(pending.frame_index)
            return
        kf_T_cam_44 = self.keyframes[first_kf].cam_T_world_44 @ invert_pose_44(pnp.cam_T_world_44)
        self.history.anchors[pending.frame_index] = (first_kf, kf_T_cam_44)

    # ---------------------------------------------------------------- tracking
    def _track(self, frame_index: int, gray_hw: np.ndarray) -> None:
        config = self.config
        has_point_n = self.points.ok_n[self.track_ids_n]
        guess_44 = self.velocity_44 @ self.last_cam_T_world_44
        pnp = None
        if has_point_n.sum() >= config.pnp_min_inliers:
            pnp = solve_pnp(
                self.points.xyz_n3[self.track_ids_n[has_point_n]],
                self.track_uv_n2[has_point_n].astype(np.float64),
                self.K_33,
                threshold_px=config.pnp_threshold_px,
                min_inliers=config.pnp_min_inliers,
                cam_T_world_guess_44=guess_44,
            )
        if pnp is None:
            if not self._relocalise(frame_index, gray_hw, continuing=True):
                self._start_piece(frame_index, gray_hw)
            return
        keep_n = np.ones(len(self.track_ids_n), dtype=bool)
        keep_n[np.nonzero(has_point_n)[0][~pnp.inlier_n]] = False
        self.track_ids_n = self.track_ids_n[keep_n]
        self.track_uv_n2 = self.track_uv_n2[keep_n]
        cam_T_world_44 = pnp.cam_T_world_44
        self.velocity_44 = cam_T_world_44 @ invert_pose_44(self.last_cam_T_world_44)
        self.last_cam_T_world_44 = cam_T_world_44
        self.frames_since_keyframe += 1
        if self._needs_keyframe(cam_T_world_44, int(pnp.inlier_n.sum())):
            self._insert_keyframe(frame_index, gray_hw, cam_T_world_44)
        else:
            kf = self.keyframes[-1]
            self.history.anchors[frame_index] = (len(self.keyframes) - 1, kf.cam_T_world_44 @ invert_pose_44(cam_T_world_44))

    def _insert_keyframe(self, frame_index: int, gray_hw: np.ndarray, cam_T_world_44: np.ndarray) -> None:
        """The frame (posed at `cam_T_world_44`, observing the current tracks) joins the map."""
        n = len(self.track_ids_n)
        kf = Keyframe(frame_index, cam_T_world_44, self.track_ids_n.copy(), self.track_uv_n2.astype(np.float64),
                      np.ones(n, dtype=bool), gray_hw, self.piece)
        kf.depth_n = self._sensor_depth_n(self.depth_hw, kf.uv_n2)
        self.keyframes.append(kf)
        self.history.anchors[frame_index] = (len(self.keyframes) - 1, np.eye(4))
        self._reacquire(kf)
        self._triangulate(kf)
        self._local_bundle_adjustment()
        self.last_cam_T_world_44 = kf.cam_T_world_44
        self._drop_outlier_tracks(kf)
        self._finish_keyframe(gray_hw)

    def _relocalise(self, frame_index: int, gray_hw: np.ndarray, continuing: bool) -> bool:
        """Pose the frame by descriptor matches against the last keyframes of the current
        piece and the keyframes place recognition proposes; on success it becomes a keyframe
        of the piece it was found in and tracking continues there from its matched points (a
        new run of frames unless `continuing` in the same piece)."""
        corners_n2 = detect_corners_n2(gray_hw, np.zeros((0, 2)), self.config.relocalise_corners, self.config.klt)
        query = self.describer.describe(gray_hw, corners_n2)
        recent = self.map.piece_positions(self.piece)[-self.config.relocalise.neighbours - 1 :]
        candidates = list(dict.fromkeys(recent[::-1] + self.places.query(gray_hw)))
        found = relocalise(
            self.map, self.describer, query, corners_n2, gray_hw, candidates, self.K_33, self.config.relocalise, self.config.klt
        )
        if found is None:
            return False
        started = not continuing or found.piece != self.piece
        self.piece = found.piece
        self.initialised = True
        unmapped_ids_n, unmapped_uv_n2 = match_unmapped(
            self.map, self.describer, query, corners_n2, found, self.K_33, self.config.pnp_threshold_px
        )
        self.track_ids_n = np.concatenate([found.point_ids_n, unmapped_ids_n])
        self.track_uv_n2 = np.concatenate([found.uv_n2, unmapped_uv_n2]).astype(np.float32)
        self.velocity_44 = np.eye(4)
        self.last_cam_T_world_44 = found.cam_T_world_44
        if started:
            self.history.runs.append(Run(frame_index, "relocalised", self.piece))
        self._insert_keyframe(frame_index, gray_hw, found.cam_T_world_44)
        return True

    def _needs_keyframe(self, cam_T_world_44: np.ndarray, tracked: int) -> bool:
        config = self.config
        kf = self.keyframes[-1]
        kf_T_cam_44 = kf.cam_T_world_44 @ invert_pose_44(cam_T_world_44)
        baseline = float(np.linalg.norm(kf_T_cam_44[:3, 3]))
        return (
            baseline > config.keyframe_baseline_ratio * self.map.median_depth(kf)
            or rotation_angle_deg(kf_T_cam_44[:3, :3]) > config.keyframe_rotation_deg
            or tracked < config.keyframe_min_tracked
            or self.frames_since_keyframe >= config.keyframe_max_gap
        )

    def _finish_keyframe(self, gray_hw: np.ndarray) -> None:
        """New corners at the newest keyframe, which also observes them; its observations
        described and its image remembered for place recognition; images of keyframes too old
        to re-find points from are released, unless the global adjustment will search them;
        then the keyframe is matched against the other pieces."""
        kf = self.keyframes[-1]
        searched_later = self.config.global_adjustment and self.depth_hw is None
        if len(self.keyframes) > self.config.reacquire_keyframes + 1 and not searched_later:
            self.keyframes[-self.config.reacquire_keyframes - 2].gray_hw = None
        new_ids_n = self._add_corners(gray_hw, birth_kf=len(self.keyframes) - 1)
        kf.track_ids_n = np.concatenate([kf.track_ids_n, new_ids_n])
        kf.uv_n2 = np.concatenate([kf.uv_n2, self.points.birth_uv_n2[new_ids_n]])
        kf.valid_n = np.concatenate([kf.valid_n, np.ones(len(new_ids_n), dtype=bool)])
        kf.depth_n = self._sensor_depth_n(self.depth_hw, kf.uv_n2)
        if self.config.lift_depth and kf.depth_n is not None:
            self._lift(kf)
        self._remember(len(self.keyframes) - 1)
        self.frames_since_keyframe = 0
        if any(other.piece != self.piece for other in self.keyframes):
            self._try_merge(len(self.keyframes) - 1)
        if self.config.loop.enabled:
            self._try_close_loop(len(self.keyframes) - 1)

    def _remember(self, position: int) -> None:
        """Describe the observations of the keyframe at `position` and add it to the places."""
        kf = self.keyframes[position]
        kf.descriptors = self.describer.describe(kf.gray_hw, kf.uv_n2)
        self.places.add(position, kf.piece, kf.gray_hw)

    def _try_merge(self, position: int) -> None:
        """Merge the current piece with another one that the keyframe at `position` sees: the
        piece with fewer keyframes moves into the other's frame and scale and takes its id."""
        kf = self.keyframes[position]
        candidates = self.places.query(kf.gray_hw, exclude_piece=kf.piece)
        found = match_pieces(self.map, self.describer, position, candidates, self.config.relocalise)
        if found is None:
            return
        moved, kept = kf.piece, self.keyframes[found.other_position].piece
        similarity = found.other_T_piece
        if len(self.map.piece_positions(moved)) > len(self.map.piece_positions(kept)):
            moved, kept, similarity = kept, moved, similarity.inverse()
        kept_T_moved_44 = np.eye(4)
        kept_T_moved_44[:3, :3], kept_T_moved_44[:3, 3] = similarity.R_33, similarity.t_3
        self.map.transform_piece(moved, similarity.scale, kept_T_moved_44)
        self._scale_anchors({k: similarity.scale for k in self.map.piece_positions(moved)})
        for other in self.keyframes:
            if other.piece == moved:
                other.piece = kept
        self.places.relabel(moved, kept)
        self.history.merged_into[moved] = kept
        kf.add_observations(found.other_ids_n, found.uv_n2)
        self.piece = kept
        positions = self.map.piece_positions(kept)
        adjust_keyframes(self.map, self.K_33, positions[:2], positions[2:], self.config.global_bundle)
        self.last_cam_T_world_44 = self.keyframes[-1].cam_T_world_44
        self.velocity_44 = np.eye(4)

    def _try_close_loop(self, position: int) -> None:
        """Correct the drift along a loop that the keyframe at `position` closes, if any."""
        loop = detect_loop(
            self.map, self.describer, self.places, position, self.config.loop_min_gap, self.config.loop, self.config.relocalise
        )
        if loop is None:
            return
        if correction_size(self.map, loop) < self.config.loop.min_correction:
            self.keyframes[position].add_observations(loop.other_ids_n, loop.uv_n2)
            return
        self._scale_anchors(close_loop(self.map, loop, self.config.loop))
        self.last_cam_T_world_44 = self.keyframes[-1].cam_T_world_44
        self.velocity_44 = np.eye(4)

    def _scale_anchors(self, scale_of_position: dict[int, float]) -> None:
        """Frames posed relative to the keyframes whose camera frame changed scale follow it."""
        for frame_index, (position, kf_T_cam_44) in self.history.anchors.items():
            if position in scale_of_position:
                scaled_44 = kf_T_cam_44.copy()
                scaled_44[:3, 3] *= scale_of_position[position]
                self.history.anchors[frame_index] = (position, scaled_44)

    def _sensor_depth_n(self, depth_hw: np.ndarray | None, uv_n2: np.ndarray) -> np.ndarray | None:
        """Sensor depth (N,) in metres at tracking-image pixels (N, 2), or None without a depth map."""
        if depth_hw is None:
            return None
        return sensor_depth_n(depth_hw, uv_n2, depth_hw.shape[1] / self.tracking_size_wh[0], self.config.depth_max_spread)

    def _reacquire(self, kf: Keyframe) -> None:
        """Re-find map points of the piece's recent keyframes that are no longer tracked in the
        new keyframe `kf` (`slam/map.py`, `reacquire`); they are tracked from now on."""
        config = self.config
        position = len(self.keyframes) - 1
        sources = [k for k in self.map.piece_positions(self.piece)[-config.reacquire_keyframes - 1 :] if k != position]
        found_ids_n, found_uv_n2 = reacquire(
            self.map, position, sources, self.track_ids_n, self.track_uv_n2, self.K_33, config.reacquire_radius_px, config.klt
        )
        self.track_ids_n = np.concatenate([self.track_ids_n, found_ids_n])
        self.track_uv_n2 = np.concatenate([self.track_uv_n2, found_uv_n2.astype(np.float32)])
        kf.add_observations(found_ids_n, found_uv_n2)

    def _triangulate(self, kf: Keyframe) -> None:
        """Points for the keyframe's tracks born at an earlier keyframe of its piece."""
        ids_n = kf.track_ids_n
        birth_n = self.points.birth_kf_n[ids_n]
        same_piece_n = np.array([b >= 0 and self.keyframes[b].piece == kf.piece for b in birth_n], dtype=bool)
        candidate_n = ~self.points.ok_n[ids_n] & same_piece_n & (birth_n < len(self.keyframes) - 1)
        for birth_kf in np.unique(birth_n[candidate_n]):
            select_n = candidate_n & (birth_n == birth_kf)
            points_n3, good_n, _ = checked_triangulation(
                self.K_33,
                self.keyframes[birth_kf].cam_T_world_44,
                kf.cam_T_world_44,
                self.points.birth_uv_n2[ids_n[select_n]],
                kf.uv_n2[select_n],
                self.config.triangulation_max_error_px,
                self.config.triangulation_min_angle_deg,
            )
            new_ids_n = ids_n[select_n][good_n]
            self.points.xyz_n3[new_ids_n] = points_n3[good_n]
            self.points.ok_n[new_ids_n] = True

    def _lift(self, kf: Keyframe) -> None:
        """Points for the keyframe's tracks that have none, from their sensor depth."""
        lift_n = ~self.points.ok_n[kf.track_ids_n] & np.isfinite(kf.depth_n)
        cam_n3 = backproject_n3(kf.uv_n2[lift_n], kf.depth_n[lift_n], self.K_33)
        self.points.xyz_n3[kf.track_ids_n[lift_n]] = transform_n3(invert_pose_44(kf.cam_T_world_44), cam_n3)
        self.points.ok_n[kf.track_ids_n[lift_n]] = True

    def _local_bundle_adjustment(self) -> None:
        fixed, free = window_of(self.map, self.piece, self.config)
        if fixed and free:
            depth_sigma = self.config.depth_sigma_relative if self.config.lift_depth else None
            adjust_keyframes(self.map, self.K_33, fixed, free, self.config.bundle, depth_sigma)

    def adjust_globally(self) -> None:
        """Bundle-adjust every piece's keyframes and map points together (`slam/backend.py`)."""
        for piece in sorted({kf.piece for kf in self.keyframes}):
            adjust_piece_globally(self.map, self.K_33, self.tracking_size_wh, piece, self.config)
        if self.initialised:
            self.last_cam_T_world_44 = self.keyframes[-1].cam_T_world_44

    def _drop_outlier_tracks(self, kf: Keyframe) -> None:
        """Stop tracks whose observation in the newest keyframe was rejected."""
        rejected_ids_n = kf.track_ids_n[~kf.valid_n]
        keep_n = ~np.isin(self.track_ids_n, rejected_ids_n)
        self.track_ids_n = self.track_ids_n[keep_n]
        self.track_uv_n2 = self.track_uv_n2[keep_n]

    # ------------------------------------------------------------------ result
    def result(self) -> TrackingResult:
        """Poses of the frames posed in the main map so far, its sparse map (tracking units),
        and every run of tracked frames (`slam/pieces.py`)."""
        lost = list(self.history.lost)
        if not self.initialised and self.reference_index >= 0:
            lost += [self.reference_index] + [p.frame_index for p in self.pending]
        return main_map_result(self.map, replace(self.history, lost=lost))


def track_sequence(
    sequence: Sequence, config: VOConfig | None = None, progress: bool = True, use_depth: bool = False
) -> TrackingResult:
    """Monocular visual odometry over every frame of `sequence` (poses in tracking units);
    `use_depth`: the global adjustment also fits the frames' sensor depth (up to one scale).

    Raises TrackingFailed, carrying the partial result, when no two frames of the sequence
    had enough parallax and texture to initialise a map.
    """
    tracker = MonocularTracker(sequence.camera, config)
    seconds = 0.0
    for frame in tqdm(sequence, total=len(sequence), desc="tracking", unit="frame", disable=not progress):
        start = time.perf_counter()
        tracker.process(frame.index, frame.image_hw3, frame.depth_hw if use_depth else None)
        seconds += time.perf_counter() - start
    if tracker.config.global_adjustment:
        start = time.perf_counter()
        tracker.adjust_globally()
        seconds += time.perf_counter() - start
    result = tracker.result()
    result.tracking_seconds = seconds
    if not result.world_T_cam_44:
        raise TrackingFailed(
            f"{sequence.root}: monocular tracking never initialised over {len(sequence)} frames: "
            "no two frames had enough tracked corners with parallax (the camera must translate, "
            "not only rotate, over a textured scene)",
            result,
        )
    return result
