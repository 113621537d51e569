"""Two-view geometry: triangulation and monocular initialisation from an essential matrix.

Pixels (u, v) at integer pixel centres; `cam_T_world_44` maps world points into a camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mvs.geometry import invert_pose_44, make_pose_44, project_n2, transform_n3


def triangulate_n3(
    K_33: np.ndarray,
    a_cam_T_world_44: np.ndarray,
    b_cam_T_world_44: np.ndarray,
    uv_a_n2: np.ndarray,
    uv_b_n2: np.ndarray,
) -> np.ndarray:
    """World points (N, 3) seen at `uv_a_n2` in camera a and `uv_b_n2` in camera b.

    The poses are (4, 4), shared by all points, or (N, 4, 4), one pair per point. Linear
    DLT on normalised image coordinates, solved for all points at once by a batched SVD.
    Points at infinity (homogeneous w = 0) come out as inf.
    """
    K_inv_33 = np.linalg.inv(K_33)
    rows = []
    for cam_T_world_44, uv_n2 in ((a_cam_T_world_44, uv_a_n2), (b_cam_T_world_44, uv_b_n2)):
        xy_n2 = (np.concatenate([uv_n2, np.ones((len(uv_n2), 1))], axis=1) @ K_inv_33.T)[:, :2]
        P_n34 = np.broadcast_to(np.asarray(cam_T_world_44)[..., :3, :], (len(uv_n2), 3, 4))
        rows.append(xy_n2[:, 0:1] * P_n34[:, 2] - P_n34[:, 0])
        rows.append(xy_n2[:, 1:2] * P_n34[:, 2] - P_n34[:, 1])
    A_n44 = np.stack(rows, axis=1)
    _, _, Vt_n44 = np.linalg.svd(A_n44)
    X_n4 = Vt_n44[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        points_n3 = X_n4[:, :3] / X_n4[:, 3:4]
    points_n3[~np.isfinite(points_n3).all(axis=1)] = np.inf
    return points_n3


def reprojection_errors_n(
    K_33: np.ndarray, cam_T_world_44: np.ndarray, points_n3: np.ndarray, uv_n2: np.ndarray
) -> np.ndarray:
    """Pixel distances (N,) between projected world points and observed pixels; inf behind."""
    uv_proj_n2, z_n = project_n2(transform_n3(cam_T_world_44, points_n3), K_33)
    errors_n = np.linalg.norm(uv_proj_n2 - uv_n2, axis=1)
    errors_n[~(z_n > 0) | ~np.isfinite(errors_n)] = np.inf
    return errors_n


def triangulation_angles_deg_n(points_n3: np.ndarray, centre_a_3: np.ndarray, centre_b_3: np.ndarray) -> np.ndarray:
    """Angles (N,) in degrees between the rays from two camera centres to each point."""
    ray_a_n3 = points_n3 - centre_a_3
    ray_b_n3 = points_n3 - centre_b_3
    cos_n = np.sum(ray_a_n3 * ray_b_n3, axis=1) / (
        np.linalg.norm(ray_a_n3, axis=1) * np.linalg.norm(ray_b_n3, axis=1) + 1e-300
    )
    return np.degrees(np.arccos(np.clip(cos_n, -1.0, 1.0)))


def checked_triangulation(
    K_33: np.ndarray,
    a_cam_T_world_44: np.ndarray,
    b_cam_T_world_44: np.ndarray,
    uv_a_n2: np.ndarray,
    uv_b_n2: np.ndarray,
    max_error_px: float,
    min_angle_deg: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate and keep points in front of both cameras, reprojecting within
    `max_error_px` in both, with a triangulation angle of at least `min_angle_deg`.

    Returns world points (N, 3), a boolean mask (N,) of the points that pass, and the
    triangulation angles (N,) in degrees.
    """
    points_n3 = triangulate_n3(K_33, a_cam_T_world_44, b_cam_T_world_44, uv_a_n2, uv_b_n2)
    finite_n = np.isfinite(points_n3).all(axis=1)
    safe_n3 = np.where(finite_n[:, None], points_n3, 0.0)
    error_a_n = reprojection_errors_n(K_33, a_cam_T_world_44, safe_n3, uv_a_n2)
    error_b_n = reprojection_errors_n(K_33, b_cam_T_world_44, safe_n3, uv_b_n2)
    angles_n = triangulation_angles_deg_n(
        safe_n3, invert_pose_44(a_cam_T_world_44)[:3, 3], invert_pose_44(b_cam_T_world_44)[:3, 3]
    )
    good_n = finite_n & (error_a_n < max_error_px) & (error_b_n < max_error_px) & (angles_n >= min_angle_deg)
    return points_n3, good_n, angles_n


def parallax_angles_deg_n(K_33: np.ndarray, b_R_a_33: np.ndarray, uv_a_n2: np.ndarray, uv_b_n2: np.ndarray) -> np.ndarray:
    """Angles (N,) in degrees between the rays of camera b and camera a's rays rotated into b.

    For a correct match and relative rotation this is the triangulation angle of the
    point; it is 0 for every point when the camera only rotated, whatever the translation
    estimate says.
    """
    K_inv_33 = np.linalg.inv(K_33)
    ray_a_n3 = np.concatenate([uv_a_n2, np.ones((len(uv_a_n2), 1))], axis=1) @ (b_R_a_33 @ K_inv_33).T
    ray_b_n3 = np.concatenate([uv_b_n2, np.ones((len(uv_b_n2), 1))], axis=1) @ K_inv_33.T
    cos_n = np.sum(ray_a_n3 * ray_b_n3, axis=1) / (np.linalg.norm(ray_a_n3, axis=1) * np.linalg.norm(ray_b_n3, axis=1))
    return np.degrees(np.arccos(np.clip(cos_n, -1.0, 1.0)))


@dataclass
class TwoViewResult:
    """A monocular initialisation: camera b relative to camera a and the points both see.

    b_T_a_44 maps points from camera a to camera b; its translation has unit length
    (monocular scale is arbitrary). points_n3 are in camera a's frame, one row per input
    correspondence (inf where `inlier_n` is False). median_angle_deg is the median
    rotation-compensated parallax of the RANSAC inliers.
    """

    b_T_a_44: np.ndarray
    points_n3: np.ndarray
    inlier_n: np.ndarray
    median_angle_deg: float


def initialise_two_view(
    uv_a_n2: np.ndarray,
    uv_b_n2: np.ndarray,
    K_33: np.ndarray,
    ransac_threshold_px: float = 1.0,
    min_inliers: int = 50,
    min_median_angle_deg: float = 1.5,
    max_error_px: float = 2.0,
    min_point_angle_deg: float = 0.0,
    max_homography_share: float = 0.97,
) -> TwoViewResult | None:
    """Relative pose and structure from N >= 5 pixel correspondences between two images.

    Essential matrix by RANSAC (threshold in pixels), pose by the cheirality test, then
    triangulation keeping points in front of both cameras that reproject within
    `max_error_px` and are seen under at least `min_point_angle_deg`. Returns None when
    the views cannot initialise a map: a median rotation-compensated parallax of the
    RANSAC inliers below `min_median_angle_deg` (too little translation for reliable depth,
    including a pure rotation), a homography explaining at least `max_homography_share` as
    many matches as the essential matrix (a rotation or a plane: no reliable depth), or fewer
    than `min_inliers` good points.
    """
    uv_a_n2 = np.asarray(uv_a_n2, dtype=np.float64)
    uv_b_n2 = np.asarray(uv_b_n2, dtype=np.float64)
    if uv_a_n2.shape != uv_b_n2.shape or uv_a_n2.ndim != 2 or uv_a_n2.shape[1] != 2:
        raise ValueError(
            f"initialise_two_view: expected two (N, 2) pixel arrays of equal shape, got "
            f"{uv_a_n2.shape} and {uv_b_n2.shape}"
        )
    if len(uv_a_n2) < max(5, min_inliers):
        return None
    E_33, ransac_mask = cv2.findEssentialMat(
        uv_a_n2, uv_b_n2, K_33, method=cv2.RANSAC, prob=0.999, threshold=ransac_threshold_px
    )
    if E_33 is None or E_33.shape != (3, 3):
        return None
    ransac_inlier_n = ransac_mask[:, 0] > 0
    _, homography_mask = cv2.findHomography(uv_a_n2, uv_b_n2, cv2.RANSAC, ransac_threshold_px)
    if homography_mask is not None and homography_mask.sum() >= max_homography_share * ransac_inlier_n.sum():
        return None
    _, R_33, t_31, pose_mask = cv2.recoverPose(E_33, uv_a_n2, uv_b_n2, K_33, mask=ransac_mask.copy())
    b_T_a_44 = make_pose_44(R_33, t_31[:, 0] / np.linalg.norm(t_31))
    median_angle_deg = float(np.median(parallax_angles_deg_n(K_33, R_33, uv_a_n2, uv_b_n2)[ransac_inlier_n]))
    if median_angle_deg < min_median_angle_deg:
        return None
    points_n3, good_n, angles_n = checked_triangulation(
        K_33, np.eye(4), b_T_a_44, uv_a_n2, uv_b_n2, max_error_px, min_point_angle_deg
    )
    inlier_n = good_n & (pose_mask[:, 0] > 0)
    if inlier_n.sum() < min_inliers:
        return None
    points_n3[~inlier_n] = np.inf
    return TwoViewResult(b_T_a_44, points_n3, inlier_n, median_angle_deg)
