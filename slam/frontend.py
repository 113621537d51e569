"""Monocular visual odometry: KLT tracks, PnP per frame, keyframes with windowed bundle adjustment.

Each frame's KLT tracks that carry a map point give 2D-3D matches for PnP (RANSAC, then
LM refinement). A keyframe is inserted when the camera has moved far enough relative to
the scene depth, turned, or lost too many tracks. There, map points of recent keyframes
that are no longer tracked are searched for again around their projection; new points
are triangulated between the keyframe where a track was born and the new one; the last
keyframes are bundle-adjusted together with fixed older keyframes that see the same
points (which fixes the gauge and the monocular scale); and new corners fill the image.
Non-keyframe poses are stored relative to their keyframe, so bundle adjustment moves
them too; after the last frame, all keyframes and points of each segment are adjusted
together. When tracking is lost the tracker re-initialises
from two views and chains the new segment to the last pose of the old one (same pose,
same median scene depth). Poses are in "tracking units": the first map has median
depth 1.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from mvs.geometry import invert_pose_44, project_n2, transform_n3
from mvs.types import Camera, Sequence
from slam.bundle import BundleConfig, ObservedDepth, bundle_adjust
from slam.klt import KLTConfig, detect_corners_n2, free_mask_hw, track_points_n2
from slam.pnp import solve_pnp
from slam.result import TRACKING_UNITS, TrackingFailed, TrackingResult
from slam.trajectory import rotation_angle_deg
from slam.twoview import checked_triangulation, initialise_two_view


@dataclass
class VOConfig:
    """Monocular tracker settings; pixel values refer to the tracking image, which is the
    input downscaled to at most `max_width` pixels wide.

    init_*: two-view initialisation is tried once the median flow from the reference frame
    exceeds `init_min_flow_px`, and succeeds with at least `init_min_points` points and a
    median triangulation angle of `init_min_parallax_deg`; the reference frame is replaced
    when fewer than `init_min_tracks` tracks survive or after `init_max_frames` frames.
    pnp_*: RANSAC threshold and the fewest inliers for a frame to count as tracked.
    triangulation_*: the smallest ray angle and largest reprojection error of a new point.
    keyframe_*: a keyframe is inserted when the camera moved `keyframe_baseline_ratio`
    times the median scene depth from the last keyframe, turned by `keyframe_rotation_deg`,
    tracks fewer than `keyframe_min_tracked` map points, or after `keyframe_max_gap` frames.
    window: keyframes optimised by bundle adjustment, with up to `window_fixed` older ones
    fixed. global_adjustment: at the end, bundle-adjust all keyframes of each segment at
    once (`global_bundle`), after searching every keyframe for the map points of keyframes
    more than `loop_min_gap` keyframes away whose camera is within `loop_max_distance_ratio`
    times its median scene depth, within `loop_radius_px` of their projection
    (which ties revisited places together; keyframe images are kept for it); where frames come with sensor depth, the depths of the
    keyframes' points join it as measurements with a standard deviation of
    `depth_sigma_relative` times the depth, which holds the scale along the trajectory
    (a point's depth is read where the sensor's 3x3 neighbourhood spreads by at most
    `depth_max_spread` of it). reacquire_*: at a keyframe, untracked points of the last
    `reacquire_keyframes` keyframes are searched for within `reacquire_radius_px` of their
    projection.
    """

    max_width: int = 640
    klt: KLTConfig = field(default_factory=KLTConfig)
    bundle: BundleConfig = field(default_factory=lambda: BundleConfig(iterations=6, rounds=2))
    init_min_tracks: int = 80
    init_min_points: int = 60
    init_min_flow_px: float = 20.0
    init_min_parallax_deg: float = 1.5
    init_ransac_px: float = 1.0
    init_max_frames: int = 60
    pnp_threshold_px: float = 2.0
    pnp_min_inliers: int = 25
    triangulation_min_angle_deg: float = 1.0
    triangulation_max_error_px: float = 2.0
    keyframe_baseline_ratio: float = 0.05
    keyframe_rotation_deg: float = 10.0
    keyframe_min_tracked: int = 100
    keyframe_max_gap: int = 20
    window: int = 6
    window_fixed: int = 4
    global_bundle: BundleConfig = field(default_factory=lambda: BundleConfig(iterations=10, rounds=2))
    global_adjustment: bool = True
    loop_min_gap: int = 15
    loop_max_distance_ratio: float = 0.5
    loop_radius_px: float = 40.0
    depth_sigma_relative: float = 0.005
    depth_max_spread: float = 0.03
    reacquire_keyframes: int = 10
    reacquire_radius_px: float = 4.0


@dataclass
class _Keyframe:
    """A keyframe's pose and its observations: track ids (N,) at pixels (N, 2); `valid_n`
    is False where bundle adjustment rejected the observation; `gray_hw` is the tracking
    image, kept while the keyframe is recent enough to re-find points from (to the end with
    the global adjustment); `depth_n` the
    sensor depth (metres, nan where invalid) at each observation, when the frame had it."""

    frame_index: int
    cam_T_world_44: np.ndarray
    track_ids_n: np.ndarray
    uv_n2: np.ndarray
    valid_n: np.ndarray
    gray_hw: np.ndarray | None
    depth_n: np.ndarray | None = None


@dataclass
class _PendingFrame:
    """A frame seen before its segment was initialised: its tracks, posed later by PnP."""

    frame_index: int
    track_ids_n: np.ndarray
    uv_n2: np.ndarray


class _PointStore:
    """Map points indexed by the id of the track that created them (one point per track)."""

    def __init__(self) -> None:
        self.xyz_n3 = np.zeros((1024, 3))
        self.ok_n = np.zeros(1024, dtype=bool)
        self.birth_kf_n = np.full(1024, -1, dtype=np.int64)
        self.birth_uv_n2 = np.zeros((1024, 2))

    def reserve(self, count: int) -> None:
        """Grow the arrays (doubling) until they hold at least `count` tracks."""
        while count > len(self.ok_n):
            size = len(self.ok_n)
            self.xyz_n3 = np.concatenate([self.xyz_n3, np.zeros((size, 3))])
            self.ok_n = np.concatenate([self.ok_n, np.zeros(size, dtype=bool)])
            self.birth_kf_n = np.concatenate([self.birth_kf_n, np.full(size, -1, dtype=np.int64)])
            self.birth_uv_n2 = np.concatenate([self.birth_uv_n2, np.zeros((size, 2))])


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
        self.points = _PointStore()
        self.keyframes: list[_Keyframe] = []
        self.anchors: dict[int, tuple[int, np.ndarray]] = {}
        self.lost: list[int] = []
        self.segment_first_kf = 0
        self.segment_starts: list[int] = []
        self.initialised = False
        self.prev_gray_hw: np.ndarray | None = None
        self.track_ids_n = np.zeros(0, dtype=np.int64)
        self.track_uv_n2 = np.zeros((0, 2), dtype=np.float32)
        self.next_track_id = 0
        self.reference_index = -1
        self.reference_gray_hw: np.ndarray | None = None
        self.reference_depth_hw: np.ndarray | None = None
        self.depth_hw: np.ndarray | None = None
        self.pending: list[_PendingFrame] = []
        self.last_cam_T_world_44: np.ndarray | None = None
        self.velocity_44 = np.eye(4)
        self.frames_since_keyframe = 0

    # ------------------------------------------------------------------ frames
    def process(self, frame_index: int, image_hw3: np.ndarray, depth_hw: np.ndarray | None = None) -> None:
        """Track one RGB uint8 frame (H, W, 3) of the sequence camera's size, with its
        sensor depth (H, W) in metres (0 invalid) when the global adjustment should use it."""
        self.depth_hw = depth_hw
        gray_hw = cv2.cvtColor(image_hw3, cv2.COLOR_RGB2GRAY)
        if gray_hw.shape[1] != self.tracking_size_wh[0]:
            gray_hw = cv2.resize(gray_hw, self.tracking_size_wh, interpolation=cv2.INTER_AREA)
        if self.prev_gray_hw is None:
            self._start_segment(frame_index, gray_hw)
            return
        uv_n2, ok_n = track_points_n2(self.prev_gray_hw, gray_hw, self.track_uv_n2, self.config.klt)
        self.track_ids_n = self.track_ids_n[ok_n]
        self.track_uv_n2 = uv_n2[ok_n]
        self.prev_gray_hw = gray_hw
        if self.initialised:
            self._track(frame_index, gray_hw)
        else:
            self._try_initialise(frame_index, gray_hw)

    def _start_segment(self, frame_index: int, gray_hw: np.ndarray) -> None:
        """Begin a new map with `frame_index` as the two-view reference frame."""
        self.segment_first_kf = len(self.keyframes)
        self.initialised = False
        self.reference_index = frame_index
        self.reference_gray_hw = gray_hw
        self.reference_depth_hw = self.depth_hw
        self.pending = []
        self.prev_gray_hw = gray_hw
        self.track_ids_n = np.zeros(0, dtype=np.int64)
        self.track_uv_n2 = np.zeros((0, 2), dtype=np.float32)
        self._add_corners(gray_hw, birth_kf=-1)

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

    def _abandon_segment(self) -> None:
        """The reference and pending frames of a segment that never initialised are lost."""
        self.lost.append(self.reference_index)
        self.lost.extend(p.frame_index for p in self.pending)

    # ---------------------------------------------------------- initialisation
    def _try_initialise(self, frame_index: int, gray_hw: np.ndarray) -> None:
        config = self.config
        if len(self.track_ids_n) < config.init_min_tracks or len(self.pending) >= config.init_max_frames:
            self._abandon_segment()
            self._start_segment(frame_index, gray_hw)
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

    def _build_initial_map(
        self,
        frame_index: int,
        gray_hw: np.ndarray,
        reference_uv_n2: np.ndarray,
        b_T_a_44: np.ndarray,
        points_n3: np.ndarray,
        inlier_n: np.ndarray,
    ) -> None:
        """Two keyframes and the triangulated inliers; then pose the pending frames."""
        ids_n = self.track_ids_n
        self.points.xyz_n3[ids_n[inlier_n]] = points_n3[inlier_n]
        self.points.ok_n[ids_n[inlier_n]] = True
        first_kf = len(self.keyframes)
        self.segment_starts.append(first_kf)
        self.points.birth_kf_n[ids_n] = first_kf
        all_n = np.ones(len(ids_n), dtype=bool)
        self.keyframes.append(
            _Keyframe(
                self.reference_index, np.eye(4), ids_n.copy(), reference_uv_n2, all_n, self.reference_gray_hw
            )
        )
        self.keyframes[-1].depth_n = self._sensor_depth_n(self.reference_depth_hw, reference_uv_n2)
        self.keyframes.append(
            _Keyframe(
                frame_index, b_T_a_44, ids_n.copy(), self.track_uv_n2.astype(np.float64), all_n.copy(), gray_hw
            )
        )
        self._local_bundle_adjustment()
        self._normalise_segment_scale(first_kf)
        if self.last_cam_T_world_44 is not None:
            self._chain_segment(first_kf)
        self.anchors[self.reference_index] = (first_kf, np.eye(4))
        self.anchors[frame_index] = (first_kf + 1, np.eye(4))
        for pending in self.pending[:-1]:
            self._pose_pending_frame(pending, first_kf)
        self.pending = []
        self.initialised = True
        self.last_cam_T_world_44 = self.keyframes[-1].cam_T_world_44
        self.velocity_44 = np.eye(4)
        self._drop_outlier_tracks(self.keyframes[-1])
        self._finish_keyframe(gray_hw)

    def _normalise_segment_scale(self, first_kf: int) -> None:
        """Scale the new segment's map so its first keyframe sees a median depth of 1."""
        kf0 = self.keyframes[first_kf]
        ids_n = kf0.track_ids_n[self.points.ok_n[kf0.track_ids_n]]
        depth = float(np.median(transform_n3(kf0.cam_T_world_44, self.points.xyz_n3[ids_n])[:, 2]))
        segment_ids_n = np.unique(np.concatenate([kf.track_ids_n for kf in self.keyframes[first_kf:]]))
        segment_ids_n = segment_ids_n[self.points.ok_n[segment_ids_n]]
        self.points.xyz_n3[segment_ids_n] /= depth
        for kf in self.keyframes[first_kf:]:
            kf.cam_T_world_44 = kf.cam_T_world_44.copy()
            kf.cam_T_world_44[:3, 3] /= depth

    def _chain_segment(self, first_kf: int) -> None:
        """Place a re-initialised segment at the last tracked pose with the last median depth."""
        scale = self._keyframe_median_depth(self.keyframes[first_kf - 1])
        world_T_segment_44 = invert_pose_44(self.last_cam_T_world_44)
        segment_ids_n = np.unique(np.concatenate([kf.track_ids_n for kf in self.keyframes[first_kf:]]))
        segment_ids_n = segment_ids_n[self.points.ok_n[segment_ids_n]]
        self.points.xyz_n3[segment_ids_n] = transform_n3(world_T_segment_44, scale * self.points.xyz_n3[segment_ids_n])
        for kf in self.keyframes[first_kf:]:
            segment_T_cam_44 = invert_pose_44(kf.cam_T_world_44)
            segment_T_cam_44[:3, 3] *= scale
            kf.cam_T_world_44 = invert_pose_44(world_T_segment_44 @ segment_T_cam_44)

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
            self.lost.append(pending.frame_index)
            return
        kf_T_cam_44 = self.keyframes[first_kf].cam_T_world_44 @ invert_pose_44(pnp.cam_T_world_44)
        self.anchors[pending.frame_index] = (first_kf, kf_T_cam_44)

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
            self._start_segment(frame_index, gray_hw)
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
            self.keyframes.append(
                _Keyframe(
                    frame_index,
                    cam_T_world_44,
                    self.track_ids_n.copy(),
                    self.track_uv_n2.astype(np.float64),
                    np.ones(len(self.track_ids_n), dtype=bool),
                    gray_hw,
                )
            )
            self.anchors[frame_index] = (len(self.keyframes) - 1, np.eye(4))
            self._reacquire(self.keyframes[-1])
            self._triangulate(self.keyframes[-1])
            self._local_bundle_adjustment()
            self.last_cam_T_world_44 = self.keyframes[-1].cam_T_world_44
            self._drop_outlier_tracks(self.keyframes[-1])
            self._finish_keyframe(gray_hw)
        else:
            kf = self.keyframes[-1]
            self.anchors[frame_index] = (len(self.keyframes) - 1, kf.cam_T_world_44 @ invert_pose_44(cam_T_world_44))

    def _needs_keyframe(self, cam_T_world_44: np.ndarray, tracked: int) -> bool:
        config = self.config
        kf = self.keyframes[-1]
        kf_T_cam_44 = kf.cam_T_world_44 @ invert_pose_44(cam_T_world_44)
        baseline = float(np.linalg.norm(kf_T_cam_44[:3, 3]))
        return (
            baseline > config.keyframe_baseline_ratio * self._keyframe_median_depth(kf)
            or rotation_angle_deg(kf_T_cam_44[:3, :3]) > config.keyframe_rotation_deg
            or tracked < config.keyframe_min_tracked
            or self.frames_since_keyframe >= config.keyframe_max_gap
        )

    def _keyframe_median_depth(self, kf: _Keyframe) -> float:
        ids_n = kf.track_ids_n[kf.valid_n & self.points.ok_n[kf.track_ids_n]]
        if len(ids_n) == 0:
            return 1.0
        return float(np.median(transform_n3(kf.cam_T_world_44, self.points.xyz_n3[ids_n])[:, 2]))

    def _finish_keyframe(self, gray_hw: np.ndarray) -> None:
        """New corners at the newest keyframe, which also observes them; images of keyframes
        too old to re-find points from are released, unless the global adjustment will
        search them."""
        kf = self.keyframes[-1]
        searched_later = self.config.global_adjustment and self.depth_hw is None
        if len(self.keyframes) > self.config.reacquire_keyframes + 1 and not searched_later:
            self.keyframes[-self.config.reacquire_keyframes - 2].gray_hw = None
        new_ids_n = self._add_corners(gray_hw, birth_kf=len(self.keyframes) - 1)
        kf.track_ids_n = np.concatenate([kf.track_ids_n, new_ids_n])
        kf.uv_n2 = np.concatenate([kf.uv_n2, self.points.birth_uv_n2[new_ids_n]])
        kf.valid_n = np.concatenate([kf.valid_n, np.ones(len(new_ids_n), dtype=bool)])
        kf.depth_n = self._sensor_depth_n(self.depth_hw, kf.uv_n2)
        self.frames_since_keyframe = 0

    def _sensor_depth_n(self, depth_hw: np.ndarray | None, uv_n2: np.ndarray) -> np.ndarray | None:
        """Sensor depth (N,) in metres at tracking-image pixels (N, 2), or None without a
        depth map: the nearest depth pixel's value where its 3x3 neighbourhood is valid and
        spreads by at most `depth_max_spread` of it (corners often sit on depth edges,
        where the nearest pixel may belong to either side); nan elsewhere."""
        if depth_hw is None:
            return None
        height, width = depth_hw.shape
        scale = width / self.tracking_size_wh[0]
        pixel_n2 = np.rint((uv_n2 + 0.5) * scale - 0.5).astype(np.int64)
        inside_n = np.all((pixel_n2 >= 1) & (pixel_n2 < np.array([width - 1, height - 1])), axis=1)
        dy_33, dx_33 = np.meshgrid(np.arange(-1, 2), np.arange(-1, 2), indexing="ij")
        patch_n9 = depth_hw[pixel_n2[inside_n, 1, None] + dy_33.ravel(), pixel_n2[inside_n, 0, None] + dx_33.ravel()]
        centre_n = depth_hw[pixel_n2[inside_n, 1], pixel_n2[inside_n, 0]]
        flat_n = (patch_n9.min(axis=1) > 0) & (np.ptp(patch_n9, axis=1) <= self.config.depth_max_spread * centre_n)
        depth_n = np.full(len(uv_n2), np.nan)
        depth_n[np.flatnonzero(inside_n)[flat_n]] = centre_n[flat_n]
        return depth_n

    def _reacquire(self, kf: _Keyframe) -> None:
        """Re-find map points of recent keyframes that are no longer tracked: each is
        tracked by KLT from its latest keyframe observation into the new keyframe, starting
        at its projection, and kept when it lands within `reacquire_radius_px` of it."""
        config = self.config
        position = len(self.keyframes) - 1
        first = max(self.segment_first_kf, position - config.reacquire_keyframes)
        ids_n, source_n, uv_n2 = self._nearest_observations(position, list(range(first, position)))
        untracked_n = ~np.isin(ids_n, self.track_ids_n)
        ids_n, source_n, uv_n2 = ids_n[untracked_n], source_n[untracked_n], uv_n2[untracked_n]
        projected_n2, z_n = project_n2(transform_n3(kf.cam_T_world_44, self.points.xyz_n3[ids_n]), self.K_33)
        free_hw = free_mask_hw(kf.gray_hw.shape, self.track_uv_n2, config.klt)
        inside_n = (z_n > 0) & np.all(np.isfinite(projected_n2), axis=1)
        pixel_n2 = np.where(inside_n[:, None], np.rint(projected_n2), 0).astype(np.int64)
        height, width = free_hw.shape
        inside_n &= (pixel_n2[:, 0] >= 0) & (pixel_n2[:, 0] < width) & (pixel_n2[:, 1] >= 0) & (pixel_n2[:, 1] < height)
        inside_n[inside_n] = free_hw[pixel_n2[inside_n, 1], pixel_n2[inside_n, 0]] > 0
        found_ids_n, found_uv_n2 = self._track_into(
            kf, ids_n, source_n, uv_n2, projected_n2, inside_n, config.reacquire_radius_px
        )
        self.track_ids_n = np.concatenate([self.track_ids_n, found_ids_n])
        self.track_uv_n2 = np.concatenate([self.track_uv_n2, found_uv_n2.astype(np.float32)])
        self._add_observations(kf, found_ids_n, found_uv_n2)

    def _nearest_observations(self, position: int, sources: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every map point that the keyframes at positions `sources` observe, its
        observation in the source nearest to `position`: point ids (N,) in increasing
        order, source positions (N,) and pixels (N, 2)."""
        ids, source, uv = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], [np.zeros((0, 2))]
        for other in sources:
            old = self.keyframes[other]
            use_n = old.valid_n & self.points.ok_n[old.track_ids_n]
            ids.append(old.track_ids_n[use_n])
            source.append(np.full(use_n.sum(), other))
            uv.append(old.uv_n2[use_n])
        ids_n, source_n, uv_n2 = np.concatenate(ids), np.concatenate(source), np.concatenate(uv)
        nearest_n = np.lexsort((np.abs(source_n - position), ids_n))
        ids_n, source_n, uv_n2 = ids_n[nearest_n], source_n[nearest_n], uv_n2[nearest_n]
        _, once_n = np.unique(ids_n, return_index=True)
        return ids_n[once_n], source_n[once_n], uv_n2[once_n]

    def _track_into(
        self,
        kf: _Keyframe,
        ids_n: np.ndarray,
        source_n: np.ndarray,
        uv_n2: np.ndarray,
        projected_n2: np.ndarray,
        select_n: np.ndarray,
        radius_px: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The points `ids_n[select_n]` found in `kf`: each tracked by KLT from its pixel
        `uv_n2` in the keyframe at position `source_n` into `kf`, starting at its projection
        `projected_n2` there, and kept when it lands within `radius_px` of it. Returns the
        found ids (F,) and their pixels (F, 2)."""
        found_ids, found_uv = [np.zeros(0, dtype=np.int64)], [np.zeros((0, 2))]
        for other in np.unique(source_n[select_n]):
            from_n = select_n & (source_n == other)
            tracked_n2, ok_n = track_points_n2(
                self.keyframes[other].gray_hw, kf.gray_hw, uv_n2[from_n], self.config.klt, projected_n2[from_n]
            )
            ok_n &= np.linalg.norm(tracked_n2 - projected_n2[from_n], axis=1) < radius_px
            found_ids.append(ids_n[from_n][ok_n])
            found_uv.append(tracked_n2[ok_n].astype(np.float64))
        return np.concatenate(found_ids), np.concatenate(found_uv)

    @staticmethod
    def _add_observations(kf: _Keyframe, ids_n: np.ndarray, uv_n2: np.ndarray) -> None:
        """Valid observations of the points `ids_n` (N,) at pixels `uv_n2` (N, 2) join `kf`
        (without a sensor depth)."""
        kf.track_ids_n = np.concatenate([kf.track_ids_n, ids_n])
        kf.uv_n2 = np.concatenate([kf.uv_n2, uv_n2])
        kf.valid_n = np.concatenate([kf.valid_n, np.ones(len(ids_n), dtype=bool)])
        if kf.depth_n is not None:
            kf.depth_n = np.concatenate([kf.depth_n, np.full(len(ids_n), np.nan)])

    def _triangulate(self, kf: _Keyframe) -> None:
        """Points for the keyframe's tracks born at an earlier keyframe of this segment."""
        ids_n = kf.track_ids_n
        birth_n = self.points.birth_kf_n[ids_n]
        candidate_n = ~self.points.ok_n[ids_n] & (birth_n >= self.segment_first_kf) & (birth_n < len(self.keyframes) - 1)
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

    def _local_bundle_adjustment(self) -> None:
        """Bundle-adjust the last `window` keyframes of the segment and the points they see,
        with the (up to `window_fixed`) older keyframes of the segment that see most of
        those points held fixed (the gauge; a young segment fixes its first keyframes)."""
        config = self.config
        first_free = max(self.segment_first_kf, len(self.keyframes) - config.window)
        if first_free == self.segment_first_kf:
            first_free = min(first_free + 2, len(self.keyframes) - 1)
        free = list(range(first_free, len(self.keyframes)))
        free_ids_n = self._observed_point_ids_n(free)
        shared_k = np.array(
            [
                np.count_nonzero(np.isin(self.keyframes[k].track_ids_n[self.keyframes[k].valid_n], free_ids_n))
                for k in range(self.segment_first_kf, first_free)
            ],
            dtype=np.int64,
        )
        best_k = np.argsort(-shared_k, kind="stable")[: config.window_fixed]
        fixed = sorted(self.segment_first_kf + int(k) for k in best_k if shared_k[k] > 0)
        if fixed and free:
            self._bundle_adjust(fixed, free, free_ids_n, config.bundle)

    def adjust_globally(self) -> None:
        """Bundle-adjust every segment's keyframes and map points together, the segment's
        first two keyframes held fixed (its gauge and scale, as the windows kept them).
        Without sensor depth, each keyframe is first searched for the points of distant
        keyframes of the segment (with the depths holding the scale, the search made
        redkitchen's trajectory worse: ATE 5.1 against 4.4 cm)."""
        ends = self.segment_starts[1:] + [len(self.keyframes)]
        for first, end in zip(self.segment_starts, ends):
            if end - first > 2:
                if all(self.keyframes[k].depth_n is None for k in range(first, end)):
                    for position in range(first, end):
                        self._reassociate(position, first, end)
                free = list(range(first + 2, end))
                self._bundle_adjust(
                    [first, first + 1], free, self._observed_point_ids_n(free), self.config.global_bundle, with_depth=True
                )
        if self.initialised:
            self.last_cam_T_world_44 = self.keyframes[-1].cam_T_world_44

    def _reassociate(self, position: int, first: int, end: int) -> None:
        """Add to the keyframe at `position` the map points it does not observe that keyframes
        of positions [first, end) more than `loop_min_gap` away, with cameras within
        `loop_max_distance_ratio` of its median scene depth, observe: each is tracked by
        KLT from the nearest such keyframe's observation, starting at its projection, and
        kept when it lands within `loop_radius_px` of it."""
        config = self.config
        kf = self.keyframes[position]
        centre_3 = invert_pose_44(kf.cam_T_world_44)[:3, 3]
        reach = config.loop_max_distance_ratio * self._keyframe_median_depth(kf)
        sources = [
            other
            for other in range(first, end)
            if abs(other - position) > config.loop_min_gap
            and np.linalg.norm(invert_pose_44(self.keyframes[other].cam_T_world_44)[:3, 3] - centre_3) < reach
        ]
        ids_n, source_n, uv_n2 = self._nearest_observations(position, sources)
        unseen_n = ~np.isin(ids_n, kf.track_ids_n)
        ids_n, source_n, uv_n2 = ids_n[unseen_n], source_n[unseen_n], uv_n2[unseen_n]
        projected_n2, z_n = project_n2(transform_n3(kf.cam_T_world_44, self.points.xyz_n3[ids_n]), self.K_33)
        width, height = self.tracking_size_wh
        inside_n = (z_n > 0) & np.all(np.isfinite(projected_n2), axis=1)
        inside_n[inside_n] = np.all((projected_n2[inside_n] >= 0) & (projected_n2[inside_n] <= [width - 1, height - 1]), axis=1)
        self._add_observations(kf, *self._track_into(kf, ids_n, source_n, uv_n2, projected_n2, inside_n, config.loop_radius_px))

    def _observed_point_ids_n(self, keyframes: list[int]) -> np.ndarray:
        """Ids (sorted) of the map points the keyframes at these positions observe."""
        ids_n = np.unique(np.concatenate([self.keyframes[k].track_ids_n[self.keyframes[k].valid_n] for k in keyframes]))
        return ids_n[self.points.ok_n[ids_n]]

    def _bundle_adjust(
        self, fixed: list[int], free: list[int], point_ids_n: np.ndarray, bundle: BundleConfig, with_depth: bool = False
    ) -> None:
        """Refine the keyframes at positions `free` and the map points `point_ids_n` from
        every observation of those points in them and in the fixed keyframes `fixed`, and
        `with_depth` from the sensor depths of the keyframes that have them; observations
        left with an error over `bundle.outlier_px` are marked invalid."""
        window = [self.keyframes[k] for k in fixed + free]
        cam_index, track_ids, uv, positions = [], [], [], []
        for k, kf in enumerate(window):
            use_n = kf.valid_n & np.isin(kf.track_ids_n, point_ids_n)
            cam_index.append(np.full(use_n.sum(), k))
            track_ids.append(kf.track_ids_n[use_n])
            uv.append(kf.uv_n2[use_n])
            positions.append(np.nonzero(use_n)[0])
        observed_ids_n, point_index_m = np.unique(np.concatenate(track_ids), return_inverse=True)
        cam_T_world_k44 = np.stack([kf.cam_T_world_44 for kf in window])
        cam_index_m = np.concatenate(cam_index)
        depth = None
        if with_depth and any(kf.depth_n is not None for kf in window):
            depth_m = np.concatenate(
                [np.full(len(positions[k]), np.nan) if kf.depth_n is None else kf.depth_n[positions[k]] for k, kf in enumerate(window)]
            )
            depth = self._depth_in_tracking_units(cam_T_world_k44, cam_index_m, observed_ids_n[point_index_m], depth_m)
        result = bundle_adjust(
            self.K_33,
            cam_T_world_k44,
            self.points.xyz_n3[observed_ids_n],
            cam_index_m,
            point_index_m,
            np.concatenate(uv),
            np.arange(len(window)) < len(fixed),
            bundle,
            depth=depth,
        )
        self.points.xyz_n3[observed_ids_n] = result.points_n3
        outlier_m = ~(result.errors_m < bundle.outlier_px)
        start = 0
        for k, kf in enumerate(window):
            kf.cam_T_world_44 = result.cam_T_world_k44[k]
            count = len(positions[k])
            kf.valid_n[positions[k][outlier_m[start : start + count]]] = False
            start += count

    def _depth_in_tracking_units(
        self, cam_T_world_k44: np.ndarray, cam_index_m: np.ndarray, point_id_m: np.ndarray, depth_m: np.ndarray
    ) -> ObservedDepth | None:
        """Sensor depths (M,) in metres of observations of points `point_id_m` by cameras
        `cam_index_m`, as measurements in tracking units: times the median ratio of tracked
        to sensor depth. None where no observation has a depth."""
        z_m = np.einsum("mj,mj->m", cam_T_world_k44[cam_index_m, 2, :3], self.points.xyz_n3[point_id_m])
        z_m += cam_T_world_k44[cam_index_m, 2, 3]
        measured_m = np.isfinite(depth_m) & (z_m > 0)
        if not measured_m.any():
            return None
        scale = float(np.median(z_m[measured_m] / depth_m[measured_m]))
        return ObservedDepth(scale * depth_m, self.config.depth_sigma_relative)

    def _drop_outlier_tracks(self, kf: _Keyframe) -> None:
        """Stop tracks whose observation in the newest keyframe was rejected."""
        rejected_ids_n = kf.track_ids_n[~kf.valid_n]
        keep_n = ~np.isin(self.track_ids_n, rejected_ids_n)
        self.track_ids_n = self.track_ids_n[keep_n]
        self.track_uv_n2 = self.track_uv_n2[keep_n]

    # ------------------------------------------------------------------ result
    def result(self) -> TrackingResult:
        """Poses of every posed frame so far and the sparse map (tracking units)."""
        world_T_cam_44 = {}
        for frame_index, (kf_position, kf_T_cam_44) in self.anchors.items():
            world_T_cam_44[frame_index] = invert_pose_44(self.keyframes[kf_position].cam_T_world_44) @ kf_T_cam_44
        lost = list(self.lost)
        if not self.initialised and self.reference_index >= 0:
            lost += [self.reference_index] + [p.frame_index for p in self.pending]
        ok_ids_n = np.nonzero(self.points.ok_n[: self.next_track_id])[0]
        row_of_id_n = np.full(self.next_track_id, -1, dtype=np.int64)
        row_of_id_n[ok_ids_n] = np.arange(len(ok_ids_n))
        keyframe_point_ids = {}
        depths = []
        for kf in self.keyframes:
            ids_n = kf.track_ids_n[kf.valid_n & self.points.ok_n[kf.track_ids_n]]
            keyframe_point_ids[kf.frame_index] = row_of_id_n[ids_n]
            depths.append(transform_n3(kf.cam_T_world_44, self.points.xyz_n3[ids_n])[:, 2])
        depth_n = np.concatenate(depths) if depths else np.zeros(0)
        return TrackingResult(
            world_T_cam_44=dict(sorted(world_T_cam_44.items())),
            lost=sorted(set(lost) - set(world_T_cam_44)),
            map_points_n3=self.points.xyz_n3[ok_ids_n].copy(),
            median_depth=float(np.median(depth_n[depth_n > 0])) if np.any(depth_n > 0) else 0.0,
            scale=TRACKING_UNITS,
            keyframe_point_ids=keyframe_point_ids,
        )


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
