"""Growing the monocular tracker's map at a new keyframe.

The keyframe observes the current tracks. Map points of recent keyframes that are no longer
tracked are searched for again around their projection; new points are triangulated between
the keyframe where a track was born and the new one; the last keyframes are bundle-adjusted
with fixed older keyframes that see the same points (the gauge and the monocular scale); new
corners fill the image; with sensor depth, tracks without a point are lifted to 3D from it;
and the keyframe is remembered and joined with the rest of the map (`slam/joining.py`).
"""

from __future__ import annotations

import numpy as np

from mvs.geometry import backproject_n3, invert_pose_44, transform_n3
from slam.backend import adjust_keyframes, window_of
from slam.joining import MapJoiner
from slam.map import Keyframe, SparseMap, reacquire, sensor_depth_n
from slam.pieces import TrackingHistory
from slam.tracks import Tracks
from slam.twoview import checked_triangulation
from slam.vo_config import VOConfig


class LocalMapping:
    """Inserts keyframes into `world` from the live `tracks`; K_33 (3, 3) and
    `tracking_size_wh` are the tracking image's intrinsics and size."""

    def __init__(
        self,
        world: SparseMap,
        tracks: Tracks,
        joiner: MapJoiner,
        history: TrackingHistory,
        K_33: np.ndarray,
        tracking_size_wh: tuple[int, int],
        config: VOConfig,
    ):
        self.world = world
        self.tracks = tracks
        self.joiner = joiner
        self.history = history
        self.K_33 = K_33
        self.tracking_size_wh = tracking_size_wh
        self.config = config

    def insert(
        self, frame_index: int, gray_hw: np.ndarray, cam_T_world_44: np.ndarray, piece: int, depth_hw: np.ndarray | None
    ) -> bool:
        """The frame (posed at `cam_T_world_44`, observing the current tracks, with its sensor
        depth (H, W) in metres or None) joins `piece` as a keyframe; True when joining the map
        then moved it (`finish`)."""
        n = len(self.tracks)
        kf = Keyframe(frame_index, cam_T_world_44, self.tracks.ids_n.copy(), self.tracks.uv_n2.astype(np.float64),
                      np.ones(n, dtype=bool), gray_hw, piece)
        kf.depth_n = self.sensor_depth_n(depth_hw, kf.uv_n2)
        self.world.keyframes.append(kf)
        self.history.anchors[frame_index] = (len(self.world.keyframes) - 1, np.eye(4))
        self._reacquire(kf)
        self._triangulate(kf)
        self.adjust_window(piece)
        self.tracks.drop_rejected(kf)
        return self.finish(gray_hw, depth_hw)

    def finish(self, gray_hw: np.ndarray, depth_hw: np.ndarray | None) -> bool:
        """New corners at the newest keyframe, which also observes them; its observations
        described and its image remembered for place recognition; images of keyframes too old
        to re-find points from are released, unless the global adjustment will search them;
        then the keyframe is joined with the other pieces and loops it sees. True when that
        moved it (`MapJoiner.join`)."""
        keyframes = self.world.keyframes
        kf = keyframes[-1]
        searched_later = self.config.global_adjustment and depth_hw is None
        if len(keyframes) > self.config.reacquire_keyframes + 1 and not searched_later:
            keyframes[-self.config.reacquire_keyframes - 2].gray_hw = None
        new_ids_n = self.tracks.add_corners(gray_hw, birth_kf=len(keyframes) - 1)
        kf.track_ids_n = np.concatenate([kf.track_ids_n, new_ids_n])
        kf.uv_n2 = np.concatenate([kf.uv_n2, self.world.points.birth_uv_n2[new_ids_n]])
        kf.valid_n = np.concatenate([kf.valid_n, np.ones(len(new_ids_n), dtype=bool)])
        kf.depth_n = self.sensor_depth_n(depth_hw, kf.uv_n2)
        if self.config.lift_depth and kf.depth_n is not None:
            self._lift(kf)
        self.joiner.remember(len(keyframes) - 1)
        return self.joiner.join(len(keyframes) - 1)

    def adjust_window(self, piece: int) -> None:
        """Bundle-adjust the last keyframes of `piece` with the fixed older ones that see
        their points (`slam/backend.py`, `window_of`)."""
        fixed, free = window_of(self.world, piece, self.config)
        if fixed and free:
            depth_sigma = self.config.depth_sigma_relative if self.config.lift_depth else None
            adjust_keyframes(self.world, self.K_33, fixed, free, self.config.bundle, depth_sigma)

    def sensor_depth_n(self, depth_hw: np.ndarray | None, uv_n2: np.ndarray) -> np.ndarray | None:
        """Sensor depth (N,) in metres at tracking-image pixels (N, 2), or None without a depth map."""
        if depth_hw is None:
            return None
        return sensor_depth_n(depth_hw, uv_n2, depth_hw.shape[1] / self.tracking_size_wh[0], self.config.depth_max_spread)

    def _reacquire(self, kf: Keyframe) -> None:
        """Re-find map points of the piece's recent keyframes that are no longer tracked in the
        new keyframe `kf` (`slam/map.py`, `reacquire`); they are tracked from now on."""
        config = self.config
        position = len(self.world.keyframes) - 1
        sources = [k for k in self.world.piece_positions(kf.piece)[-config.reacquire_keyframes - 1 :] if k != position]
        found_ids_n, found_uv_n2 = reacquire(
            self.world, position, sources, self.tracks.ids_n, self.tracks.uv_n2, self.K_33, config.reacquire_radius_px,
            config.klt,
        )
        self.tracks.extend(found_ids_n, found_uv_n2.astype(np.float32))
        kf.add_observations(found_ids_n, found_uv_n2)

    def _triangulate(self, kf: Keyframe) -> None:
        """Points for the keyframe's tracks born at an earlier keyframe of its piece."""
        keyframes, points = self.world.keyframes, self.world.points
        ids_n = kf.track_ids_n
        birth_n = points.birth_kf_n[ids_n]
        same_piece_n = np.array([b >= 0 and keyframes[b].piece == kf.piece for b in birth_n], dtype=bool)
        candidate_n = ~points.ok_n[ids_n] & same_piece_n & (birth_n < len(keyframes) - 1)
        for birth_kf in np.unique(birth_n[candidate_n]):
            select_n = candidate_n & (birth_n == birth_kf)
            points_n3, good_n, _ = checked_triangulation(
                self.K_33,
                keyframes[birth_kf].cam_T_world_44,
                kf.cam_T_world_44,
                points.birth_uv_n2[ids_n[select_n]],
                kf.uv_n2[select_n],
                self.config.triangulation_max_error_px,
                self.config.triangulation_min_angle_deg,
            )
            new_ids_n = ids_n[select_n][good_n]
            points.xyz_n3[new_ids_n] = points_n3[good_n]
            points.ok_n[new_ids_n] = True

    def _lift(self, kf: Keyframe) -> None:
        """Points for the keyframe's tracks that have none, from their sensor depth."""
        points = self.world.points
        lift_n = ~points.ok_n[kf.track_ids_n] & np.isfinite(kf.depth_n)
        cam_n3 = backproject_n3(kf.uv_n2[lift_n], kf.depth_n[lift_n], self.K_33)
        points.xyz_n3[kf.track_ids_n[lift_n]] = transform_n3(invert_pose_44(kf.cam_T_world_44), cam_n3)
        points.ok_n[kf.track_ids_n[lift_n]] = True
