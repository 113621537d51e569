"""Keyframe selection: pose distance closed forms, keyframe spacing, source choice, overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mvs.geometry import look_at_world_T_cam_44, make_pose_44
from mvs.types import Camera
from slam.keyframes import (
    KeyframeConfig,
    KeyframePlan,
    pose_distance,
    select_keyframes,
    view_overlaps_n,
)

CAMERA = Camera(np.array([[262.5, 0, 159.5], [0, 262.5, 119.5], [0, 0, 1.0]]), 320, 240)


def rotation_z_33(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def sideways_track(count: int, step_m: float) -> list[np.ndarray]:
    """Cameras looking along +z, moving along x by `step_m` per frame."""
    return [make_pose_44(np.eye(3), np.array([i * step_m, 0.0, 0.0])) for i in range(count)]


def test_pose_distance_closed_forms() -> None:
    origin_44 = np.eye(4)
    assert pose_distance(origin_44, make_pose_44(np.eye(3), np.array([0.3, 0.0, 0.4]))) == pytest.approx(0.5)
    angle = math.radians(10.0)
    expected = math.sqrt((2.0 / 3.0) * (2.0 - 2.0 * math.cos(angle)))
    assert pose_distance(origin_44, make_pose_44(rotation_z_33(angle), np.zeros(3))) == pytest.approx(expected)
    # The relative motion is taken in the first camera's frame: moving both does not change it.
    world_T_a_44 = make_pose_44(rotation_z_33(0.7), np.array([1.0, 2.0, 3.0]))
    a_T_b_44 = make_pose_44(rotation_z_33(0.1), np.array([0.05, -0.1, 0.2]))
    assert pose_distance(world_T_a_44, world_T_a_44 @ a_T_b_44) == pytest.approx(pose_distance(origin_44, a_T_b_44))


def test_new_keyframe_every_threshold_of_motion() -> None:
    poses = sideways_track(61, 0.01)  # 1 cm per frame, threshold 9.5 cm -> every 10 frames
    selection = select_keyframes(poses, CAMERA, KeyframeConfig(new_keyframe_distance=0.095), mode="auto")
    assert selection.keyframe_indices == [0, 10, 20, 30, 40, 50, 60]
    assert selection.unplanned_indices == []
    plans = {plan.reference_index: plan.source_indices for plan in selection.plans}
    # Sources are keyframes on both sides, closest to the optimal distance (0.2 m) first.
    assert plans[0][0] == 20 and plans[0][1] in (10, 30)
    assert plans[30] in ((10, 50), (50, 10))
    assert plans[60][0] == 40 and plans[60][1] in (30, 50)


def test_auto_mode_searches_only_the_nearest_keyframes() -> None:
    poses = sideways_track(61, 0.01)
    config = KeyframeConfig(new_keyframe_distance=0.095, search_keyframes=2, max_sources=4, min_translation=0.0)
    plans = {plan.reference_index: plan.source_indices for plan in select_keyframes(poses, CAMERA, config).plans}
    assert set(plans[30]) == {20, 40}
    assert plans[0] == (10,)


def test_all_mode_takes_sources_on_both_sides() -> None:
    poses = sideways_track(41, 0.01)
    config = KeyframeConfig(optimal_distance=0.1, min_translation=0.0)
    selection = select_keyframes(poses, CAMERA, config, mode="all")
    assert selection.keyframe_indices == list(range(41))
    plans = {plan.reference_index: plan.source_indices for plan in selection.plans}
    assert set(plans[20]) == {10, 30}
    assert plans[0] == (10, 9) or plans[0] == (10, 11)
    assert all(isinstance(plan, KeyframePlan) for plan in selection.plans)


def test_sources_that_only_turn_are_a_last_resort() -> None:
    # From the reference: a 14-degree turn on the spot (pose distance 0.2, the optimum) and a
    # 15 cm shift (pose distance 0.15). Only the shift gives parallax.
    reference_44 = np.eye(4)
    turned_44 = make_pose_44(rotation_z_33(math.radians(14.0)), np.zeros(3))
    shifted_44 = make_pose_44(np.eye(3), np.array([0.15, 0.0, 0.0]))
    poses = [reference_44, turned_44, shifted_44]
    config = KeyframeConfig(max_sources=1, min_translation=0.1)
    plans = {plan.reference_index: plan.source_indices for plan in select_keyframes(poses, CAMERA, config, "all").plans}
    assert plans[0] == (2,)
    # With nothing that moved far enough, the turn is still used.
    plans = {plan.reference_index: plan.source_indices for plan in select_keyframes(poses[:2], CAMERA, config, "all").plans}
    assert plans[0] == (1,)
    assert pose_distance(reference_44, turned_44) == pytest.approx(0.2, abs=0.01)


def test_cameras_without_overlap_get_no_plan() -> None:
    # Two cameras 0.3 m apart looking in opposite directions see nothing in common.
    forward_44 = look_at_world_T_cam_44(np.zeros(3), np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    backward_44 = look_at_world_T_cam_44(np.array([0.3, 0, 0]), np.array([0.3, -1.0, 0.0]), np.array([0.0, 0.0, 1.0]))
    config = KeyframeConfig(max_distance=5.0, max_view_angle_deg=180.0)
    assert view_overlaps_n(forward_44, backward_44[None], CAMERA, config.overlap_depths)[0] == 0.0
    selection = select_keyframes([forward_44, backward_44], CAMERA, config, mode="all")
    assert selection.plans == []
    assert selection.unplanned_indices == [0, 1]


def test_overlap_of_a_sideways_shift_matches_the_pixel_shift() -> None:
    shift_m = 0.5
    src_44 = make_pose_44(np.eye(3), np.array([shift_m, 0.0, 0.0]))
    overlap = view_overlaps_n(np.eye(4), src_44[None], CAMERA, (2.0,))[0]
    # At 2 m the shift is fx * 0.5 / 2 = 65.6 px: grid columns at u < 320 - 1 - 65.6 stay inside.
    columns_u = (np.arange(8) + 0.5) * 320 / 8 - 0.5
    expected = np.mean(columns_u - CAMERA.fx * shift_m / 2.0 >= 0)
    assert overlap == pytest.approx(expected)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="keyframe mode"):
        select_keyframes(sideways_track(3, 0.1), CAMERA, KeyframeConfig(), mode="every")
    with pytest.raises(ValueError, match="finite 4x4"):
        select_keyframes([np.full((4, 4), np.inf)], CAMERA, KeyframeConfig())
