"""Keyframe selection: pose distance closed forms, keyframe spacing, source choice, overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mvs.geometry import invert_pose_44, look_at_world_T_cam_44, make_pose_44
from mvs.types import Camera
from slam.keyframes import (
    KeyframeConfig,
    KeyframePlan,
    choose_sources,
    pose_distance,
    select_keyframes,
    view_overlaps_n,
)

CAMERA = Camera(np.array([[262.5, 0, 159.5], [0, 262.5, 119.5], [0, 0, 1.0]]), 320, 240)


def rotation_z_33(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


ROOM_LOW_3, ROOM_HIGH_3 = np.array([-2.5, -2.0, 0.0]), np.array([2.5, 2.0, 2.5])
"""A box room (metres, z up): 5 x 4 m, 2.5 m high."""
ROOM_EYE_3 = np.array([0.0, -1.0, 1.4])


def room_points_m3(world_T_cam_44: np.ndarray, step_px: int = 4) -> np.ndarray:
    """World points where the rays of every `step_px`-th pixel of CAMERA hit the box room's
    walls from inside (ray casting: the nearest exit through the six planes)."""
    v_g, u_g = np.mgrid[0 : CAMERA.height : step_px, 0 : CAMERA.width : step_px]
    rays_cam_m3 = np.stack([u_g.ravel(), v_g.ravel(), np.ones(u_g.size)], axis=1) @ np.linalg.inv(CAMERA.K_33).T
    rays_m3 = rays_cam_m3 @ world_T_cam_44[:3, :3].T
    origin_3 = world_T_cam_44[:3, 3]
    safe_m3 = np.where(np.abs(rays_m3) > 1e-12, rays_m3, 1e-12)
    exits_m3 = np.where(rays_m3 > 0, ROOM_HIGH_3 - origin_3, ROOM_LOW_3 - origin_3) / safe_m3
    return origin_3 + rays_m3 * exits_m3.min(axis=1, keepdims=True)


def rendered_overlap(world_T_ref_44: np.ndarray, world_T_src_44: np.ndarray) -> float:
    """Share of the reference's pixels whose wall point the source sees (a box seen from
    inside hides nothing from itself, so inside the image and in front means seen)."""
    points_src_m3 = room_points_m3(world_T_ref_44) @ invert_pose_44(world_T_src_44)[:3, :3].T
    points_src_m3 += invert_pose_44(world_T_src_44)[:3, 3]
    pixels_m3 = points_src_m3 @ CAMERA.K_33.T
    z_m = points_src_m3[:, 2]
    u_m, v_m = pixels_m3[:, 0] / z_m, pixels_m3[:, 1] / z_m
    return float(np.mean((z_m > 0) & (u_m >= 0) & (u_m <= CAMERA.width - 1) & (v_m >= 0) & (v_m <= CAMERA.height - 1)))


def room_views_44(shift_m: float, turn_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """A camera looking at the far wall of the room (3 m away), and one `shift_m` to its
    right turned `turn_deg` to the right."""
    world_T_a_44 = look_at_world_T_cam_44(ROOM_EYE_3, np.array([0.0, 2.0, 1.2]), np.array([0.0, 0.0, 1.0]))
    world_T_b_44 = make_pose_44(
        rotation_z_33(math.radians(-turn_deg)) @ world_T_a_44[:3, :3], ROOM_EYE_3 + np.array([shift_m, 0.0, 0.0])
    )
    return world_T_a_44, world_T_b_44


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
    selection = select_keyframes(poses, CAMERA, KeyframeConfig(new_keyframe_distance=0.095, max_sources=2), mode="auto")
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
    config = KeyframeConfig(optimal_distance=0.1, min_translation=0.0, max_sources=2)
    selection = select_keyframes(poses, CAMERA, config, mode="all")
    assert selection.keyframe_indices == list(range(41))
    plans = {plan.reference_index: plan.source_indices for plan in selection.plans}
    assert set(plans[20]) == {10, 30}
    assert plans[0] == (10, 9) or plans[0] == (10, 11)
    assert all(isinstance(plan, KeyframePlan) for plan in selection.plans)


def test_travel_counts_relative_to_the_scene_depth() -> None:
    # A camera sweeping sideways 1.2 cm a frame, turning slowly (0.2 degrees a frame) and
    # weaving: the plan at the defaults' depths.
    poses = [make_pose_44(rotation_z_33(math.radians(0.2 * i)), np.array([0.012 * i, 0.02 * math.sin(i / 5), 0.0]))
             for i in range(80)]
    room = select_keyframes(poses, CAMERA, KeyframeConfig())
    assert KeyframeConfig().depth_scale == 1.0 and len(room.keyframe_indices) >= 6
    # The same motion five times smaller before a scene five times nearer gives the same
    # parallax: the same plan, whatever the units (0.2 of them here).
    small = [make_pose_44(pose_44[:3, :3], 0.2 * pose_44[:3, 3]) for pose_44 in poses]
    desk_depths = tuple(0.2 * depth for depth in KeyframeConfig().overlap_depths)
    desk = select_keyframes(small, CAMERA, KeyframeConfig(overlap_depths=desk_depths))
    assert (desk.keyframe_indices, desk.plans) == (room.keyframe_indices, room.plans)
    # Before the room's depths, the small motion is too short for new keyframes: fewer of them.
    assert len(select_keyframes(small, CAMERA, KeyframeConfig()).keyframe_indices) < len(room.keyframe_indices)


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


@pytest.mark.parametrize("shift_m, turn_deg", [(0.3, 25.0), (0.5, 20.0), (0.4, 35.0)])
def test_two_views_of_a_room_that_share_a_third_of_it_are_each_others_source(shift_m: float, turn_deg: float) -> None:
    world_T_a_44, world_T_b_44 = room_views_44(shift_m, turn_deg)
    config = KeyframeConfig()
    for ref_44, src_44 in ((world_T_a_44, world_T_b_44), (world_T_b_44, world_T_a_44)):
        # The overlap measured at 1, 2 and 4 m is the one of the rendered walls, within 0.1.
        true_overlap = rendered_overlap(ref_44, src_44)
        assert true_overlap >= 0.3
        measured = view_overlaps_n(ref_44, src_44[None], CAMERA, config.overlap_depths)[0]
        assert measured == pytest.approx(true_overlap, abs=0.1)
    # Wider apart than the limits that pick the best of many views allow...
    assert choose_sources([world_T_a_44, world_T_b_44], 0, [1], CAMERA, config) == ()
    assert choose_sources([world_T_a_44, world_T_b_44], 1, [0], CAMERA, config) == ()
    # ...but with no other view, each is still the other's source.
    selection = select_keyframes([world_T_a_44, world_T_b_44], CAMERA, config, mode="all")
    assert [(plan.reference_index, plan.source_indices) for plan in selection.plans] == [(0, (1,)), (1, (0,))]
    assert selection.unplanned_indices == []


def test_a_view_2_cm_away_is_a_source_when_nothing_else_is_and_one_that_did_not_move_is_not() -> None:
    world_T_a_44, _ = room_views_44(0.0, 0.0)
    config = KeyframeConfig()
    for travel_m, planned in ((0.02, True), (0.002, False)):
        # Parallax between 1 and 4 m: 262.5 px * travel * (1 - 1/4): 3.9 px at 2 cm, 0.39 px at 2 mm.
        world_T_b_44 = make_pose_44(world_T_a_44[:3, :3], ROOM_EYE_3 + np.array([travel_m, 0.0, 0.0]))
        assert pose_distance(world_T_a_44, world_T_b_44) < config.min_distance
        assert rendered_overlap(world_T_a_44, world_T_b_44) > 0.9
        selection = select_keyframes([world_T_a_44, world_T_b_44], CAMERA, config, mode="all")
        assert len(selection.plans) == (2 if planned else 0)
        assert selection.unplanned_indices == ([] if planned else [0, 1])


def test_a_view_within_the_limits_is_preferred_to_the_last_resort() -> None:
    world_T_a_44, world_T_wide_44 = room_views_44(0.5, 20.0)
    world_T_near_44 = make_pose_44(world_T_a_44[:3, :3], ROOM_EYE_3 + np.array([0.2, 0.0, 0.0]))
    selection = select_keyframes([world_T_a_44, world_T_wide_44, world_T_near_44], CAMERA, KeyframeConfig(), mode="all")
    plans = {plan.reference_index: plan.source_indices for plan in selection.plans}
    assert plans[0] == (2,)
    assert plans[1] == (2,)


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected positive depths"):
        select_keyframes(sideways_track(3, 0.1), CAMERA, KeyframeConfig(overlap_depths=(0.0, 0.0)))
    with pytest.raises(ValueError, match="keyframe mode"):
        select_keyframes(sideways_track(3, 0.1), CAMERA, KeyframeConfig(), mode="every")
    with pytest.raises(ValueError, match="finite 4x4"):
        select_keyframes([np.full((4, 4), np.inf)], CAMERA, KeyframeConfig())
