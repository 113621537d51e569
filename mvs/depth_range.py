"""The depth range of the scene, estimated per run before its depth is.

It sets where the classic plane sweep puts its planes, which depths the learned one keeps
and at which depths the keyframe planner measures how much two views share. It comes from
what the run itself has seen, never from the sensor's depth (that is for evaluation):

- the map, where the poses come with one (the tracker's, or the points of an imported or
  COLMAP model), its scale fixed: the depth of every map point in each keyframe that
  observes it;
- otherwise (dataset poses, imported poses without points, dense RGB-D odometry) a first
  pass of the learned model over its full trained range on FIRST_PASS_KEYFRAMES keyframes
  spread over the sequence: the depth of every pixel its local sweep confirms.

The LOW_PERCENTILE and HIGH_PERCENTILE of those depths, widened by the factor MARGIN, are
the sweep's range; the OVERLAP_PERCENTILES themselves are the planner's overlap depths.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from mvs.config import DepthConfig
from mvs.depth import LearnedDepthEstimator
from mvs.geometry import invert_pose_44, transform_n3
from mvs.types import Frame, Sequence
from slam.keyframes import KeyframePlan
from slam.result import METRES, TrackingResult

LOW_PERCENTILE, HIGH_PERCENTILE = 2.0, 98.0
"""The percentiles of the scene's depths the sweep's range starts from."""
MARGIN = 1.5
"""The range is widened to [low / MARGIN, high * MARGIN]: map points sit on textured
surfaces and a first pass misses part of a view, so the scene reaches beyond both."""
OVERLAP_PERCENTILES = (10.0, 50.0, 90.0)
"""The percentiles of the scene's depths at which the planner measures view overlap."""
FIRST_PASS_KEYFRAMES = 6
MIN_DEPTHS = 200
"""Fewer depths than this estimate no range: the defaults stay."""


@dataclass(frozen=True)
class SceneDepthRange:
    """How deep the scene is, in the units of the poses (metres once the scale is known).

    near, far: the range to sweep and keep (LOW_PERCENTILE / MARGIN, HIGH_PERCENTILE * MARGIN);
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
        near=round(low / MARGIN, 3), far=round(high * MARGIN, 3), low=low, high=high,
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


def first_pass_depths_n(
    sequence: Sequence, poses: TrackingResult, plans: list[KeyframePlan], config: DepthConfig, device: str
) -> tuple[np.ndarray, int]:
    """The depths (N,) the learned model (`config.weights`, over its full trained range)
    confirms in FIRST_PASS_KEYFRAMES of the `plans` (positions among the posed frames of
    `sequence`) spread evenly over them, and how many of those keyframes gave depth."""
    if not plans:
        return np.zeros(0), 0
    posed = [i for i in sequence.indices if i in poses.world_T_cam_44]
    chosen = [plans[k] for k in np.unique(np.linspace(0, len(plans) - 1, FIRST_PASS_KEYFRAMES).round().astype(int))]
    estimator = LearnedDepthEstimator(config, device)
    trained = estimator.model.config
    estimator.config = replace(config, near=trained.near, far=trained.far)

    def posed_frame(position: int) -> Frame | None:
        frame = sequence.readable_frame(posed[position])
        return None if frame is None else replace(frame, world_T_cam_44=poses.world_T_cam_44[posed[position]])

    depths, used = [np.zeros(0)], 0
    for plan in tqdm(chosen, desc="depth range: first pass", unit="keyframe"):
        reference = posed_frame(plan.reference_index)
        sources = [frame for k in plan.source_indices if (frame := posed_frame(k)) is not None]
        if reference is None or not sources:
            continue
        result = estimator.estimate(reference, sources, sequence.camera)
        confirmed_hw = (result.depth_hw > 0) & (result.confidence_hw > 0)
        depths.append(result.depth_hw[confirmed_hw])
        used += bool(confirmed_hw.any())
    return np.concatenate(depths), used


def estimate_scene_range(
    sequence: Sequence, poses: TrackingResult, plans: list[KeyframePlan], config: DepthConfig, device: str
) -> SceneDepthRange | None:
    """The scene's depth range from the map of `poses` when it has one, else from a first
    pass of the learned model `config.weights` over the keyframe `plans` (see the module's
    docstring); None when too few depths are found."""
    units = "m" if poses.scale == METRES else "tracking units"
    if poses.keyframe_point_ids:
        depth_n = map_depths_n(poses)
        evidence = f"{len(depth_n)} depths of map points in {len(poses.keyframe_point_ids)} keyframes"
        return scene_depth_range(depth_n, evidence, units)
    depth_n, used = first_pass_depths_n(sequence, poses, plans, config, device)
    evidence = f"{len(depth_n)} depths the learned model confirms in {used} keyframes (a first pass)"
    return scene_depth_range(depth_n, evidence, units)
