"""Metric scale for monocular tracking results: from sensor depth, or from ground truth."""

from __future__ import annotations

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


def scale_from_sensor(result: TrackingResult, sequence: Sequence, max_keyframes: int = 40) -> TrackingResult:
    """The result in metres, scaled by the median ratio of sensor depth to tracked depth.

    The ratios come from the map points observed in up to `max_keyframes` keyframes spread
    evenly over the sequence (their frames are loaded with their sensor depth).
    """
    if not sequence.has_depth:
        raise ValueError(f"{sequence.root}: scale from sensor depth needs depth maps and this sequence has none")
    keyframes = [i for i in result.keyframe_point_ids if i in result.world_T_cam_44]
    if not keyframes:
        raise ValueError("scale_from_sensor: the tracking result has no posed keyframes to measure depth in")
    chosen = [keyframes[k] for k in np.unique(np.linspace(0, len(keyframes) - 1, max_keyframes).round().astype(int))]
    ratios = []
    for index in chosen:
        frame = sequence.load_frame(index)
        if frame.depth_hw is not None:
            ratios.append(keyframe_depth_ratios_n(result, frame.depth_hw, sequence.camera.K_33, index))
    ratio_n = np.concatenate(ratios) if ratios else np.zeros(0)
    if len(ratio_n) < 10:
        raise ValueError(
            f"{sequence.root}: only {len(ratio_n)} tracked points have valid sensor depth; cannot fix the scale"
        )
    return result.scaled(float(np.median(ratio_n)), METRES)


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
