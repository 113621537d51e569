"""Pure geometry on NumPy arrays: projection, rigid transforms, rotations.

Conventions: pixels (u, v) with u to the right and v down, pixel centres at integers;
camera frame x right, y down, z forward, metres; `a_T_b_44` maps points in frame b to a.
"""

from __future__ import annotations

import numpy as np


def pixel_grid_hw2(height: int, width: int) -> np.ndarray:
    """(H, W, 2) float64 pixel coordinates (u, v) of every pixel centre."""
    v_hw, u_hw = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([u_hw, v_hw], axis=-1)


def backproject_depth_hw3(depth_hw: np.ndarray, K_33: np.ndarray) -> np.ndarray:
    """(H, W, 3) camera-frame points of every pixel of a depth map (metres).

    Pixels with depth 0 back-project to the camera centre.
    """
    height, width = depth_hw.shape
    uv_hw2 = pixel_grid_hw2(height, width)
    return backproject_n3(uv_hw2.reshape(-1, 2), depth_hw.reshape(-1), K_33).reshape(
        height, width, 3
    )


def backproject_n3(uv_n2: np.ndarray, depth_n: np.ndarray, K_33: np.ndarray) -> np.ndarray:
    """(N, 3) camera-frame points at pixels `uv_n2` with z-depths `depth_n` (metres)."""
    rays_n3 = np.concatenate([uv_n2, np.ones((len(uv_n2), 1))], axis=1) @ np.linalg.inv(K_33).T
    return rays_n3 * np.asarray(depth_n, dtype=np.float64)[:, None]


def project_n2(points_n3: np.ndarray, K_33: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 2) and z-depths (N,) of camera-frame points; z <= 0 gives inf pixels."""
    z_n = points_n3[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pix_n3 = points_n3 @ K_33.T
        uv_n2 = pix_n3[:, :2] / z_n[:, None]
    uv_n2[z_n <= 0] = np.inf
    return uv_n2, z_n


def transform_n3(a_T_b_44: np.ndarray, points_n3: np.ndarray) -> np.ndarray:
    """Points (N, 3) in frame b mapped to frame a."""
    return points_n3 @ a_T_b_44[:3, :3].T + a_T_b_44[:3, 3]


def invert_pose_44(a_T_b_44: np.ndarray) -> np.ndarray:
    """b_T_a from a_T_b, using the rigid structure (no general matrix inverse)."""
    R_33 = a_T_b_44[:3, :3]
    b_T_a_44 = np.eye(4)
    b_T_a_44[:3, :3] = R_33.T
    b_T_a_44[:3, 3] = -R_33.T @ a_T_b_44[:3, 3]
    return b_T_a_44


def make_pose_44(R_33: np.ndarray, t_3: np.ndarray) -> np.ndarray:
    """A 4x4 rigid transform from a rotation and a translation."""
    a_T_b_44 = np.eye(4)
    a_T_b_44[:3, :3] = R_33
    a_T_b_44[:3, 3] = t_3
    return a_T_b_44


def is_valid_pose_44(a_T_b_44: np.ndarray, tolerance: float = 1e-3) -> bool:
    """True for a finite 4x4 matrix whose rotation block is orthonormal with det +1."""
    if a_T_b_44.shape != (4, 4) or not np.all(np.isfinite(a_T_b_44)):
        return False
    R_33 = a_T_b_44[:3, :3]
    orthonormal = np.allclose(R_33 @ R_33.T, np.eye(3), atol=tolerance)
    return bool(orthonormal and abs(np.linalg.det(R_33) - 1.0) < tolerance)


def nearest_rigid_pose_44(a_T_b_44: np.ndarray) -> np.ndarray:
    """The rigid transform nearest to a near-rigid 4x4 one (rotation block with det > 0): its
    rotation block replaced by the closest rotation in the Frobenius norm (U V^T of its SVD),
    the translation kept.

    Datasets store rotations rounded or accumulated to about 1e-4 of orthonormality
    (7-Scenes: 4e-4); poses composed onto them (refinement, alignment) inherit and grow the
    error until a reader's rigidity check refuses them.
    """
    U_33, _, Vt_33 = np.linalg.svd(a_T_b_44[:3, :3])
    return make_pose_44(U_33 @ Vt_33, a_T_b_44[:3, 3])


def quaternion_to_matrix_33(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrix of a quaternion (x, y, z, w) (TUM order); normalised first."""
    x, y, z, w = np.asarray(q_xyzw, dtype=np.float64) / np.linalg.norm(q_xyzw)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion_xyzw(R_33: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) with w >= 0 of a rotation matrix (Shepperd's method)."""
    m = R_33
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    q_xyzw = np.array(q) / np.linalg.norm(q)
    return q_xyzw if q_xyzw[3] >= 0 else -q_xyzw


def rotation_angle(R_33: np.ndarray) -> float:
    """Angle (radians) of a rotation matrix."""
    return float(np.arccos(np.clip((np.trace(R_33) - 1.0) / 2.0, -1.0, 1.0)))


def look_at_world_T_cam_44(eye_3: np.ndarray, target_3: np.ndarray, up_3: np.ndarray) -> np.ndarray:
    """Camera-to-world pose of a camera at `eye_3` looking at `target_3` (z forward, y down).

    `up_3` is the world's up direction; the image's y axis points against it.
    """
    z_3 = np.asarray(target_3, float) - np.asarray(eye_3, float)
    z_3 /= np.linalg.norm(z_3)
    x_3 = np.cross(z_3, np.asarray(up_3, float))
    if np.linalg.norm(x_3) < 1e-9:
        raise ValueError(f"look-at direction {z_3} is parallel to the up vector {up_3}")
    x_3 /= np.linalg.norm(x_3)
    y_3 = np.cross(z_3, x_3)
    return make_pose_44(np.stack([x_3, y_3, z_3], axis=1), eye_3)


def register_depth_hw(
    depth_hw: np.ndarray, K_depth_33: np.ndarray, camera_K_33: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Resample a depth map taken with `K_depth_33` into a co-located camera `camera_K_33`.

    The two cameras share their centre and orientation (ScanNet and 7-Scenes colour and depth
    differ mainly in intrinsics and resolution), so each target pixel looks up the depth
    pixel on the same ray: nearest neighbour, so no depth is blended across edges.
    Returns (height, width) float32 metres, 0 where the depth camera saw nothing.
    """
    uv_n2 = pixel_grid_hw2(height, width).reshape(-1, 2)
    rays_n3 = np.concatenate([uv_n2, np.ones((len(uv_n2), 1))], axis=1)
    src_n3 = rays_n3 @ (K_depth_33 @ np.linalg.inv(camera_K_33)).T
    src_uv_n2 = np.rint(src_n3[:, :2] / src_n3[:, 2:3]).astype(np.int64)
    src_h, src_w = depth_hw.shape
    inside_n = (
        (src_uv_n2[:, 0] >= 0) & (src_uv_n2[:, 0] < src_w) & (src_uv_n2[:, 1] >= 0) & (src_uv_n2[:, 1] < src_h)
    )
    out_n = np.zeros(len(uv_n2), dtype=np.float32)
    out_n[inside_n] = depth_hw[src_uv_n2[inside_n, 1], src_uv_n2[inside_n, 0]]
    return out_n.reshape(height, width)
