"""Two-view initialisation, PnP and bundle adjustment on synthetic points with known poses."""

from __future__ import annotations

import numpy as np
import pypose as pp
import pytest
import torch

from mvs.geometry import invert_pose_44, look_at_world_T_cam_44, project_n2, transform_n3
from slam import bundle_step
from slam.bundle import bundle_adjust, refine_pose
from slam.bundle_problem import BundleConfig, BundleProblem, ObservedDepth, PosePrior
from slam.bundle_step import solve_step
from slam.pnp import solve_pnp
from slam.twoview import checked_triangulation, initialise_two_view, triangulate_n3

K_33 = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
UP_3 = np.array([0.0, -1.0, 0.0])
TARGET_3 = np.array([0.0, 0.0, 4.5])


def _cam_T_world_44(eye_3) -> np.ndarray:
    return invert_pose_44(look_at_world_T_cam_44(np.asarray(eye_3, float), TARGET_3, UP_3))


def _scene(seed: int, count: int) -> np.ndarray:
    """World points (N, 3) in a box 3-6 m in front of cameras near the origin."""
    return np.random.default_rng(seed).uniform([-2.0, -1.5, 3.0], [2.0, 1.5, 6.0], (count, 3))


def _pixels_n2(cam_T_world_44: np.ndarray, points_n3: np.ndarray) -> np.ndarray:
    uv_n2, z_n = project_n2(transform_n3(cam_T_world_44, points_n3), K_33)
    assert np.all(z_n > 0)
    return uv_n2


def _with_outliers(uv_n2: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    outlier_n = rng.random(len(uv_n2)) < share
    corrupted_n2 = uv_n2.copy()
    corrupted_n2[outlier_n] += rng.choice([-1.0, 1.0], (outlier_n.sum(), 2)) * rng.uniform(15, 60, (outlier_n.sum(), 2))
    return corrupted_n2, outlier_n


def _rotation_error_deg(a_33: np.ndarray, b_33: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(a_33.T @ b_33) - 1) / 2, -1, 1))))


def test_triangulation_recovers_points_exactly():
    points_n3 = _scene(0, 200)
    a_44, b_44 = _cam_T_world_44([0, 0, 0]), _cam_T_world_44([0.4, 0.1, 0.05])
    found_n3 = triangulate_n3(K_33, a_44, b_44, _pixels_n2(a_44, points_n3), _pixels_n2(b_44, points_n3))
    np.testing.assert_allclose(found_n3, points_n3, atol=1e-8)


def test_checked_triangulation_rejects_bad_matches_and_small_angles():
    points_n3 = _scene(1, 300)
    a_44, b_44 = _cam_T_world_44([0, 0, 0]), _cam_T_world_44([0.4, 0.0, 0.0])
    uv_b_n2, outlier_n = _with_outliers(_pixels_n2(b_44, points_n3), 0.2, 1)
    _, good_n, angles_n = checked_triangulation(K_33, a_44, b_44, _pixels_n2(a_44, points_n3), uv_b_n2, 1.0, 0.0)
    np.testing.assert_array_equal(good_n, ~outlier_n)
    _, good_n, _ = checked_triangulation(K_33, a_44, b_44, _pixels_n2(a_44, points_n3), uv_b_n2, 1.0, 6.0)
    np.testing.assert_array_equal(good_n, ~outlier_n & (angles_n >= 6.0))


def test_two_view_initialisation_with_outliers():
    points_n3 = _scene(2, 400)
    a_44, b_44 = _cam_T_world_44([0, 0, 0]), _cam_T_world_44([0.5, 0.1, 0.1])
    uv_b_n2, outlier_n = _with_outliers(_pixels_n2(b_44, points_n3), 0.2, 2)
    result = initialise_two_view(_pixels_n2(a_44, points_n3), uv_b_n2, K_33, min_inliers=100)
    assert result is not None
    true_b_T_a_44 = b_44 @ invert_pose_44(a_44)
    true_t_3 = true_b_T_a_44[:3, 3] / np.linalg.norm(true_b_T_a_44[:3, 3])
    assert _rotation_error_deg(result.b_T_a_44[:3, :3], true_b_T_a_44[:3, :3]) < 1e-4
    np.testing.assert_allclose(result.b_T_a_44[:3, 3], true_t_3, atol=1e-5)
    assert not np.any(result.inlier_n & outlier_n)
    assert result.inlier_n.sum() > 0.95 * (~outlier_n).sum()
    # Structure in camera a's frame, scaled by the unit baseline.
    baseline = np.linalg.norm(true_b_T_a_44[:3, 3])
    expected_n3 = transform_n3(a_44, points_n3) / baseline
    np.testing.assert_allclose(result.points_n3[result.inlier_n], expected_n3[result.inlier_n], rtol=1e-4, atol=1e-4)
    assert result.median_angle_deg == pytest.approx(7.0, abs=3.0)


def test_two_view_initialisation_refuses_a_pure_rotation():
    points_n3 = _scene(3, 300)
    a_44 = _cam_T_world_44([0, 0, 0])
    b_44 = invert_pose_44(look_at_world_T_cam_44(np.zeros(3), np.array([0.3, 0.1, 4.5]), UP_3))
    assert initialise_two_view(_pixels_n2(a_44, points_n3), _pixels_n2(b_44, points_n3), K_33) is None


def test_pnp_with_outliers_recovers_the_pose():
    points_n3 = _scene(4, 300)
    true_44 = _cam_T_world_44([0.3, -0.2, 0.4])
    uv_n2, outlier_n = _with_outliers(_pixels_n2(true_44, points_n3), 0.2, 4)
    result = solve_pnp(points_n3, uv_n2, K_33, threshold_px=2.0)
    assert result is not None
    np.testing.assert_allclose(result.cam_T_world_44, true_44, atol=1e-8)
    np.testing.assert_array_equal(result.inlier_n, ~outlier_n)
    guessed = solve_pnp(points_n3, uv_n2, K_33, cam_T_world_guess_44=_cam_T_world_44([0.32, -0.2, 0.38]))
    np.testing.assert_allclose(guessed.cam_T_world_44, true_44, atol=1e-8)
    assert solve_pnp(points_n3[:10], uv_n2[:10], K_33, min_inliers=15) is None


def _window(seed: int, num_cams: int, num_points: int, share_outliers: float, visibility: float = 1.0):
    rng = np.random.default_rng(seed)
    points_n3 = _scene(seed, num_points)
    cam_T_world_k44 = np.stack([_cam_T_world_44([0.12 * k, 0.03 * k, 0.02 * k]) for k in range(num_cams)])
    cam_index, point_index, uv = [], [], []
    for k in range(num_cams):
        seen_n = rng.random(num_points) < visibility
        cam_index.append(np.full(seen_n.sum(), k))
        point_index.append(np.nonzero(seen_n)[0])
        uv.append(_pixels_n2(cam_T_world_k44[k], points_n3[seen_n]))
    uv_m2, outlier_m = _with_outliers(np.concatenate(uv), share_outliers, seed)
    return cam_T_world_k44, points_n3, np.concatenate(cam_index), np.concatenate(point_index), uv_m2, outlier_m


def test_bundle_adjustment_with_outliers_recovers_poses_and_points():
    cam_T_world_k44, points_n3, cam_index_m, point_index_m, uv_m2, outlier_m = _window(5, 6, 400, 0.2)
    rng = np.random.default_rng(5)
    start_k44 = cam_T_world_k44.copy()
    start_k44[2:, :3, 3] += rng.normal(0, 0.02, (4, 3))
    start_n3 = points_n3 + rng.normal(0, 0.03, points_n3.shape)
    fixed_k = np.arange(6) < 2
    result = bundle_adjust(
        K_33, start_k44, start_n3, cam_index_m, point_index_m, uv_m2, fixed_k, BundleConfig(iterations=30, rounds=2)
    )
    np.testing.assert_array_equal(result.cam_T_world_k44[:2], cam_T_world_k44[:2])
    np.testing.assert_allclose(result.cam_T_world_k44, cam_T_world_k44, atol=1e-9)
    # Points seen in at least 4 of the 6 views without corruption are exact (the others
    # may be dragged off by their corrupted pixels).
    recovered_n = np.linalg.norm(result.points_n3 - points_n3, axis=1) < 1e-8
    clean_views_n = np.bincount(point_index_m[~outlier_m], minlength=len(points_n3))
    assert np.all(recovered_n[clean_views_n >= 4]) and recovered_n.mean() > 0.95
    assert np.all(result.errors_m[~outlier_m & recovered_n[point_index_m]] < 1e-6)
    assert np.all(result.errors_m[outlier_m] > BundleConfig().outlier_px)
    assert result.final_cost < 1e-12 * result.initial_cost


@pytest.mark.parametrize("dense_max_entries", [0, bundle_step.DENSE_REDUCTION_MAX_ENTRIES], ids=["sparse", "dense"])
def test_schur_step_equals_the_full_damped_gauss_newton_step(monkeypatch, dense_max_entries):
    """The reduced camera system (sparse or dense) plus back-substitution solves the full
    normal equations (cameras and points together) exactly, with partial visibility, a
    camera seeing a point twice, and fixed cameras in between free ones."""
    monkeypatch.setattr(bundle_step, "DENSE_REDUCTION_MAX_ENTRIES", dense_max_entries)
    cam_T_world_k44, points_n3, cam_index_m, point_index_m, uv_m2, _ = _window(8, 5, 30, 0.1, visibility=0.7)
    cam_index_m, point_index_m = np.append(cam_index_m, cam_index_m[0]), np.append(point_index_m, point_index_m[0])
    uv_m2 = np.append(uv_m2, uv_m2[:1] + 0.5, axis=0)
    rng = np.random.default_rng(8)
    start_k44 = cam_T_world_k44.copy()
    start_k44[:, :3, 3] += rng.normal(0, 0.02, (5, 3))
    start_n3 = points_n3 + rng.normal(0, 0.03, points_n3.shape)
    free_k = np.array([False, True, True, False, True])
    problem = BundleProblem(K_33, cam_index_m, point_index_m, uv_m2, BundleConfig())
    lin = problem.linearise(pp.mat2SE3(torch.from_numpy(start_k44), check=False), torch.from_numpy(start_n3))
    damping = 0.1
    step_c_k6, step_p_n3 = solve_step(lin, problem, 5, len(points_n3), torch.from_numpy(free_k), True, damping)
    # The full system over the free cameras' twists and all points, from the stacked Jacobian.
    free_f = np.flatnonzero(free_k)
    num_vars = 6 * len(free_f) + 3 * len(points_n3)
    J = np.zeros((2 * len(cam_index_m), num_vars))
    for m, (k, n) in enumerate(zip(cam_index_m, point_index_m)):
        if free_k[k]:
            J[2 * m : 2 * m + 2, 6 * np.searchsorted(free_f, k) :][:, :6] = lin.J_pose_mr6[m].numpy()
        J[2 * m : 2 * m + 2, 6 * len(free_f) + 3 * n :][:, :3] = lin.J_point_mr3[m].numpy()
    w = lin.weight_mr.numpy().reshape(-1)
    H = J.T @ (w[:, None] * J)
    H += np.diag(damping * np.diag(H) + 1e-9)
    full = np.linalg.solve(H, -J.T @ (w * lin.residual_mr.numpy().reshape(-1)))
    np.testing.assert_allclose(step_c_k6.numpy()[free_f].reshape(-1), full[: 6 * len(free_f)], rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(step_p_n3.numpy().reshape(-1), full[6 * len(free_f) :], rtol=1e-7, atol=1e-10)
    assert np.all(step_c_k6.numpy()[~free_k] == 0)


def test_pose_prior_fixes_the_gauge_with_every_camera_free():
    """No camera fixed: a prior at the true poses makes the truth the unique minimum (zero
    reprojection error and zero prior cost), and a tight prior on wrong poses keeps them."""
    cam_T_world_k44, points_n3, cam_index_m, point_index_m, uv_m2, _ = _window(9, 5, 200, 0.0)
    rng = np.random.default_rng(9)
    start_k44 = cam_T_world_k44.copy()
    start_k44[:, :3, 3] += rng.normal(0, 0.02, (5, 3))
    start_n3 = points_n3 + rng.normal(0, 0.03, points_n3.shape)
    free_k = np.zeros(5, dtype=bool)
    config = BundleConfig(iterations=30, rounds=1)
    truth = PosePrior(cam_T_world_k44, sigma_translation=0.05, sigma_rotation_rad=0.02)
    result = bundle_adjust(K_33, start_k44, start_n3, cam_index_m, point_index_m, uv_m2, free_k, config, truth)
    np.testing.assert_allclose(result.cam_T_world_k44, cam_T_world_k44, atol=1e-8)
    np.testing.assert_allclose(result.points_n3, points_n3, atol=1e-7)
    tight = PosePrior(start_k44, sigma_translation=1e-7, sigma_rotation_rad=1e-7)
    result = bundle_adjust(K_33, start_k44, start_n3, cam_index_m, point_index_m, uv_m2, free_k, config, tight)
    np.testing.assert_allclose(result.cam_T_world_k44, start_k44, atol=1e-6)


def test_measured_depth_fixes_the_monocular_scale():
    """One camera fixed leaves the scale free; depths measured for a third of the
    observations (10 % of them twice too far) pin it, and the truth is recovered."""
    cam_T_world_k44, points_n3, cam_index_m, point_index_m, uv_m2, _ = _window(10, 5, 200, 0.0)
    rng = np.random.default_rng(10)
    depth_m = np.array([transform_n3(cam_T_world_k44[k], points_n3[n][None])[0, 2] for k, n in zip(cam_index_m, point_index_m)])
    depth_m[rng.random(len(depth_m)) < 2 / 3] = np.nan
    wrong_m = rng.random(len(depth_m)) < 0.1
    depth_m[wrong_m] *= 2.0
    scale = 1.3
    start_k44 = cam_T_world_k44.copy()
    start_k44[1:, :3, 3] = scale * start_k44[1:, :3, 3] + rng.normal(0, 0.01, (4, 3))
    start_n3 = scale * points_n3 + rng.normal(0, 0.03, points_n3.shape)
    result = bundle_adjust(
        K_33, start_k44, start_n3, cam_index_m, point_index_m, uv_m2, np.arange(5) < 1,
        BundleConfig(iterations=40, rounds=2), depth=ObservedDepth(depth_m, sigma_relative=0.01),
    )
    np.testing.assert_allclose(result.cam_T_world_k44, cam_T_world_k44, atol=1e-7)
    # A point dragged away by a wrong depth in the first round may lose all its observations.
    recovered_n = np.linalg.norm(result.points_n3 - points_n3, axis=1) < 1e-6
    misled_n = np.bincount(point_index_m[wrong_m & np.isfinite(depth_m)], minlength=len(points_n3)) > 0
    assert np.all(recovered_n[~misled_n]) and recovered_n.mean() > 0.9


def test_bundle_adjustment_rejects_inconsistent_input():
    cam_T_world_k44, points_n3, cam_index_m, point_index_m, uv_m2, _ = _window(6, 3, 50, 0.0)
    with pytest.raises(ValueError, match="out of range"):
        bundle_adjust(K_33, cam_T_world_k44, points_n3, cam_index_m + 1, point_index_m, uv_m2, np.ones(3, bool))
    with pytest.raises(ValueError, match="fixed_k"):
        bundle_adjust(K_33, cam_T_world_k44, points_n3, cam_index_m, point_index_m, uv_m2, np.ones(2, bool))


def test_pose_refinement_with_outliers():
    points_n3 = _scene(7, 300)
    true_44 = _cam_T_world_44([0.2, 0.1, -0.1])
    uv_n2, outlier_n = _with_outliers(_pixels_n2(true_44, points_n3), 0.2, 7)
    start_44 = true_44.copy()
    start_44[:3, 3] += [0.03, -0.02, 0.04]
    refined_44, errors_n = refine_pose(K_33, start_44, points_n3, uv_n2, BundleConfig(iterations=20, rounds=3))
    np.testing.assert_allclose(refined_44, true_44, atol=1e-8)
    assert np.all(errors_n[~outlier_n] < 1e-6) and np.all(errors_n[outlier_n] > 3.0)
