"""Where a run's camera poses come from: the sequence's own, tracking (colour only or RGB-D),
COLMAP or an imported model; their scale; and the refinement of a dataset's poses to its
colour images."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from mvs.config import RunConfig, TrackingConfig
from mvs.io.imported_poses import colmap_sfm_poses, imported_poses
from mvs.types import Sequence
from slam.frontend import track_sequence
from slam.refine import refine_poses
from slam.result import METRES, TrackingResult
from slam.rgbd import track_rgbd_sequence
from slam.scale import scale_from_gt, scale_from_sensor

NOMINAL_MEDIAN_DEPTH_M = 2.0
"""Median scene depth (tracking units) that poses of unknown scale are normalised to: a room's."""
NORMALISED_UNITS = f"tracking units (scaled to a {NOMINAL_MEDIAN_DEPTH_M:g} m median scene depth)"


def estimate_poses(sequence: Sequence, config: TrackingConfig) -> TrackingResult:
    """Camera poses for the selected frames, from the source `config.poses` names.

    Monocular tracking and COLMAP are scaled to metres as `config.scale` says (imported
    poses only when it asks); raises TrackingFailed (carrying the poses found so far) when
    tracking cannot initialise.
    """
    if config.pose_file and config.poses != "import":
        raise ValueError(f"--pose-file {config.pose_file} is read only with --poses import, not --poses {config.poses}")
    if config.poses == "gt":
        if not sequence.has_poses:
            raise ValueError(
                f"{sequence.root}: --poses gt needs ground-truth poses and this sequence has none; "
                "estimate them with --poses track (colour only) or --poses rgbd (colour and depth)"
            )
        return TrackingResult(dict(sequence.gt_world_T_cam_44), [], np.zeros((0, 3)), float("nan"), METRES)
    if config.poses == "rgbd":
        if not sequence.has_depth:
            raise ValueError(f"{sequence.root}: --poses rgbd needs sensor depth and this sequence has none")
        if config.rgbd.tracker != "map":
            return track_rgbd_sequence(sequence, config.rgbd)
        result = track_sequence(sequence, replace(config.vo, lift_depth=True), use_depth=True)
        return scale_from_sensor(result, sequence, config.sensor_scale)
    if config.poses == "import":
        result = imported_poses(sequence, config.pose_file, config.scale)
    elif config.poses == "colmap":
        result = colmap_sfm_poses(sequence, config.colmap)
    elif config.poses == "track":
        # With the scale from the sensor, its depth also holds the scale along the trajectory.
        result = track_sequence(sequence, config.vo, use_depth=config.scale == "sensor" and sequence.has_depth)
    else:
        raise ValueError(f"--poses: expected gt, track, rgbd, colmap or import, got '{config.poses}'")
    if config.scale == "sensor":
        return scale_from_sensor(result, sequence, config.sensor_scale)
    if config.scale == "gt":
        return scale_from_gt(result, sequence)
    if config.scale != "none":
        raise ValueError(f"--scale: expected none, sensor or gt, got '{config.scale}'")
    if config.in_metres:
        return result
    # Unknown scale: normalise it so the median scene depth is that of a typical room, which
    # keeps the depth range and the TSDF voxel size meaningful.
    return result.scaled(NOMINAL_MEDIAN_DEPTH_M / result.median_depth, NORMALISED_UNITS)


def lost_reason(config: TrackingConfig) -> str:
    """Why a frame has no pose from the source `config.poses`."""
    if config.poses == "import":
        return f"no pose in {config.pose_file}"
    if config.poses == "colmap":
        return "not registered by COLMAP"
    return "tracking lost"


def refined_to_colour_wanted(config: RunConfig) -> bool:
    """Whether dataset poses are refined to the colour images: `tracking.refine_gt` asks
    and depth comes from a plane sweep over those images."""
    return config.tracking.poses == "gt" and config.tracking.refine_gt and config.depth.source != "sensor"


def refined_to_colour(
    sequence: Sequence, poses: TrackingResult, config: RunConfig
) -> tuple[TrackingResult, dict[str, float]]:
    """Dataset poses refined to the colour images when `tracking.refine_gt` asks and depth
    comes from a plane sweep over those images, with the size of the corrections (for
    `report.json`'s `pose_refinement`); otherwise `poses` unchanged and no figures."""
    if not refined_to_colour_wanted(config):
        return poses, {}
    refinement = refine_poses(sequence, poses.world_T_cam_44, config.tracking.refine)
    rotation_d, translation_d = list(refinement.rotation_deg.values()), list(refinement.translation_m.values())
    figures = {
        "frames_refined": len(rotation_d),
        "frames_unrefined": len(refinement.unrefined),
        "points": refinement.points,
        "median_rotation_deg": float(np.median(rotation_d)) if rotation_d else 0.0,
        "median_translation_m": float(np.median(translation_d)) if translation_d else 0.0,
    }
    return replace(poses, world_T_cam_44=refinement.world_T_cam_44), figures
