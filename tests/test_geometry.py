"""Closed-form checks of the pure geometry in mvs.geometry and mvs.types.Camera."""

import numpy as np
import pytest

from mvs import geometry
from mvs.types import Camera

K_33 = np.array([[500.0, 0.0, 319.5], [0.0, 480.0, 239.5], [0.0, 0.0, 1.0]])


def random_rotation_33(rng: np.random.Generator) -> np.ndarray:
    q_xyzw = rng.normal(size=4)
    return geometry.quaternion_to_matrix_33(q_xyzw)


def test_backproject_then_project_round_trips():
    rng = np.random.default_rng(0)
    uv_n2 = rng.uniform([0, 0], [640, 480], size=(100, 2))
    depth_n = rng.uniform(0.3, 8.0, size=100)
    points_n3 = geometry.backproject_n3(uv_n2, depth_n, K_33)
    uv_back_n2, z_n = geometry.project_n2(points_n3, K_33)
    np.testing.assert_allclose(uv_back_n2, uv_n2, atol=1e-9)
    np.testing.assert_allclose(z_n, depth_n, atol=1e-12)


def test_identity_intrinsics_project_to_normalised_coordinates():
    points_n3 = np.array([[1.0, 2.0, 4.0], [-3.0, 0.5, 2.0]])
    uv_n2, _ = geometry.project_n2(points_n3, np.eye(3))
    np.testing.assert_allclose(uv_n2, [[0.25, 0.5], [-1.5, 0.25]])


def test_points_behind_the_camera_project_to_infinity():
    uv_n2, z_n = geometry.project_n2(np.array([[0.0, 0.0, -1.0], [0.1, 0.0, 0.0]]), K_33)
    assert np.all(np.isinf(uv_n2))
    np.testing.assert_allclose(z_n, [-1.0, 0.0])


def test_plane_at_known_depth_backprojects_to_that_plane():
    depth_hw = np.full((48, 64), 2.5)
    points_hw3 = geometry.backproject_depth_hw3(depth_hw, K_33)
    np.testing.assert_allclose(points_hw3[..., 2], 2.5)
    # The principal point lies on the optical axis.
    np.testing.assert_allclose(geometry.backproject_n3(np.array([[319.5, 239.5]]), [2.0], K_33), [[0, 0, 2]])


def test_rigid_transform_and_inverse_compose_to_identity():
    rng = np.random.default_rng(1)
    a_T_b_44 = geometry.make_pose_44(random_rotation_33(rng), rng.normal(size=3))
    b_T_a_44 = geometry.invert_pose_44(a_T_b_44)
    np.testing.assert_allclose(a_T_b_44 @ b_T_a_44, np.eye(4), atol=1e-12)
    points_n3 = rng.normal(size=(10, 3))
    round_trip_n3 = geometry.transform_n3(b_T_a_44, geometry.transform_n3(a_T_b_44, points_n3))
    np.testing.assert_allclose(round_trip_n3, points_n3, atol=1e-12)


def test_quaternion_matrix_round_trip_and_known_rotation():
    rng = np.random.default_rng(2)
    for _ in range(50):
        R_33 = random_rotation_33(rng)
        q_xyzw = geometry.matrix_to_quaternion_xyzw(R_33)
        np.testing.assert_allclose(geometry.quaternion_to_matrix_33(q_xyzw), R_33, atol=1e-12)
        assert q_xyzw[3] >= 0
    # 90 degrees about z maps x to y.
    half = np.sqrt(0.5)
    R_33 = geometry.quaternion_to_matrix_33([0.0, 0.0, half, half])
    np.testing.assert_allclose(R_33 @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    assert geometry.rotation_angle(R_33) == pytest.approx(np.pi / 2)


def test_pose_validity():
    assert geometry.is_valid_pose_44(np.eye(4))
    invalid_44 = np.eye(4)
    invalid_44[0, 0] = -np.inf
    assert not geometry.is_valid_pose_44(invalid_44)
    assert not geometry.is_valid_pose_44(np.diag([2.0, 1.0, 1.0, 1.0]))


def test_nearest_rigid_pose_removes_a_small_non_orthonormality():
    rotation_33 = geometry.quaternion_to_matrix_33(np.array([0.1, -0.3, 0.2, 0.9]))
    rigid_44 = geometry.make_pose_44(rotation_33, np.array([1.0, -2.0, 0.5]))
    drifted_44 = rigid_44.copy()
    drifted_44[:3, :3] = rotation_33 @ np.diag([1.0004, 0.9997, 1.0]) + 2e-4 * np.eye(3)[[1, 2, 0]]
    assert not np.allclose(drifted_44[:3, :3] @ drifted_44[:3, :3].T, np.eye(3), atol=1e-4)
    nearest_44 = geometry.nearest_rigid_pose_44(drifted_44)
    np.testing.assert_allclose(nearest_44[:3, :3] @ nearest_44[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(nearest_44[:3, :3]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(nearest_44, rigid_44, atol=5e-4)
    np.testing.assert_allclose(geometry.nearest_rigid_pose_44(rigid_44), rigid_44, atol=1e-12)


def test_look_at_points_the_optical_axis_at_the_target():
    eye_3, target_3 = np.array([1.0, 2.0, 1.5]), np.array([3.0, -1.0, 1.0])
    world_T_cam_44 = geometry.look_at_world_T_cam_44(eye_3, target_3, np.array([0.0, 0.0, 1.0]))
    cam_T_world_44 = geometry.invert_pose_44(world_T_cam_44)
    target_cam_3 = geometry.transform_n3(cam_T_world_44, target_3[None])[0]
    np.testing.assert_allclose(target_cam_3[:2], 0.0, atol=1e-12)
    assert target_cam_3[2] == pytest.approx(np.linalg.norm(target_3 - eye_3))
    # Image y points down, against the world's up direction.
    assert world_T_cam_44[:3, 1] @ [0.0, 0.0, 1.0] < 0
    assert geometry.is_valid_pose_44(world_T_cam_44)


def test_camera_scaling_keeps_the_image_edges():
    camera = Camera(np.array([[1000.0, 0, 647.5], [0, 1000.0, 483.5], [0, 0, 1]]), 1296, 968)
    half = camera.scaled(648, 484)
    assert half.fx == pytest.approx(500.0)
    assert half.cx == pytest.approx(323.5)
    assert half.cy == pytest.approx(241.5)
    with pytest.raises(ValueError, match="3x3"):
        Camera(np.eye(4), 10, 10)


def test_register_depth_into_a_wider_camera_keeps_the_principal_ray():
    K_depth_33 = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])
    K_colour_33 = np.array([[525.0, 0, 320.0], [0, 525.0, 240.0], [0, 0, 1]])
    rng = np.random.default_rng(3)
    depth_hw = rng.uniform(0.5, 4.0, size=(480, 640)).astype(np.float32)
    registered_hw = geometry.register_depth_hw(depth_hw, K_depth_33, K_colour_33, 640, 480)
    assert registered_hw[240, 320] == depth_hw[240, 320]
    # A colour pixel 105 px right of the centre sees the depth pixel 105 * 585 / 525 = 117 px right.
    assert registered_hw[240, 425] == depth_hw[240, 437]
    # The wider colour camera sees beyond the depth image near its border: no depth there.
    assert registered_hw[240, 0] == 0
