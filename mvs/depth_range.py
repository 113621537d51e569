"""The depth range of the scene, estimated per run before its depth is.

It sets where the classic plane sweep puts its planes, which depths the learned one keeps,
at which depths the keyframe planner measures how much two views share and how far apart it
puts them (slam/keyframes.py). It comes from the run's own images and poses, never from the
sensor's depth (that is for evaluation) nor from a learned model (whose guesses it bounds):

- the map, where the poses come with one (the tracker's, or the points of an imported or
  COLMAP model), its scale fixed: the depth of every map point in each keyframe that
  observes it;
- otherwise (dataset poses, imported poses without points, dense RGB-D odometry) corners
  matched between SAMPLED_KEYFRAMES keyframes spread over the sequence and the sources the
  planner gives them before the scene is known, triangulated with the poses: the depth of
  every point that reprojects within MAX_REPROJECTION_PX in both views and is seen at an
  angle of at least MIN_ANGLE_DEG.

The LOW_PERCENTILE and HIGH_PERCENTILE of those depths, widened by the factors NEAR_MARGIN
and FAR_MARGIN, are the sweep's range; the OVERLAP_PERCENTILES themselves are the
planner's overlap depths.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mvs.geometry import invert_pose_44, transform_n3
from mvs.types import Sequence
from slam.features import Describer
from slam.keyframes import KeyframeConfig, select_keyframes
from slam.klt import KLTConfig, detect_corners_n2
from slam.result import TrackingResult
from slam.twoview import checked_triangulation

LOW_PERCENTILE, HIGH_PERCENTILE = 2.0, 98.0
"""The percentiles of the scene's depths the sweep's range starts from."""
NEAR_MARGIN, FAR_MARGIN = 1.5, 2.0
"""The range is widened to [low / NEAR_MARGIN, high * FAR_MARGIN]: points sit on textured
surfaces, so the scene reaches beyond both, and farthest beyond the far end, where the
background is plainer and seen at smaller angles (the tabletop sample's corners: 98th
percentile 0.62 m, its sensor's 1.0 m). Planes are spaced in inverse depth, so the wider far
end costs little resolution (kitchen: 6 % of the inverse-depth span)."""
OVERLAP_PERCENTILES = (10.0, 50.0, 90.0)
"""The percentiles of the scene's depths at which the planner measures view overlap."""
SAMPLED_KEYFRAMES = 12
"""How many keyframes, spread over the sequence, are triangulated with their sources."""
CORNERS = 1000
"""Corners detected per image (Shi-Tomasi, as the tracker's, 8 px apart)."""
MAX_REPROJECTION_PX = 2.0
MIN_ANGLE_DEG = 1.0
"""A triangulated point is kept when it reprojects within MAX_REPROJECTION_PX (pixels of the
sequence's images) in both views and its rays meet at MIN_ANGLE_DEG or more."""
MIN_DEPTHS = 200
"""Fewer depths than this estimate no range: the defaults stay."""


@dataclass(frozen=True)
class SceneDepthRange:
    """How deep the scene is, in the units of the poses (metres once the scale is known).

    near, far: the range to sweep and keep (low / NEAR_MARGIN, high * FAR_MARGIN);
    low, high: the percentiles themselves; overlap_depths: the OVERLAP_PERCENTILES;
    evidence: what the depths came from ("4210 depths of map points in 84 keyframes");
    units: "m", or "tracking units" where the scale is unknown.
    """

    near: float
    far: float
    low: float
    high: float
    overlap_depths: tuple[float, ...]
    evidence: str
    units: str

    def describe(self) -> str:
        """Where the range comes from, in one clause, for the settings' reasons."""
        return (f"the scene's depth: {self.low:.2f}-{self.high:.2f} {self.units} between its "
                f"{LOW_PERCENTILE:g} and {HIGH_PERCENTILE:g} % percentiles, of {self.evidence}")


def scene_depth_range(depth_n: np.ndarray, evidence: str, units: str = "m") -> SceneDepthRange | None:
    """The range of the positive depths in `depth_n` (N,) in `units`, or None with fewer
    than MIN_DEPTHS."""
    depth_n = np.asarray(depth_n, dtype=np.float64)
    depth_n = depth_n[np.isfinite(depth_n) & (depth_n > 0)]
    if len(depth_n) < MIN_DEPTHS:
        return None
    low, high = (float(v) for v in np.percentile(depth_n, [LOW_PERCENTILE, HIGH_PERCENTILE]))
    overlap_depths = tuple(round(float(v), 3) for v in np.percentile(depth_n, OVERLAP_PERCENTILES))
    return SceneDepthRange(
        near=round(low / NEAR_MARGIN, 3), far=round(high * FAR_MARGIN, 3), low=low, high=high,
        overlap_depths=overlap_depths, evidence=evidence, units=units,
    )


def map_depths_n(poses: TrackingResult) -> np.ndarray:
    """(M,) depth of each map point in each posed keyframe that observes it (positive only)."""
    depths = [np.zeros(0)]
    for index, rows_m in poses.keyframe_point_ids.items():
        if index in poses.world_T_cam_44 and len(rows_m):
            cam_T_world_44 = invert_pose_44(poses.world_T_cam_44[index])
            depths.append(transform_n3(cam_T_world_44, poses.map_points_n3[rows_m])[:, 2])
    depth_n = np.concatenate(depths)
    return depth_n[depth_n > 0]


def triangulated_depths_n(
    sequence: Sequence, poses: TrackingResult, planner: KeyframeConfig, mode: str
) -> tuple[np.ndarray, int]:
    """Depths (N,) in their reference camera of the corners matched (upright ORB, ratio test)
    between SAMPLED_KEYFRAMES of the keyframes `planner` plans in `mode` over the posed frames
    of `sequence`, spread evenly over them, and each of their sources, triangulated with the
    poses (see the module's docstring); and how many of those references gave depth."""
    posed = [i for i in sequence.indices if i in poses.world_T_cam_44]
    plans = select_keyframes([poses.world_T_cam_44[i] for i in posed], sequence.camera, planner, mode).plans
    spread = np.unique(np.linspace(0, len(plans) - 1, SAMPLED_KEYFRAMES).round().astype(int)) if plans else []
    describer = Describer()
    corners = KLTConfig(min_distance_px=8.0)

    def described(position: int):
        frame = sequence.readable_frame(posed[position])
        if frame is None:
            return None
        grey_hw = cv2.cvtColor(frame.image_hw3, cv2.COLOR_RGB2GRAY)
        uv_n2 = detect_corners_n2(grey_hw, np.zeros((0, 2)), CORNERS, corners)
        descriptors = describer.describe(grey_hw, uv_n2)
        cam_T_world_44 = invert_pose_44(poses.world_T_cam_44[posed[position]])
        return uv_n2[descriptors.rows_n], descriptors, cam_T_world_44

    depths, used = [np.zeros(0)], 0
    for plan in (plans[k] for k in spread):
        reference = described(plan.reference_index)
        if reference is None:
            continue
        ref_uv_n2, ref_descriptors, ref_cam_T_world_44 = reference
        found = 0
        for source in filter(None, map(described, plan.source_indices)):
            src_uv_n2, src_descriptors, src_cam_T_world_44 = source
            ref_k, src_k = describer.match(ref_descriptors, src_descriptors)
            points_k3, good_k, _ = checked_triangulation(
                sequence.camera.K_33, ref_cam_T_world_44, src_cam_T_world_44, ref_uv_n2[ref_k], src_uv_n2[src_k],
                MAX_REPROJECTION_PX, MIN_ANGLE_DEG,
            )
            depth_k = transform_n3(ref_cam_T_world_44, points_k3[good_k])[:, 2]
            depths.append(depth_k)
            found += len(depth_k)
        used += found > 0
    return np.concatenate(depths), used


def estimate_scene_range(
    sequence: Sequence, poses: TrackingResult, planner: KeyframeConfig, mode: str = "auto"
) -> SceneDepthRange | None:
    """The scene's depth range from the map of `poses` when it has one, else from corners
    triangulated over the keyframes `planner` plans in `mode` (see the module's docstring);
    None when too few depths are found."""
    units = poses.length_unit
    if poses.keyframe_point_ids:
        depth_n = map_depths_n(poses)
        evidence = f"{len(depth_n)} depths of map points in {len(poses.keyframe_point_ids)} keyframes"
        return scene_depth_range(depth_n, evidence, units)
    depth_n, used = triangulated_depths_n(sequence, poses, planner, mode)
    evidence = f"{len(depth_n)} depths of corners triangulated in {used} keyframes with their sources"
    return scene_depth_range(depth_n, evidence, units)
