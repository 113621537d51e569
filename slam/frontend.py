"""Monocular visual odometry that keeps one map: KLT tracks, PnP per frame, keyframes with
windowed bundle adjustment, relocalisation and merging of pieces.

Each frame's KLT tracks (`slam/tracks.py`) that carry a map point give 2D-3D matches for PnP
(RANSAC, then LM refinement). A keyframe is inserted when the camera has moved far enough
relative to the scene depth, turned, or lost too many tracks. There the map grows
(`slam/local_mapping.py`: lost points re-found, new ones triangulated, the last keyframes
bundle-adjusted, new corners) and the keyframe is remembered for place recognition and joined
with the other pieces and the loops it sees (`slam/joining.py`). Non-keyframe poses are stored
relative to their keyframe, so bundle adjustment moves them too.

When PnP fails (large motion, blur, a blank view, a cut in the video), the frame is
relocalised (`slam/relocalise.py`): its corners are described and matched against the recent
keyframes and the keyframes place recognition proposes, and posed by PnP-RANSAC against their
map points; it becomes a keyframe of the piece it was found in and tracking goes on there.
While no frame relocalises, a new piece is initialised from two views (`slam/piece_start.py`),
with its own gauge and scale (never chained to the last pose); where a keyframe of one piece
later sees a place of another, one is merged into the other. After the last frame every piece
is bundle-adjusted globally (`slam/backend.py`), once the keyframes of pieces that never
joined the main map, and the frames never posed, have been relocalised against it
(`MapJoiner.rejoin`, `MapJoiner.pose_lost`); the piece that posed the most frames is the main
map, and the frames of pieces that never joined it are reported, not posed. Poses are in
"tracking units": a piece's first map has median depth 1.
"""

from __future__ import annotations

import time
from dataclasses import replace

import cv2
import numpy as np
from tqdm import tqdm

from mvs.geometry import invert_pose_44, project_n2, transform_n3
from mvs.types import Camera, Sequence
from slam.backend import adjust_piece_globally
from slam.features import Describer
from slam.image_features import ImageMatcher
from slam.joining import MapJoiner
from slam.klt import track_points_n2
from slam.local_mapping import LocalMapping
from slam.map import Keyframe, SparseMap
from slam.piece_start import PendingFrame, PieceStart, normalise_piece_scale, try_two_view
from slam.pieces import Run, TrackingHistory, main_map_result
from slam.places import PlaceDatabase
from slam.pnp import solve_pnp
from slam.relocalise import match_unmapped, relocalise
from slam.result import TrackingFailed, TrackingResult
from slam.tracks import Tracks
from slam.trajectory import rotation_angle_deg
from slam.twoview import TwoViewResult
from slam.vo_config import VOConfig

__all__ = ["MonocularTracker", "VOConfig", "track_sequence"]


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
        self.matcher = ImageMatcher(self.config.image_features)
        self.places = PlaceDatabase(self.config.places, self.matcher)
        self.history = TrackingHistory(anchors={}, lost=[], frame_order=[], runs=[], merged_into={})
        self.tracks = Tracks(self.map.points, self.config.klt)
        self.joiner = MapJoiner(self.map, self.describer, self.places, self.history, self.K_33, self.config)
        self.mapping = LocalMapping(
            self.map, self.tracks, self.joiner, self.history, self.K_33, self.tracking_size_wh, self.config
        )
        self.piece = -1
        self.next_piece = 0
        self.initialised = False
        self.start: PieceStart | None = None
        self.prev_gray_hw: np.ndarray | None = None
        self.depth_hw: np.ndarray | None = None
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
        gray_hw = self.tracking_gray_hw(image_hw3)
        if self.prev_gray_hw is None:
            self._start_piece(frame_index, gray_hw)
            return
        uv_n2, ok_n = track_points_n2(self.prev_gray_hw, gray_hw, self.tracks.uv_n2, self.config.klt, self._predicted_uv_n2())
        self.tracks.replace(self.tracks.ids_n[ok_n], uv_n2[ok_n])
        self.prev_gray_hw = gray_hw
        if self.initialised:
            self._track(frame_index, gray_hw)
        elif self.keyframes and self._relocalise(frame_index, gray_hw, continuing=False):
            self._abandon_piece()
        else:
            self._try_initialise(frame_index, gray_hw)

    def tracking_gray_hw(self, image_hw3: np.ndarray) -> np.ndarray:
        """The grey tracking image (H, W) uint8 of an RGB frame of the sequence camera's size."""
        gray_hw = cv2.cvtColor(image_hw3, cv2.COLOR_RGB2GRAY)
        if gray_hw.shape[1] != self.tracking_size_wh[0]:
            gray_hw = cv2.resize(gray_hw, self.tracking_size_wh, interpolation=cv2.INTER_AREA)
        return gray_hw

    def _predicted_uv_n2(self) -> np.ndarray | None:
        """Where the tracks should land in the next frame under the constant-velocity motion
        model (N, 2): map points projected by the predicted pose, the other tracks at the
        median depth of the last keyframe; None (search from the last positions) before a
        piece is initialised or when the predicted motion is under `predict_min_px`."""
        if not self.initialised or len(self.tracks) == 0:
            return None
        track_ids_n, track_uv_n2 = self.tracks.ids_n, self.tracks.uv_n2
        last_T_next_44 = invert_pose_44(self.velocity_44)
        has_point_n = self.points.ok_n[track_ids_n]
        last_n3 = np.column_stack([track_uv_n2, np.ones(len(track_uv_n2))]) @ np.linalg.inv(self.K_33).T
        last_n3 *= self.map.median_depth(self.keyframes[-1])
        last_n3[has_point_n] = transform_n3(self.last_cam_T_world_44, self.points.xyz_n3[track_ids_n[has_point_n]])
        predicted_n2, z_n = project_n2(transform_n3(invert_pose_44(last_T_next_44), last_n3), self.K_33)
        usable_n = (z_n > 0) & np.all(np.isfinite(predicted_n2), axis=1)
        predicted_n2 = np.where(usable_n[:, None], predicted_n2, track_uv_n2)
        if np.median(np.linalg.norm(predicted_n2 - track_uv_n2, axis=1)) < self.config.predict_min_px:
            return None
        return predicted_n2

    # ---------------------------------------------------------- initialisation
    def _start_piece(self, frame_index: int, gray_hw: np.ndarray) -> None:
        """Begin a new map with `frame_index` as the two-view reference frame."""
        self.initialised = False
        self.start = PieceStart(frame_index, gray_hw, self.depth_hw)
        self.prev_gray_hw = gray_hw
        self.tracks.clear()
        ids_n = self.tracks.add_corners(gray_hw, birth_kf=-1)
        if self.config.lift_depth and self.depth_hw is not None and self._start_from_depth(frame_index, gray_hw):
            return
        descriptors = self.describer.describe(gray_hw, self.points.birth_uv_n2[ids_n])
        self.start.descriptors = (descriptors, ids_n[descriptors.rows_n])

    def _start_from_depth(self, frame_index: int, gray_hw: np.ndarray) -> bool:
        """With sensor depth, the piece starts at this frame: it becomes the first keyframe and
        its corners are lifted to 3D (metres). False when too few corners have a depth."""
        depth_n = self.mapping.sensor_depth_n(self.depth_hw, self.tracks.uv_n2)
        if np.count_nonzero(np.isfinite(depth_n)) < self.config.init_min_points:
            return False
        self.piece = self.next_piece
        self.next_piece += 1
        self.points.birth_kf_n[self.tracks.ids_n] = len(self.keyframes)
        self.history.runs.append(Run(frame_index, "initialised", self.piece))
        self.initialised = True
        self.velocity_44 = np.eye(4)
        self._insert_keyframe(frame_index, gray_hw, np.eye(4))
        return True

    def _abandon_piece(self) -> None:
        """The reference and pending frames of a piece that never initialised are lost."""
        self.history.lost.extend(self.start.frame_indices())
        self.start.pending = []

    def _try_initialise(self, frame_index: int, gray_hw: np.ndarray) -> None:
        config = self.config
        if len(self.tracks) < config.init_min_tracks:
            self.start.rematch(self.tracks, self.describer, gray_hw, config)
        if len(self.tracks) < config.init_min_tracks or len(self.start.pending) >= config.init_max_frames:
            self._abandon_piece()
            self._start_piece(frame_index, gray_hw)
            return
        self.start.pending.append(PendingFrame(frame_index, self.tracks.ids_n.copy(), self.tracks.uv_n2.astype(np.float64)))
        reference_uv_n2 = self.points.birth_uv_n2[self.tracks.ids_n]
        two_view = try_two_view(reference_uv_n2, self.tracks.uv_n2, self.K_33, config)
        if two_view is not None:
            self._build_initial_map(frame_index, gray_hw, reference_uv_n2, two_view)

    def _build_initial_map(
        self, frame_index: int, gray_hw: np.ndarray, reference_uv_n2: np.ndarray, two_view: TwoViewResult
    ) -> None:
        """A new piece: two keyframes and the triangulated inliers; then pose the pending frames."""
        start, ids_n, inlier_n = self.start, self.tracks.ids_n, two_view.inlier_n
        self.points.xyz_n3[ids_n[inlier_n]] = two_view.points_n3[inlier_n]
        self.points.ok_n[ids_n[inlier_n]] = True
        self.piece = self.next_piece
        self.next_piece += 1
        first_kf = len(self.keyframes)
        self.points.birth_kf_n[ids_n] = first_kf
        all_n = np.ones(len(ids_n), dtype=bool)
        reference = Keyframe(start.frame_index, np.eye(4), ids_n.copy(), reference_uv_n2, all_n, start.gray_hw, self.piece)
        reference.depth_n = self.mapping.sensor_depth_n(start.depth_hw, reference_uv_n2)
        self.keyframes.append(reference)
        self.joiner.remember(first_kf)
        self.keyframes.append(
            Keyframe(frame_index, two_view.b_T_a_44, ids_n.copy(), self.tracks.uv_n2.astype(np.float64), all_n.copy(), gray_hw,
                     self.piece)
        )
        self.history.runs.append(Run(start.frame_index, "initialised", self.piece))
        self.mapping.adjust_window(self.piece)
        normalise_piece_scale(self.map, self.piece, first_kf)
        self.history.anchors[start.frame_index] = (first_kf, np.eye(4))
        self.history.anchors[frame_index] = (first_kf + 1, np.eye(4))
        start.pose_pending(self.map, self.K_33, self.config, first_kf, self.history)
        self.initialised = True
        self.velocity_44 = np.eye(4)
        self.tracks.drop_rejected(self.keyframes[-1])
        self._continue_from_keyframe(self.mapping.finish(gray_hw, self.depth_hw))

    # ---------------------------------------------------------------- tracking
    def _track(self, frame_index: int, gray_hw: np.ndarray) -> None:
        config = self.config
        has_point_n = self.points.ok_n[self.tracks.ids_n]
        guess_44 = self.velocity_44 @ self.last_cam_T_world_44
        pnp = None
        if has_point_n.sum() >= config.pnp_min_inliers:
            pnp = solve_pnp(
                self.points.xyz_n3[self.tracks.ids_n[has_point_n]],
                self.tracks.uv_n2[has_point_n].astype(np.float64),
                self.K_33,
                threshold_px=config.pnp_threshold_px,
                min_inliers=config.pnp_min_inliers,
                cam_T_world_guess_44=guess_44,
            )
        if pnp is None or pnp.inlier_n.mean() < config.pnp_min_inlier_share:
            if not self._relocalise(frame_index, gray_hw, continuing=True):
                self._start_piece(frame_index, gray_hw)
            return
        keep_n = np.ones(len(self.tracks), dtype=bool)
        keep_n[np.nonzero(has_point_n)[0][~pnp.inlier_n]] = False
        self.tracks.keep(keep_n)
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
        joined = self.mapping.insert(frame_index, gray_hw, cam_T_world_44, self.piece, self.depth_hw)
        self._continue_from_keyframe(joined)

    def _continue_from_keyframe(self, joined: bool) -> None:
        """Tracking goes on from the newest keyframe, in its piece (which a merge may have
        renamed); when joining the map moved it (`joined`), the motion model restarts."""
        kf = self.keyframes[-1]
        self.piece = kf.piece
        self.last_cam_T_world_44 = kf.cam_T_world_44
        self.frames_since_keyframe = 0
        if joined:
            self.velocity_44 = np.eye(4)

    def _relocalise(self, frame_index: int, gray_hw: np.ndarray, continuing: bool) -> bool:
        """Pose the frame by descriptor matches against the last keyframes of the current
        piece and the keyframes place recognition proposes; on success it becomes a keyframe
        of the piece it was found in and tracking continues there from its matched points (a
        new run of frames unless `continuing` in the same piece)."""
        corners_n2, query = self.describer.describe_corners(gray_hw, self.config.relocalise_corners, self.config.klt)
        features = self.matcher.detect(gray_hw)
        recent = self.map.piece_positions(self.piece)[-self.config.relocalise.neighbours - 1 :]
        candidates = list(dict.fromkeys(recent[::-1] + self.places.query(gray_hw, features)))
        found = relocalise(
            self.map, self.describer, query, corners_n2, gray_hw, features, self.matcher, candidates, self.K_33,
            self.config.relocalise, self.config.klt,
        )
        if found is None:
            return False
        started = not continuing or found.piece != self.piece
        self.piece = found.piece
        self.initialised = True
        unmapped_ids_n, unmapped_uv_n2 = match_unmapped(
            self.map, self.describer, query, corners_n2, found, self.K_33, self.config.pnp_threshold_px
        )
        self.tracks.replace(
            np.concatenate([found.point_ids_n, unmapped_ids_n]),
            np.concatenate([found.uv_n2, unmapped_uv_n2]).astype(np.float32),
        )
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

    def adjust_globally(self) -> None:
        """Bundle-adjust every piece's keyframes and map points together (`slam/backend.py`)."""
        for piece in sorted({kf.piece for kf in self.keyframes}):
            adjust_piece_globally(self.map, self.K_33, self.tracking_size_wh, piece, self.config)
        if self.initialised:
            self.last_cam_T_world_44 = self.keyframes[-1].cam_T_world_44

    # ------------------------------------------------------------------ result
    def result(self) -> TrackingResult:
        """Poses of the frames posed in the main map so far, its sparse map (tracking units),
        and every run of tracked frames (`slam/pieces.py`)."""
        lost = list(self.history.lost)
        if not self.initialised and self.start is not None:
            lost += self.start.frame_indices()
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
    start = time.perf_counter()
    tracker.joiner.rejoin()
    tracker.joiner.pose_lost(lambda index: tracker.tracking_gray_hw(sequence.load_frame(index).image_hw3))
    if tracker.config.global_adjustment:
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
