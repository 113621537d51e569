"""Camera pose from 2D-3D correspondences: PnP with RANSAC, then Levenberg-Marquardt refinement."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mvs.geometry import make_pose_44
from slam.twoview import reprojection_errors_n


@dataclass
class PnPResult:
    """cam_T_world_44 maps world points into the camera; inlier_n (N,) marks the
    correspondences reprojecting within the RANSAC threshold of the final pose."""

    cam_T_world_44: np.ndarray
    inlier_n: np.ndarray


def solve_pnp(
    points_n3: np.ndarray,
    uv_n2: np.ndarray,
    K_33: np.ndarray,
    threshold_px: float = 2.0,
    min_inliers: int = 15,
    iterations: int = 100,
    cam_T_world_guess_44: np.ndarray | None = None,
) -> PnPResult | None:
    """Pose of a camera seeing world points `points_n3` (N, 3) at pixels `uv_n2` (N, 2).

    RANSAC over minimal sets (SQPnP, or the iterative solver started from
    `cam_T_world_guess_44` when given), then LM refinement on the inliers. Returns None
    when fewer than `min_inliers` correspondences agree with any pose.
    """
    points_n3 = np.ascontiguousarray(points_n3, dtype=np.float64)
    uv_n2 = np.ascontiguousarray(uv_n2, dtype=np.float64)
    if points_n3.ndim != 2 or points_n3.shape[1] != 3 or uv_n2.shape != (len(points_n3), 2):
        raise ValueError(
            f"solve_pnp: expected (N, 3) points and (N, 2) pixels, got {points_n3.shape} and {uv_n2.shape}"
        )
    if len(points_n3) < max(min_inliers, 6):
        return None
    use_guess = cam_T_world_guess_44 is not None
    rvec_31 = np.zeros((3, 1))
    tvec_31 = np.zeros((3, 1))
    if use_guess:
        rvec_31 = cv2.Rodrigues(cam_T_world_guess_44[:3, :3])[0]
        tvec_31 = cam_T_world_guess_44[:3, 3:4].copy()
    ok, rvec_31, tvec_31, inliers = cv2.solvePnPRansac(
        points_n3,
        uv_n2,
        K_33,
        None,
        rvec_31,
        tvec_31,
        useExtrinsicGuess=use_guess,
        iterationsCount=iterations,
        reprojectionError=threshold_px,
        confidence=0.999,
        flags=cv2.SOLVEPNP_ITERATIVE if use_guess else cv2.SOLVEPNP_SQPNP,
    )
    if not ok or inliers is None or len(inliers) < min_inliers:
        return None
    inliers_k = inliers[:, 0]
    rvec_31, tvec_31 = cv2.solvePnPRefineLM(points_n3[inliers_k], uv_n2[inliers_k], K_33, None, rvec_31, tvec_31)
    cam_T_world_44 = make_pose_44(cv2.Rodrigues(rvec_31)[0], tvec_31[:, 0])
    inlier_n = reprojection_errors_n(K_33, cam_T_world_44, points_n3, uv_n2) < threshold_px
    if inlier_n.sum() < min_inliers:
        return None
    return PnPResult(cam_T_world_44, inlier_n)


@dataclass
class RefinedPose:
    """A pose cam_T_world_44 (4, 4) from map points ids_n (N,) found at pixels uv_n2 (N, 2)
    (tracked by KLT, or at matched features), inlier_n (N,) those that agree with it."""

    cam_T_world_44: np.ndarray
    ids_n: np.ndarray
    uv_n2: np.ndarray
    inlier_n: np.ndarray
