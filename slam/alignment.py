"""Umeyama alignment of one set of 3D points (or camera centres) onto another.

The similarity `target ≈ scale * R_33 @ source + t_3` is solved in closed form
(Umeyama, "Least-squares estimation of transformation parameters between two point
patterns", PAMI 1991); with `with_scale=False` the scale is fixed to 1 (SE(3)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Similarity:
    """A similarity transform `x -> scale * R_33 @ x + t_3` from a source frame to a target frame."""

    scale: float
    R_33: np.ndarray
    t_3: np.ndarray

    def apply_n3(self, points_n3: np.ndarray) -> np.ndarray:
        """Source-frame points (N, 3) mapped into the target frame."""
        return self.scale * points_n3 @ self.R_33.T + self.t_3

    def apply_to_world_T_cam_44(self, world_T_cam_44: np.ndarray) -> np.ndarray:
        """A camera-to-source-world pose re-expressed as camera-to-target-world (rigid 4x4).

        The camera frame keeps its unit: the scale applies to the camera centre only.
        """
        target_T_cam_44 = np.eye(4)
        target_T_cam_44[:3, :3] = self.R_33 @ world_T_cam_44[:3, :3]
        target_T_cam_44[:3, 3] = self.apply_n3(world_T_cam_44[None, :3, 3])[0]
        return target_T_cam_44

    def inverse(self) -> Similarity:
        """The similarity from the target frame back to the source frame."""
        R_33 = self.R_33.T
        return Similarity(1.0 / self.scale, R_33, -R_33 @ self.t_3 / self.scale)


def umeyama_alignment(source_n3: np.ndarray, target_n3: np.ndarray, with_scale: bool) -> Similarity:
    """The least-squares similarity (or rigid transform) mapping `source_n3` onto `target_n3`.

    source_n3, target_n3: (N, 3) corresponding points, N >= 3 and not all collinear
    (for the rotation to be unique). Units are those of the inputs; the returned scale is
    target units per source unit.
    """
    source_n3 = np.asarray(source_n3, dtype=np.float64)
    target_n3 = np.asarray(target_n3, dtype=np.float64)
    if source_n3.ndim != 2 or source_n3.shape[1] != 3 or source_n3.shape != target_n3.shape:
        raise ValueError(
            f"umeyama_alignment: expected two (N, 3) arrays of equal shape, got "
            f"{source_n3.shape} and {target_n3.shape}"
        )
    if len(source_n3) < 3:
        raise ValueError(f"umeyama_alignment: expected at least 3 point pairs, got {len(source_n3)}")
    source_mean_3 = source_n3.mean(axis=0)
    target_mean_3 = target_n3.mean(axis=0)
    source_c_n3 = source_n3 - source_mean_3
    target_c_n3 = target_n3 - target_mean_3
    covariance_33 = target_c_n3.T @ source_c_n3 / len(source_n3)
    U_33, singular_3, Vt_33 = np.linalg.svd(covariance_33)
    sign_3 = np.ones(3)
    if np.linalg.det(U_33) * np.linalg.det(Vt_33) < 0:
        sign_3[2] = -1.0
    R_33 = U_33 @ np.diag(sign_3) @ Vt_33
    scale = 1.0
    if with_scale:
        source_variance = float(np.mean(np.sum(source_c_n3**2, axis=1)))
        if source_variance <= 0.0:
            raise ValueError("umeyama_alignment: source points are all identical; the scale is undefined")
        scale = float(np.sum(singular_3 * sign_3) / source_variance)
    t_3 = target_mean_3 - scale * R_33 @ source_mean_3
    return Similarity(scale, R_33, t_3)


def _similarities_of_triples(source_k33: np.ndarray, target_k33: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Umeyama's similarity for each of K triples of pairs at once: scales (K,), rotations
    (K, 3, 3) and translations (K, 3); the scale is nan for a degenerate (collinear) triple."""
    source_c_k33 = source_k33 - source_k33.mean(axis=1, keepdims=True)
    target_c_k33 = target_k33 - target_k33.mean(axis=1, keepdims=True)
    U_k33, singular_k3, Vt_k33 = np.linalg.svd(np.einsum("kni,knj->kij", target_c_k33, source_c_k33) / 3)
    sign_k3 = np.ones_like(singular_k3)
    sign_k3[:, 2] = np.sign(np.linalg.det(U_k33) * np.linalg.det(Vt_k33))
    R_k33 = U_k33 @ (sign_k3[:, :, None] * Vt_k33)
    variance_k = np.mean(np.sum(source_c_k33**2, axis=2), axis=1)
    area_k = np.linalg.norm(np.cross(source_k33[:, 1] - source_k33[:, 0], source_k33[:, 2] - source_k33[:, 0]), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale_k = np.where(area_k > 1e-12, np.sum(singular_k3 * sign_k3, axis=1) / variance_k, np.nan)
    t_k3 = target_k33.mean(axis=1) - scale_k[:, None] * np.einsum("kij,kj->ki", R_k33, source_k33.mean(axis=1))
    return scale_k, R_k33, t_k3


def ransac_similarity(
    source_n3: np.ndarray,
    target_n3: np.ndarray,
    threshold_n: np.ndarray,
    iterations: int = 200,
    min_inliers: int = 3,
    seed: int = 0,
) -> tuple[Similarity, np.ndarray] | None:
    """The similarity mapping most of `source_n3` (N, 3) onto `target_n3` (N, 3): RANSAC
    over minimal sets of 3 pairs, a pair counting as an inlier when it lands within
    `threshold_n` (N,) (target units) of its target; the best set is refit by Umeyama on its
    inliers (twice, re-selecting them). Returns the similarity and the inlier mask (N,), or
    None with fewer than `min_inliers` inliers."""
    count = len(source_n3)
    if count < max(3, min_inliers):
        return None
    rng = np.random.default_rng(seed)
    sample_k3 = np.stack([rng.choice(count, 3, replace=False) for _ in range(iterations)])
    scale_k, R_k33, t_k3 = _similarities_of_triples(source_n3[sample_k3], target_n3[sample_k3])
    mapped_kn3 = scale_k[:, None, None] * np.einsum("kij,nj->kni", R_k33, source_n3) + t_k3[:, None, :]
    inlier_kn = np.linalg.norm(mapped_kn3 - target_n3, axis=2) < threshold_n
    inlier_kn[~np.isfinite(scale_k)] = False
    best_n = inlier_kn[int(np.argmax(inlier_kn.sum(axis=1)))]
    if best_n.sum() < max(3, min_inliers):
        return None
    for _ in range(2):
        similarity = umeyama_alignment(source_n3[best_n], target_n3[best_n], with_scale=True)
        inlier_n = np.linalg.norm(similarity.apply_n3(source_n3) - target_n3, axis=1) < threshold_n
        if inlier_n.sum() < max(3, min_inliers):
            return None
        best_n = inlier_n
    return similarity, best_n


def similarity_from_poses(source_world_T_cam_k44: np.ndarray, target_world_T_cam_k44: np.ndarray) -> Similarity | None:
    """The similarity mapping a source world onto a target world in which the same K >= 2
    cameras have the poses `target_world_T_cam_k44` (K, 4, 4), given theirs in the source,
    `source_world_T_cam_k44` (K, 4, 4), both camera-to-world: the rotation is the chordal
    mean of the K rotations between the worlds, the scale the ratio of the spreads of the
    camera centres about their means, the translation maps the source mean onto the target's.
    None when the source centres coincide (no scale)."""
    if len(source_world_T_cam_k44) < 2 or source_world_T_cam_k44.shape != target_world_T_cam_k44.shape:
        raise ValueError(
            "similarity_from_poses: expected two (K, 4, 4) arrays of equal shape with K >= 2, got "
            f"{source_world_T_cam_k44.shape} and {target_world_T_cam_k44.shape}"
        )
    summed_33 = np.einsum("kij,klj->il", target_world_T_cam_k44[:, :3, :3], source_world_T_cam_k44[:, :3, :3])
    U_33, _, Vt_33 = np.linalg.svd(summed_33)
    R_33 = U_33 @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U_33 @ Vt_33))]) @ Vt_33
    source_k3 = source_world_T_cam_k44[:, :3, 3] - source_world_T_cam_k44[:, :3, 3].mean(axis=0)
    target_k3 = target_world_T_cam_k44[:, :3, 3] - target_world_T_cam_k44[:, :3, 3].mean(axis=0)
    spread = float(np.sum(source_k3**2))
    if not spread > 0:
        return None
    scale = float(np.sqrt(np.sum(target_k3**2) / spread))
    t_3 = target_world_T_cam_k44[:, :3, 3].mean(axis=0) - scale * R_33 @ source_world_T_cam_k44[:, :3, 3].mean(axis=0)
    return Similarity(scale, R_33, t_3)
