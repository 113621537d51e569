"""Starting a piece of the monocular tracker's map from two views.

A piece starts at a reference frame whose corners are tracked, and described so that they can
be found again by descriptor matches where KLT loses them (a large motion). The frames that
follow wait with their tracks until one has enough parallax to the reference for a two-view
initialisation (`slam/twoview.py`), with its own gauge and scale (never chained to the last
pose); the piece's first map is scaled to a median depth of 1 in its first keyframe
("tracking units"), and the waiting frames are then posed by PnP against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mvs.geometry import invert_pose_44, transform_n3
from slam.features import Describer, Descriptors
from slam.map import SparseMap
from slam.pieces import TrackingHistory
from slam.pnp import solve_pnp
from slam.tracks import Tracks
from slam.twoview import TwoViewResult, initialise_two_view
from slam.vo_config import VOConfig


@dataclass
class PendingFrame:
    """A frame seen before its piece was initialised: its track ids (N,) at pixels (N, 2),
    posed later by PnP."""

    frame_index: int
    track_ids_n: np.ndarray
    uv_n2: np.ndarray


@dataclass
class PieceStart:
    """The reference frame of a piece being started: its dataset index, tracking image
    (H, W) and sensor depth (H, W) in metres (None without); `descriptors`: those of its
    corners with their track ids; `pending`: the frames tracked since."""

    frame_index: int
    gray_hw: np.ndarray
    depth_hw: np.ndarray | None
    descriptors: tuple[Descriptors, np.ndarray] | None = None
    pending: list[PendingFrame] = field(default_factory=list)

    def frame_indices(self) -> list[int]:
        """The reference and pending frames, lost when the piece never initialises."""
        return [self.frame_index] + [p.frame_index for p in self.pending]

    def rematch(self, tracks: Tracks, describer: Describer, gray_hw: np.ndarray, config: VOConfig) -> None:
        """Where KLT lost the reference frame's corners (a large motion), find them again in
        the tracking image (H, W) by descriptor matches; they replace the tracks when there
        are more of them."""
        descriptors, ids_n = self.descriptors
        corners_n2, query = describer.describe_corners(gray_hw, config.relocalise_corners, config.klt)
        query_k, train_k = describer.match(query, descriptors)
        if len(query_k) > len(tracks):
            tracks.replace(ids_n[train_k], corners_n2[query.rows_n[query_k]].astype(np.float32))

    def pose_pending(self, world: SparseMap, K_33: np.ndarray, config: VOConfig, first_kf: int, history: TrackingHistory) -> None:
        """Pose the waiting frames but the last (which became the second keyframe) by PnP
        against the new piece, relative to its first keyframe at `first_kf`; those that fail
        are lost."""
        for pending in self.pending[:-1]:
            has_point_n = world.points.ok_n[pending.track_ids_n]
            pnp = solve_pnp(
                world.points.xyz_n3[pending.track_ids_n[has_point_n]],
                pending.uv_n2[has_point_n],
                K_33,
                threshold_px=config.pnp_threshold_px,
                min_inliers=config.pnp_min_inliers,
                cam_T_world_guess_44=world.keyframes[first_kf].cam_T_world_44,
            )
            if pnp is None:
                history.lost.append(pending.frame_index)
                continue
            kf_T_cam_44 = world.keyframes[first_kf].cam_T_world_44 @ invert_pose_44(pnp.cam_T_world_44)
            history.anchors[pending.frame_index] = (first_kf, kf_T_cam_44)
        self.pending = []


def try_two_view(
    reference_uv_n2: np.ndarray, uv_n2: np.ndarray, K_33: np.ndarray, config: VOConfig
) -> TwoViewResult | None:
    """The two-view geometry between the reference frame and the current one from the
    tracks' pixels in both (N, 2); None while the median flow is under `init_min_flow_px` or
    the views have too little parallax or too few inliers."""
    flow_px = float(np.median(np.linalg.norm(uv_n2 - reference_uv_n2, axis=1)))
    if flow_px < config.init_min_flow_px:
        return None
    return initialise_two_view(
        reference_uv_n2,
        uv_n2,
        K_33,
        ransac_threshold_px=config.init_ransac_px,
        min_inliers=config.init_min_points,
        min_median_angle_deg=config.init_min_parallax_deg,
        max_error_px=config.triangulation_max_error_px,
        min_point_angle_deg=config.triangulation_min_angle_deg,
    )


def normalise_piece_scale(world: SparseMap, piece: int, first_kf: int) -> None:
    """Scale the new piece's map so its first keyframe, at `first_kf`, sees a median depth of 1."""
    kf0 = world.keyframes[first_kf]
    ids_n = kf0.track_ids_n[world.points.ok_n[kf0.track_ids_n]]
    depth = float(np.median(transform_n3(kf0.cam_T_world_44, world.points.xyz_n3[ids_n])[:, 2]))
    world.transform_piece(piece, 1.0 / depth, np.eye(4))
