"""Refinement of given poses to the colour images, on a rendered room with perturbed poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mvs.geometry import invert_pose_44, make_pose_44, rotation_angle
from mvs.synth import RoomRenderer, RoomSpec, build_room
from mvs.types import Frame, Sequence
from slam.klt import KLTConfig
from slam.refine import PoseRefineConfig, camera_centres_k3, refine_poses
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
    assert len(result.kept) == 0
    # Measured: median error of the motion 4 frames apart 0.43 -> 0.05 degrees, 2.5 -> 0.24 cm.
    assert np.median(rotation_after) < 0.35 * np.median(rotation_before)
    assert np.median(translation_after) < 0.5 * np.median(translation_before)


def test_refinement_leaves_exact_poses_in_place(room_sequence):
    truth = room_sequence.gt_world_T_cam_44
    result = refine_poses(room_sequence, truth, SMALL_IMAGE_REFINE)
    rotation_n, translation_n = _relative_errors(result.world_T_cam_44, truth)
    # Measured: median 0.05 degrees and 1.2 mm (KLT and rendering noise).
    assert np.median(rotation_n) < 0.08
    assert np.median(translation_n) < 0.003


def test_refinement_rejects_implausible_corrections(room_sequence):
    truth = room_sequence.gt_world_T_cam_44
    tight = PoseRefineConfig(klt=SMALL_IMAGE_REFINE.klt, max_rotation_deg=0.01, max_translation_m=1e-4)
    noisy = _perturbed(truth, sigma_deg=0.5, sigma_m=0.01, seed=4)
    result = refine_poses(room_sequence, noisy, tight)
    kept = set(result.kept)
    assert len(kept) >= 0.9 * len(truth)
    for index in kept:
        np.testing.assert_array_equal(result.world_T_cam_44[index], noisy[index])


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
    from mvs.pipeline import RunReport, estimate_poses, refined_to_colour

    config = RunConfig()
    config.tracking.poses, config.tracking.refine_gt, config.tracking.refine = "gt", True, SMALL_IMAGE_REFINE
    given = estimate_poses(room_sequence, config.tracking)
    for source, expect_refined in (("sensor", False), ("learned", True)):
        config.depth.source = source
        report = RunReport("room", "synthetic", "gt", source, "metres", len(room_sequence))
        poses = refined_to_colour(room_sequence, given, config, report)
        assert (poses is not given) == expect_refined
        assert bool(report.pose_refinement) == expect_refined
    assert report.pose_refinement["frames_refined"] == len(room_sequence)
    assert report.pose_refinement["median_rotation_deg"] < 0.1
