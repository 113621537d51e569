"""The scene's depth range: from a map's points or corners triangulated with the poses, it
brackets the scene's true depth; the --config file and the flags still win over it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mvs.config import DepthConfig, RunConfig, Setting
from mvs.depth_range import (
    FAR_MARGIN,
    HIGH_PERCENTILE,
    LOW_PERCENTILE,
    MIN_DEPTHS,
    NEAR_MARGIN,
    SAMPLED_KEYFRAMES,
    estimate_scene_range,
    scene_depth_range,
)
from mvs.geometry import look_at_world_T_cam_44
from mvs.io.layout import open_sequence
from mvs.io.settings import with_scene_settings
from mvs.types import Camera
from slam.keyframes import select_keyframes
from slam.result import METRES, TrackingResult

CAMERA = Camera(np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]]), 160, 120)
BOX_LOW_3, BOX_HIGH_3 = np.array([-2.0, -1.25, -3.0]), np.array([2.0, 1.25, 3.0])
"""A room 4 x 2.5 x 6 m, seen from inside."""


def box_depth_hw(world_T_cam_44: np.ndarray) -> np.ndarray:
    """Closed form: the z-depth (metres) of every pixel of CAMERA to the walls of the box."""
    u_hw, v_hw = np.meshgrid(np.arange(CAMERA.width), np.arange(CAMERA.height))
    rays_n3 = np.stack([u_hw.ravel(), v_hw.ravel(), np.ones(u_hw.size)], axis=1) @ np.linalg.inv(CAMERA.K_33).T
    directions_n3 = rays_n3 @ world_T_cam_44[:3, :3].T  # unit z in the camera: t is the z-depth
    centre_3 = world_T_cam_44[:3, 3]
    with np.errstate(divide="ignore"):
        exits_n3 = np.where(directions_n3 > 0, BOX_HIGH_3 - centre_3, BOX_LOW_3 - centre_3) / directions_n3
    return np.min(np.where(np.isfinite(exits_n3), exits_n3, np.inf), axis=1).reshape(CAMERA.height, CAMERA.width)


def box_room_map(keyframes: int = 8, corners: int = 150, seed: int = 0) -> tuple[TrackingResult, np.ndarray]:
    """A tracker's result in the box room: keyframes looking about it, each adding map points
    where `corners` random pixels meet the walls and observing every map point in its view
    (inside a convex room nothing is hidden); and the true depth (K, H, W) of the keyframes."""
    rng = np.random.default_rng(seed)
    world_T_cam_44, truth = {}, []
    for k in range(keyframes):
        eye_3 = rng.uniform([-1.0, -0.5, -1.5], [1.0, 0.5, 1.5])
        yaw = 2 * np.pi * k / keyframes
        target_3 = eye_3 + np.array([np.sin(yaw), rng.uniform(-0.3, 0.3), np.cos(yaw)])
        world_T_cam_44[k] = look_at_world_T_cam_44(eye_3, target_3, np.array([0.0, -1.0, 0.0]))
        truth.append(box_depth_hw(world_T_cam_44[k]))
    points = []
    for k, depth_hw in enumerate(truth):
        u_n, v_n = rng.integers(0, CAMERA.width, corners), rng.integers(0, CAMERA.height, corners)
        rays_n3 = np.stack([u_n, v_n, np.ones(corners)], axis=1) @ np.linalg.inv(CAMERA.K_33).T
        cam_n3 = rays_n3 * depth_hw[v_n, u_n, None]
        points.append(cam_n3 @ world_T_cam_44[k][:3, :3].T + world_T_cam_44[k][:3, 3])
    points_n3 = np.concatenate(points)
    keyframe_point_ids = {}
    for k, pose_44 in world_T_cam_44.items():
        cam_n3 = (points_n3 - pose_44[:3, 3]) @ pose_44[:3, :3]
        z_n = np.maximum(cam_n3[:, 2], 1e-9)
        u_n = CAMERA.fx * cam_n3[:, 0] / z_n + CAMERA.cx
        v_n = CAMERA.fy * cam_n3[:, 1] / z_n + CAMERA.cy
        seen_n = (cam_n3[:, 2] > 0) & (u_n >= 0) & (u_n <= CAMERA.width - 1) & (v_n >= 0) & (v_n <= CAMERA.height - 1)
        keyframe_point_ids[k] = np.flatnonzero(seen_n)
    result = TrackingResult(world_T_cam_44, [], points_n3, float("nan"), METRES, keyframe_point_ids)
    return result, np.stack(truth)


def assert_brackets(scene, truth_n: np.ndarray, tolerance: float) -> None:
    """The range holds the true LOW..HIGH percentiles, the measured percentiles are within
    `tolerance` (relative) of the true ones, and the margin is the only widening."""
    true_low, true_high = np.percentile(truth_n, [LOW_PERCENTILE, HIGH_PERCENTILE])
    assert scene.near <= true_low and scene.far >= true_high
    assert scene.low == pytest.approx(true_low, rel=tolerance)
    assert scene.high == pytest.approx(true_high, rel=tolerance)
    assert scene.near == pytest.approx(scene.low / NEAR_MARGIN, rel=1e-3)
    assert scene.far == pytest.approx(scene.high * FAR_MARGIN, rel=1e-3)


def test_percentiles_with_a_margin_and_too_few_depths():
    depth_n = np.linspace(1.0, 5.0, 1001)  # percentile p lies at 1 + 4 p / 100
    scene = scene_depth_range(depth_n, "a ramp")
    assert (scene.low, scene.high) == pytest.approx((1.08, 4.92))
    assert (scene.near, scene.far) == pytest.approx((1.08 / NEAR_MARGIN, 4.92 * FAR_MARGIN), abs=1e-3)
    assert scene.overlap_depths == pytest.approx((1.4, 3.0, 4.6))
    assert scene_depth_range(np.concatenate([depth_n[: MIN_DEPTHS - 1], np.zeros(50), [np.nan]]), "few") is None


def test_map_points_give_a_range_that_brackets_the_true_depth_of_the_room():
    poses, truth_khw = box_room_map()
    scene = estimate_scene_range(None, poses, DepthConfig().keyframe)  # the map decides: no frame is read
    # Corners at random pixels sample the views' depth as the pixels do: the percentiles
    # agree within 15 % (points seen by other keyframes weigh the walls by area instead).
    assert_brackets(scene, truth_khw.ravel(), tolerance=0.15)
    assert scene.overlap_depths[1] == pytest.approx(np.median(truth_khw), rel=0.1)
    assert "map points in 8 keyframes" in scene.evidence


def range_from_dataset_poses(folder: Path):
    """The scene range the pipeline estimates from a sequence's own poses (no map), and the
    sequence's depth (N,) at its keyframes, which the estimate never reads."""
    sequence = open_sequence(str(folder))
    poses = TrackingResult(dict(sequence.gt_world_T_cam_44), [], np.zeros((0, 3)), float("nan"), METRES)
    posed = [i for i in sequence.indices if i in poses.world_T_cam_44]
    plans = select_keyframes([poses.world_T_cam_44[i] for i in posed], sequence.camera, DepthConfig().keyframe).plans
    depth_n = np.concatenate([sequence[plan.reference_index].depth_hw.ravel() for plan in plans])
    return estimate_scene_range(sequence, poses, DepthConfig().keyframe), depth_n[depth_n > 0], len(plans)


def test_corners_triangulated_with_the_poses_bracket_the_true_depth_of_a_synthetic_room(small_room: Path):
    # The truth: the rendered depth of every keyframe. Corners sit where the texture is, not
    # evenly over the pixels: percentiles within 25 %.
    scene, truth_n, keyframes = range_from_dataset_poses(small_room)
    assert_brackets(scene, truth_n, tolerance=0.25)
    assert scene.overlap_depths[1] == pytest.approx(np.median(truth_n), rel=0.25)
    assert f"triangulated in {min(keyframes, SAMPLED_KEYFRAMES)} keyframes" in scene.evidence


TABLETOP = Path(__file__).resolve().parents[2] / "shared" / "data" / "tabletop-sample"


@pytest.mark.skipif(not TABLETOP.is_dir(), reason="needs ../shared/data/tabletop-sample")
def test_the_tabletop_range_from_its_poses_brackets_its_sensor_depth():
    # A desk seen from 0.3-1 m by another camera: the range (from colour and the dataset's
    # poses) must hold the sensor's depth, and the planner's travel scale follow it.
    scene, sensor_n, _ = range_from_dataset_poses(TABLETOP)
    sensor_low, sensor_median, sensor_high = np.percentile(sensor_n, [LOW_PERCENTILE, 50, HIGH_PERCENTILE])
    assert scene.near <= sensor_low and scene.far >= sensor_high
    assert scene.overlap_depths[1] == pytest.approx(sensor_median, rel=0.15)
    assert replace(DepthConfig().keyframe, overlap_depths=scene.overlap_depths).depth_scale < 0.2


def test_the_scene_chooses_what_the_config_file_and_flags_leave():
    poses, truth_khw = box_room_map()
    config = RunConfig()
    config.depth.source = "classic"
    scene_config, line = with_scene_settings(config, None, poses)
    settings = {s.key: s for s in scene_config.settings}
    scene = estimate_scene_range(None, poses, DepthConfig().keyframe)
    assert (scene_config.depth.near, scene_config.depth.far) == (scene.near, scene.far)
    assert scene_config.depth.keyframe.overlap_depths == scene.overlap_depths
    assert {key: s.source for key, s in settings.items()} == {
        "depth.near": "input", "depth.far": "input", "depth.keyframe.overlap_depths": "input",
        "fusion.voxel_size": "input"}
    assert "the scene's depth" in settings["depth.near"].reason and "map points" in settings["depth.far"].reason
    assert line.startswith(f"depth range: {scene.near:.2f}-{scene.far:.2f} m")
    # The voxels scale with the scene's median depth: 2 cm for a room at the planner's 2.3 m.
    median = scene.overlap_depths[1]
    assert scene_config.fusion.voxel_size == pytest.approx(0.02 * median / 2.3, abs=1e-4)
    assert f"TSDF voxels of {scene_config.fusion.voxel_size:g} m" in line
    assert config.settings == [] and config.depth.near == DepthConfig().near  # the input is not modified

    # A flag (or the --config file) that sets a key keeps it; the others still come from the scene.
    config.settings.append(Setting("depth.near", 0.1, "flag", "command line"))
    config.depth.near = 0.1
    flagged, _ = with_scene_settings(config, None, poses)
    assert flagged.depth.near == 0.1 and flagged.depth.far == scene.far
    assert [s.source for s in flagged.settings if s.key == "depth.near"] == ["flag"]

    # With every key set, nothing is estimated: the sequence (None here) is never read.
    config.settings += [Setting("depth.far", 8.0, "config", "room.yaml"),
                        Setting("depth.keyframe.overlap_depths", (1.0, 2.0), "config", "room.yaml"),
                        Setting("fusion.voxel_size", 0.03, "config", "room.yaml")]
    config.depth.far, config.depth.keyframe.overlap_depths, config.fusion.voxel_size = 8.0, (1.0, 2.0), 0.03
    pinned, line = with_scene_settings(config, None, replace(poses, keyframe_point_ids={}))
    assert (pinned.depth.near, pinned.depth.far) == (0.1, 8.0) and pinned.settings == config.settings
    assert "as the --config file and flags set it" in line
