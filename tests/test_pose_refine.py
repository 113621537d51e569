"""Refinement of given poses to the colour images, on a rendered room with perturbed poses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mvs.geometry import invert_pose_44, make_pose_44, rotation_angle
from mvs.synth import RoomSpec, build_room
from mvs.synth_render import RoomRenderer
from mvs.types import Frame, Sequence
from slam.klt import KLTConfig
from slam.refine import (
    PoseRefineConfig,
    camera_centres_k3,
    nearest_corrections_k44,
    refine_poses,
    smooth_depth_at_n,
)
from slam.twoview import triangulate_n3

NUM_FRAMES = 40
SMALL_IMAGE_REFINE = PoseRefineConfig(
    klt=KLTConfig(max_corners=250, min_distance_px=6, window_px=15, levels=2), prior_sigma_m=0.04, prior_sigma_deg=1.0
)
"""KLT settings of the default config scaled to a 160x120 image, and a pose prior as weak
against its pixels (4 times the angle of a 640-pixel-wide image's) as the default's."""


@pytest.fixture(scope="module")
def room_sequence() -> Sequence:
    """40 frames of room 0 at 160x120, every other frame of its 300-frame loop (~3 cm apart)."""
    room = build_room(RoomSpec(seed=0, num_frames=300, width=160, height=120))
    renderer = RoomRenderer(room)
    frames = {}
    for index in range(0, 2 * NUM_FRAMES, 2):
        image_hw3, depth_hw = renderer.render(room.world_T_cam_n44[index])
        frames[index] = Frame(index, float(index), image_hw3, depth_hw, room.world_T_cam_n44[index])
    return Sequence(
        name="room", root=Path("room"), layout="synthetic", camera=room.camera, indices=sorted(frames),
        load_frame=frames.__getitem__, has_depth=True, has_poses=True,
        gt_world_T_cam_44={i: frame.world_T_cam_44 for i, frame in frames.items()},
    )


def _perturbed(poses: dict[int, np.ndarray], sigma_deg: float, sigma_m: float, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    perturbed = {}
    for index, world_T_cam_44 in poses.items():
        axis_3 = rng.normal(size=3)
        angle = np.deg2rad(sigma_deg) * rng.normal()
        K_33 = np.array([[0, -axis_3[2], axis_3[1]], [axis_3[2], 0, -axis_3[0]], [-axis_3[1], axis_3[0], 0]])
        K_33 /= np.linalg.norm(axis_3)
        R_33 = np.eye(3) + np.sin(angle) * K_33 + (1 - np.cos(angle)) * K_33 @ K_33
        perturbed[index] = world_T_cam_44 @ make_pose_44(R_33, sigma_m * rng.normal(size=3))
    return perturbed


def _relative_errors(estimate: dict[int, np.ndarray], truth: dict[int, np.ndarray], gap: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (degrees) and translation (metres) errors of the motion between frames `gap`
    apart: what a plane sweep between them depends on."""
    indices = sorted(truth)
    rotation_n, translation_n = [], []
    for a, b in zip(indices, indices[gap:]):
        error_44 = invert_pose_44(invert_pose_44(estimate[a]) @ estimate[b]) @ (invert_pose_44(truth[a]) @ truth[b])
        rotation_n.append(np.rad2deg(rotation_angle(error_44[:3, :3])))
        translation_n.append(np.linalg.norm(error_44[:3, 3]))
    return np.array(rotation_n), np.array(translation_n)


def test_refinement_removes_per_frame_pose_noise(room_sequence):
    truth = room_sequence.gt_world_T_cam_44
    noisy = _perturbed(truth, sigma_deg=0.5, sigma_m=0.01, seed=3)
    rotation_before, translation_before = _relative_errors(noisy, truth)
    result = refine_poses(room_sequence, noisy, SMALL_IMAGE_REFINE)
    rotation_after, translation_after = _relative_errors(result.world_T_cam_44, truth)
    assert set(result.world_T_cam_44) == set(truth)
    assert len(result.unrefined) == 0
    # Measured: median error of the motion 4 frames apart 0.43 -> 0.07 degrees, 2.5 -> 0.22 cm.
    assert np.median(rotation_after) < 0.35 * np.median(rotation_before)
    assert np.median(translation_after) < 0.5 * np.median(translation_before)


def test_refinement_leaves_exact_poses_in_place(room_sequence):
    truth = room_sequence.gt_world_T_cam_44
    result = refine_poses(room_sequence, truth, SMALL_IMAGE_REFINE)
    rotation_n, translation_n = _relative_errors(result.world_T_cam_44, truth)
    # Measured: median 0.06 degrees and 2.1 mm (KLT and rendering noise; 0.05 and 1.2 mm
    # from the colour images alone).
    assert np.median(rotation_n) < 0.08
    assert np.median(translation_n) < 0.003


def test_rejected_frames_take_the_nearest_refined_correction(room_sequence):
    truth = room_sequence.gt_world_T_cam_44
    tight = PoseRefineConfig(klt=SMALL_IMAGE_REFINE.klt, max_rotation_deg=0.3, max_translation_m=0.01)
    noisy = _perturbed(truth, sigma_deg=0.5, sigma_m=0.01, seed=4)
    result = refine_poses(room_sequence, noisy, tight)
    unrefined = set(result.unrefined)
    refined = [i for i in sorted(truth) if i not in unrefined]
    assert unrefined and refined
    position = {i: k for k, i in enumerate(sorted(truth))}

    def correction_44(i: int) -> np.ndarray:
        return invert_pose_44(result.world_T_cam_44[i]) @ noisy[i]

    for index in unrefined:
        nearest = min(refined, key=lambda r: (abs(position[r] - position[index]), position[r]))
        np.testing.assert_allclose(correction_44(index), correction_44(nearest), atol=1e-9)


def test_nearest_corrections_prefer_the_earlier_frame_on_a_tie():
    correction_k44 = np.stack([make_pose_44(np.eye(3), np.array([k, 0.0, 0.0])) for k in range(5)])
    found_k44 = nearest_corrections_k44(correction_k44, np.array([False, True, False, True, False]))
    np.testing.assert_array_equal(found_k44[:, 0, 3], [1, 1, 1, 3, 3])
    none_k44 = nearest_corrections_k44(correction_k44, np.zeros(5, dtype=bool))
    np.testing.assert_array_equal(none_k44, np.broadcast_to(np.eye(4), (5, 4, 4)))


def test_triangulation_takes_one_pose_pair_per_point():
    K_33 = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    rng = np.random.default_rng(0)
    points_n3 = rng.uniform([-1, -1, 2], [1, 1, 4], size=(20, 3))
    a_n44 = np.stack([invert_pose_44(make_pose_44(np.eye(3), rng.normal(scale=0.1, size=3))) for _ in range(20)])
    b_n44 = np.stack([invert_pose_44(make_pose_44(np.eye(3), rng.normal(scale=0.1, size=3) + [0.3, 0, 0])) for _ in range(20)])

    def pixels_n2(cam_T_world_n44: np.ndarray) -> np.ndarray:
        camera_n3 = np.einsum("nij,nj->ni", cam_T_world_n44[:, :3, :3], points_n3) + cam_T_world_n44[:, :3, 3]
        uvw_n3 = camera_n3 @ K_33.T
        return uvw_n3[:, :2] / uvw_n3[:, 2:]

    found_n3 = triangulate_n3(K_33, a_n44, b_n44, pixels_n2(a_n44), pixels_n2(b_n44))
    np.testing.assert_allclose(found_n3, points_n3, atol=1e-8)
    np.testing.assert_allclose(camera_centres_k3(a_n44), [invert_pose_44(p)[:3, 3] for p in a_n44], atol=1e-12)


def test_pipeline_refines_dataset_poses_only_for_a_plane_sweep(room_sequence):
    from mvs.config import RunConfig
    from mvs.poses import estimate_poses, refined_to_colour

    config = RunConfig()
    config.tracking.poses, config.tracking.refine_gt, config.tracking.refine = "gt", True, SMALL_IMAGE_REFINE
    given = estimate_poses(room_sequence, config.tracking)
    for source, expect_refined in (("sensor", False), ("learned", True)):
        config.depth.source = source
        poses, figures = refined_to_colour(room_sequence, given, config)
        assert (poses is not given) == expect_refined
        assert bool(figures) == expect_refined
    assert figures["frames_refined"] == len(room_sequence)
    # Measured: 0.10 degrees (0.05 from the colour images alone; the sensor depth adds KLT's
    # error along the rays).
    assert figures["median_rotation_deg"] < 0.16


def _trajectory_scale(estimate: dict[int, np.ndarray], truth: dict[int, np.ndarray]) -> float:
    """Least-squares scale of the estimated camera centres about their mean against the true ones."""
    estimate_n3 = np.stack([estimate[i][:3, 3] for i in sorted(truth)])
    truth_n3 = np.stack([truth[i][:3, 3] for i in sorted(truth)])
    estimate_n3, truth_n3 = estimate_n3 - estimate_n3.mean(axis=0), truth_n3 - truth_n3.mean(axis=0)
    return float((estimate_n3 * truth_n3).sum() / (truth_n3**2).sum())


def test_sensor_depth_sets_the_scale_of_the_refined_trajectory(room_sequence):
    """Poses 5 % too far apart fit the colour images as well as the true ones (with every
    point 5 % farther): only the sensor depth shows the scale."""
    truth = room_sequence.gt_world_T_cam_44
    mean_3 = np.mean([pose_44[:3, 3] for pose_44 in truth.values()], axis=0)
    stretched = {}
    for index, pose_44 in truth.items():
        stretched[index] = pose_44.copy()
        stretched[index][:3, 3] = mean_3 + 1.05 * (pose_44[:3, 3] - mean_3)
    colour_only = refine_poses(room_sequence, stretched, replace(SMALL_IMAGE_REFINE, depth_sigma_relative=0.0))
    with_depth = refine_poses(room_sequence, stretched, SMALL_IMAGE_REFINE)
    # Measured: scale 1.050 with colour only, 1.009 with sensor depth.
    assert _trajectory_scale(colour_only.world_T_cam_44, truth) > 1.04
    assert abs(_trajectory_scale(with_depth.world_T_cam_44, truth) - 1.0) < 0.015


def test_depth_at_tracks_skips_edges_and_invalid_pixels():
    depth_hw = np.full((20, 30), 2.0, dtype=np.float32)
    depth_hw[:, 15:] = 3.0
    depth_hw[2, 2] = 0.0
    uv_n2 = np.array([[5.0, 10.0], [25.0, 10.0], [14.4, 10.0], [3.0, 3.0], [-1.0, 5.0], [29.6, 10.0]])
    found_n = smooth_depth_at_n(depth_hw, uv_n2, 1.03)
    np.testing.assert_array_equal(found_n, [2.0, 3.0, np.nan, np.nan, np.nan, np.nan])
    assert np.isnan(smooth_depth_at_n(None, uv_n2, 1.03)).all()
    assert np.isnan(smooth_depth_at_n(np.zeros_like(depth_hw), uv_n2, 1.03)).all()
    assert smooth_depth_at_n(depth_hw, np.zeros((0, 2)), 1.03).shape == (0,)
    # Bilinear between pixel centres on a plane rising 1 mm per column and 2 mm per row.
    slope_hw = np.tile(2.0 + 0.001 * np.arange(30, dtype=np.float32), (20, 1))
    slope_hw += 0.002 * np.arange(20, dtype=np.float32)[:, None]
    found_n = smooth_depth_at_n(slope_hw, np.array([[5.5, 10.25], [7.3, 4.9]]), 1.03)
    np.testing.assert_allclose(found_n, [2.0 + 0.0055 + 0.0205, 2.0 + 0.0073 + 0.0098], atol=1e-6)
