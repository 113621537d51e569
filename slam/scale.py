"""Metric scale for monocular tracking results: from sensor depth, or from ground truth.

Monocular tracking drifts in scale as well as in pose. With sensor depth, the scale can be
measured at every keyframe (the median ratio of sensor depth to tracked depth of the map
points it observes) and applied along the trajectory: each step between consecutive posed
frames is stretched by the local scale, so the scale drift of the tracker is undone
instead of averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mvs.geometry import invert_pose_44, project_n2, transform_n3
from mvs.types import Sequence
from slam.alignment import umeyama_alignment
from slam.result import METRES, TrackingResult


def keyframe_depth_ratios_n(
    result: TrackingResult, depth_hw: np.ndarray, K_33: np.ndarray, keyframe_index: int
) -> np.ndarray:
    """Sensor depth over tracked depth (N,) of the map points a keyframe observes.

    depth_hw: the keyframe's sensor depth (metres, 0 invalid) in the camera `K_33`;
    points projecting outside the image or onto invalid depth are left out.
    """
    cam_T_world_44 = invert_pose_44(result.world_T_cam_44[keyframe_index])
    points_n3 = transform_n3(cam_T_world_44, result.map_points_n3[result.keyframe_point_ids[keyframe_index]])
    uv_n2, z_n = project_n2(points_n3, K_33)
    height, width = depth_hw.shape
    pixel_n2 = np.rint(np.where(np.isfinite(uv_n2), uv_n2, -1)).astype(np.int64)
    inside_n = (z_n > 0) & (pixel_n2[:, 0] >= 0) & (pixel_n2[:, 0] < width) & (pixel_n2[:, 1] >= 0) & (pixel_n2[:, 1] < height)
    sensor_n = np.zeros(len(z_n))
    sensor_n[inside_n] = depth_hw[pixel_n2[inside_n, 1], pixel_n2[inside_n, 0]]
    valid_n = inside_n & (sensor_n > 0)
    return sensor_n[valid_n] / z_n[valid_n]


@dataclass
class SensorScaleConfig:
    """How sensor depth fixes a monocular trajectory's scale.

    per_keyframe_window: 0 applies one scale (the median ratio over up to `max_keyframes`
    keyframes spread over the sequence); N > 0 measures every keyframe and applies, along
    the trajectory, the median of the scales of the N keyframes either side of each (a
    keyframe's own scale is the median ratio of its points, kept when it has at least
    `min_points` of them with valid sensor depth).
    """

    per_keyframe_window: int = 0
    max_keyframes: int = 40
    min_points: int = 10


def scale_from_sensor(
    result: TrackingResult, sequence: Sequence, config: SensorScaleConfig | None = None
) -> TrackingResult:
    """The result in metres, from the ratio of sensor depth to tracked depth at keyframes
    (their frames are loaded with their sensor depth): one global scale, or a scale that
    follows the trajectory keyframe by keyframe (see SensorScaleConfig)."""
    config = config or SensorScaleConfig()
    if not sequence.has_depth:
        raise ValueError(f"{sequence.root}: scale from sensor depth needs depth maps and this sequence has none")
    keyframes = sorted(i for i in result.keyframe_point_ids if i in result.world_T_cam_44)
    if not keyframes:
        raise ValueError("scale_from_sensor: the tracking result has no posed keyframes to measure depth in")
    if config.per_keyframe_window <= 0:
        spread = np.unique(np.linspace(0, len(keyframes) - 1, config.max_keyframes).round().astype(int))
        keyframes = [keyframes[k] for k in spread]
    ratios = {}
    for index in keyframes:
        frame = sequence.load_frame(index)
        if frame.depth_hw is not None:
            ratios[index] = keyframe_depth_ratios_n(result, frame.depth_hw, sequence.camera.K_33, index)
    ratio_n = np.concatenate(list(ratios.values())) if ratios else np.zeros(0)
    if len(ratio_n) < config.min_points:
        raise ValueError(
            f"{sequence.root}: only {len(ratio_n)} tracked points have valid sensor depth; cannot fix the scale"
        )
    global_scale = float(np.median(ratio_n))
    if config.per_keyframe_window <= 0:
        return result.scaled(global_scale, METRES)
    measured = [i for i in keyframes if i in ratios and len(ratios[i]) >= config.min_points]
    scale_k = np.array([np.median(ratios[i]) for i in measured])
    window = config.per_keyframe_window
    smoothed_k = np.array([np.median(scale_k[max(0, k - window) : k + window + 1]) for k in range(len(measured))])
    return rescaled_along_trajectory(result, np.array(measured), smoothed_k, global_scale)


def rescaled_along_trajectory(
    result: TrackingResult, keyframe_indices_k: np.ndarray, scale_k: np.ndarray, default_scale: float
) -> TrackingResult:
    """The result in metres under a scale that varies along the trajectory.

    keyframe_indices_k (K,): increasing frame indices where the scale `scale_k` (K,) (metres
    per tracking unit) was measured; between them the scale is interpolated linearly in
    the frame index, and held beyond the ends (`default_scale` everywhere when K = 0).
    Rotations are kept; camera centres are rebuilt step by step, each step between
    consecutive posed frames multiplied by the scale at its middle. A map point moves with
    the first keyframe that observes it: scaled about that keyframe's camera centre.
    """
    indices = sorted(result.world_T_cam_44)
    if len(keyframe_indices_k) == 0:
        keyframe_indices_k, scale_k = np.array([indices[0]]), np.array([default_scale])
    scale_n = np.interp(indices, keyframe_indices_k, scale_k)
    centre_n3 = np.stack([result.world_T_cam_44[i][:3, 3] for i in indices])
    step_n3 = np.diff(centre_n3, axis=0) * ((scale_n[1:] + scale_n[:-1]) / 2)[:, None]
    new_centre_n3 = np.concatenate([centre_n3[:1] * scale_n[0], centre_n3[:1] * scale_n[0] + np.cumsum(step_n3, axis=0)])
    world_T_cam_44 = {}
    for position, index in enumerate(indices):
        pose_44 = result.world_T_cam_44[index].copy()
        pose_44[:3, 3] = new_centre_n3[position]
        world_T_cam_44[index] = pose_44
    position_of = {index: position for position, index in enumerate(indices)}
    points_n3 = result.map_points_n3 * default_scale
    moved_n = np.zeros(len(points_n3), dtype=bool)
    for index in sorted(result.keyframe_point_ids):
        if index not in position_of:
            continue
        rows_n = result.keyframe_point_ids[index]
        rows_n = rows_n[~moved_n[rows_n]]
        position = position_of[index]
        points_n3[rows_n] = new_centre_n3[position] + scale_n[position] * (
            result.map_points_n3[rows_n] - centre_n3[position]
        )
        moved_n[rows_n] = True
    return replace(
        result,
        world_T_cam_44=world_T_cam_44,
        map_points_n3=points_n3,
        median_depth=result.median_depth * float(np.median(scale_n)),
        scale=METRES,
    )


def scale_from_gt(result: TrackingResult, sequence: Sequence) -> TrackingResult:
    """The result in metres, scaled by the Sim(3) alignment of its camera centres to the
    ground-truth centres (evaluation only: it uses ground truth)."""
    common = sorted(set(result.world_T_cam_44) & set(sequence.gt_world_T_cam_44))
    if len(common) < 3:
        raise ValueError(
            f"{sequence.root}: scale from ground truth needs at least 3 posed frames with ground-truth "
            f"poses, got {len(common)}"
        )
    est_n3 = np.stack([result.world_T_cam_44[i][:3, 3] for i in common])
    gt_n3 = np.stack([sequence.gt_world_T_cam_44[i][:3, 3] for i in common])
    return result.scaled(umeyama_alignment(est_n3, gt_n3, with_scale=True).scale, METRES)
