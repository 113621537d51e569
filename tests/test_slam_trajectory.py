"""Alignment and trajectory metrics against closed forms; TUM files; the top-view plot."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mvs.geometry import make_pose_44
from slam.alignment import Similarity, umeyama_alignment
from slam.trajectory import (
    EST_COLOUR_BGR,
    GT_COLOUR_BGR,
    ate_rmse,
    evaluate_trajectory,
    format_tum_trajectory,
    parse_tum_trajectory,
    plot_trajectory_png,
    read_tum_trajectory,
    relative_pose_errors,
    rotation_angle_deg,
    write_tum_trajectory,
)


def _random_similarity(rng: np.random.Generator, scale: float) -> Similarity:
    return Similarity(scale, Rotation.random(random_state=rng.integers(1 << 31)).as_matrix(), rng.normal(0, 2, 3))


def test_umeyama_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    source_n3 = rng.normal(0, 1, (50, 3))
    truth = _random_similarity(rng, 2.7)
    found = umeyama_alignment(source_n3, truth.apply_n3(source_n3), with_scale=True)
    assert found.scale == pytest.approx(2.7, abs=1e-12)
    np.testing.assert_allclose(found.R_33, truth.R_33, atol=1e-12)
    np.testing.assert_allclose(found.t_3, truth.t_3, atol=1e-12)


def test_umeyama_without_scale_recovers_a_rigid_transform_and_a_reflection_is_refused():
    rng = np.random.default_rng(1)
    source_n3 = rng.normal(0, 1, (20, 3))
    truth = _random_similarity(rng, 1.0)
    found = umeyama_alignment(source_n3, truth.apply_n3(source_n3), with_scale=False)
    assert found.scale == 1.0
    np.testing.assert_allclose(found.R_33, truth.R_33, atol=1e-12)
    mirrored = umeyama_alignment(source_n3, source_n3 * np.array([1.0, 1.0, -1.0]), with_scale=False)
    assert np.linalg.det(mirrored.R_33) == pytest.approx(1.0, abs=1e-12)


def test_umeyama_rejects_bad_input():
    with pytest.raises(ValueError, match="equal shape"):
        umeyama_alignment(np.zeros((5, 3)), np.zeros((4, 3)), True)
    with pytest.raises(ValueError, match="at least 3"):
        umeyama_alignment(np.zeros((2, 3)), np.zeros((2, 3)), True)


def test_ate_of_a_similar_copy_is_zero_and_of_a_noisy_copy_is_the_noise_rms():
    rng = np.random.default_rng(2)
    gt_n3 = np.cumsum(rng.normal(0, 0.05, (4000, 3)), axis=0)
    est_n3 = _random_similarity(rng, 0.3).apply_n3(gt_n3)
    assert ate_rmse(est_n3, gt_n3, with_scale=True) < 1e-9
    noise_n3 = rng.normal(0, 0.01, gt_n3.shape)
    noise_rms = float(np.sqrt(np.mean(np.sum(noise_n3**2, axis=1))))
    # Alignment absorbs 7 of 3N degrees of freedom of the noise: the RMS drops by < 0.1 %.
    assert ate_rmse(gt_n3 + noise_n3, gt_n3, with_scale=False) == pytest.approx(noise_rms, rel=2e-3)


def test_rpe_of_scaled_translations_and_extra_rotation_per_frame():
    count = 30
    gt_n44 = np.stack([make_pose_44(np.eye(3), [0.1 * i, 0.0, 0.0]) for i in range(count)])
    step_44 = make_pose_44(Rotation.from_euler("z", 0.5, degrees=True).as_matrix(), [0.11, 0.0, 0.0])
    est_n44 = np.stack([np.linalg.matrix_power(step_44, i) for i in range(count)])
    translation_m, rotation_deg_m = relative_pose_errors(est_n44, gt_n44, delta=1)
    # Every estimated step moves 0.11 m along x and turns 0.5 degrees; ground truth 0.1 m.
    np.testing.assert_allclose(rotation_deg_m, 0.5, atol=1e-9)
    np.testing.assert_allclose(translation_m, 0.01, atol=1e-9)
    translation_m, _ = relative_pose_errors(est_n44, gt_n44, delta=1, scale=1 / 1.1)
    np.testing.assert_allclose(translation_m, 0.0, atol=1e-9)


def test_rotation_angle_is_accurate_for_small_angles_of_rounded_matrices():
    R_33 = Rotation.from_rotvec([0.0, 0.0, np.radians(0.01)]).as_matrix()
    rounded_33 = np.round(R_33, 8)
    assert rotation_angle_deg(rounded_33) == pytest.approx(0.01, abs=1e-5)
    assert rotation_angle_deg(Rotation.from_rotvec([0, np.radians(170), 0]).as_matrix()) == pytest.approx(170, abs=1e-9)


def test_evaluate_trajectory_matches_frames_by_index():
    rng = np.random.default_rng(3)
    gt = {i: make_pose_44(Rotation.random(random_state=i).as_matrix(), rng.normal(0, 1, 3)) for i in range(0, 40, 2)}
    similarity = _random_similarity(rng, 4.0)
    inverse = Similarity(1 / 4.0, similarity.R_33.T, -similarity.R_33.T @ similarity.t_3 / 4.0)
    est = {i: inverse.apply_to_world_T_cam_44(pose_44) for i, pose_44 in gt.items() if i != 10}
    est[99] = np.eye(4)
    metrics = evaluate_trajectory(est, gt, with_scale=True)
    assert metrics.frames_matched == 19 and metrics.frames_ground_truth == 20
    assert metrics.ate_rmse < 1e-9 and metrics.rpe_translation_rmse < 1e-9 and metrics.rpe_rotation_rmse_deg < 1e-6
    assert metrics.scale == pytest.approx(4.0, rel=1e-12)
    with pytest.raises(ValueError, match="at least 3 frames"):
        evaluate_trajectory({0: np.eye(4)}, gt, with_scale=True)


def test_tum_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    poses = [make_pose_44(Rotation.random(random_state=i).as_matrix(), rng.normal(0, 3, 3)) for i in range(10)]
    timestamps = [1305031102.175304 + 0.033 * i for i in range(10)]
    path = write_tum_trajectory(tmp_path / "trajectory.txt", timestamps, poses)
    read_timestamps_n, read_n44 = read_tum_trajectory(path)
    np.testing.assert_allclose(read_timestamps_n, timestamps, atol=1e-6)
    np.testing.assert_allclose(read_n44, np.stack(poses), atol=1e-8)
    first_line = path.read_text().splitlines()[0].split()
    assert len(first_line) == 8 and float(first_line[7]) >= 0.0


def test_tum_parse_errors_name_the_line():
    with pytest.raises(ValueError, match="traj.txt:2: expected 8 values"):
        parse_tum_trajectory("# header\n0 1 2 3\n", "traj.txt")
    timestamps_n, poses_n44 = parse_tum_trajectory(format_tum_trajectory([], []), "empty")
    assert timestamps_n.shape == (0,) and poses_n44.shape == (0, 4, 4)


def test_plot_draws_both_trajectories(tmp_path):
    angle_n = np.linspace(0, 2 * np.pi, 100)
    gt_n3 = np.stack([np.cos(angle_n), np.sin(angle_n), 0.01 * angle_n], axis=1)
    est_n3 = gt_n3 * 1.1
    path = plot_trajectory_png(tmp_path / "trajectory.png", est_n3, gt_n3)
    image_hw3 = cv2.imread(str(path))
    assert image_hw3.shape == (800, 800, 3)
    for colour_bgr in (GT_COLOUR_BGR, EST_COLOUR_BGR):
        assert np.sum(np.all(image_hw3 == np.array(colour_bgr, dtype=np.uint8), axis=2)) > 200
