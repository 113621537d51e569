"""A first pose of an image against a keyframe from whole-image feature matches.

Descriptor matches of the keyframe's own map points give too few 2D-3D pairs across a wide
baseline (`slam/image_features.py`). The ORB matches between the image and the keyframe are
many but carry no 3D point. About half of them, though, sit within a few pixels of a tracked
corner of the keyframe, and where that corner has a map point, the match gives the point's
pixel in the image: the matched keypoint moved by the corner's offset from the keypoint in the
keyframe. Those 2D-3D pairs pose the image by PnP-RANSAC: a seed, a few pixels off, that
`refine_pose` then verifies and refines as any relocalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from slam.image_features import ImageFeatures, ImageMatcher
from slam.map import SparseMap
from slam.pnp import PnPResult, RefinedPose, solve_pnp
from slam.twoview import reprojection_errors_n, triangulate_n3, triangulation_angles_deg_n


@dataclass
class GuidedSeedConfig:
    """corner_px: how close to a map point's observation in the keyframe a matched keypoint
    must be to stand for it; threshold_px, min_inliers: PnP-RANSAC on those pairs;
    min_angle_deg: the smallest angle between the rays of a feature triangulated between two
    keyframes (`triangulated_seed`)."""

    corner_px: float = 3.0
    threshold_px: float = 4.0
    min_inliers: int = 12
    min_angle_deg: float = 1.0


def guided_seed(
    world: SparseMap,
    position: int,
    features: ImageFeatures,
    matcher: ImageMatcher,
    K_33: np.ndarray,
    config: GuidedSeedConfig,
) -> RefinedPose | None:
    """The pose of the image with ORB `features` in the world of the keyframe at `position`,
    from that keyframe's map points standing at its matched keypoints (see the module), with
    those points and pixels; None when the keyframe keeps no features, or too few agree."""
    kf = world.keyframes[position]
    if kf.features is None:
        return None
    query_k, train_k = matcher.match(features, kf.features)
    use_n = kf.valid_n & world.points.ok_n[kf.track_ids_n]
    if len(query_k) == 0 or not use_n.any():
        return None
    ids_n, uv_n2 = kf.track_ids_n[use_n], kf.uv_n2[use_n]
    distance_k, nearest_k = cKDTree(uv_n2).query(kf.features.uv_m2[train_k], distance_upper_bound=config.corner_px)
    close_k = np.isfinite(distance_k)
    close_k[close_k] = _first_n(nearest_k[close_k])
    offset_k2 = uv_n2[nearest_k[close_k]] - kf.features.uv_m2[train_k[close_k]]
    ids_k, uv_k2 = ids_n[nearest_k[close_k]], features.uv_m2[query_k[close_k]] + offset_k2
    pnp = solve_pnp(
        world.points.xyz_n3[ids_k], uv_k2, K_33, threshold_px=config.threshold_px, min_inliers=config.min_inliers,
        iterations=300,
    )
    return None if pnp is None else RefinedPose(pnp.cam_T_world_44, ids_k, uv_k2, pnp.inlier_n)


def triangulated_seed(
    world: SparseMap,
    position: int,
    features: ImageFeatures,
    matcher: ImageMatcher,
    K_33: np.ndarray,
    config: GuidedSeedConfig,
    min_inliers: int,
) -> PnPResult | None:
    """The pose of the image with ORB `features` in the world of the keyframe at `position`
    where too few of the keyframe's map points stand at matched keypoints (a keyframe at the
    edge of the map, seen across a wide baseline): the keyframe's features matched with those
    of its neighbours in its piece and triangulated at their poses (in front of both, within
    `threshold_px` of both rays, at least `min_angle_deg` apart) give 3D points to the image's
    matches of the keyframe's features; PnP-RANSAC on those, with `min_inliers` agreeing. No
    map point is made: the pose is all it gives."""
    kf = world.keyframes[position]
    if kf.features is None:
        return None
    query_k, train_k = matcher.match(features, kf.features)
    if len(query_k) < min_inliers:
        return None
    xyz_m3 = np.full((len(kf.features), 3), np.nan)
    positions = world.piece_positions(kf.piece)
    at = positions.index(position)
    for other_position in positions[max(0, at - 1) : at + 2]:
        other = world.keyframes[other_position]
        if other_position == position or other.features is None:
            continue
        a_j, b_j = matcher.match(kf.features, other.features)
        uv_a_j2, uv_b_j2 = kf.features.uv_m2[a_j], other.features.uv_m2[b_j]
        xyz_j3 = triangulate_n3(K_33, kf.cam_T_world_44, other.cam_T_world_44, uv_a_j2, uv_b_j2)
        good_j = np.isfinite(xyz_j3).all(axis=1)
        good_j[good_j] = (
            (reprojection_errors_n(K_33, kf.cam_T_world_44, xyz_j3[good_j], uv_a_j2[good_j]) < config.threshold_px)
            & (reprojection_errors_n(K_33, other.cam_T_world_44, xyz_j3[good_j], uv_b_j2[good_j]) < config.threshold_px)
            & (triangulation_angles_deg_n(xyz_j3[good_j], kf.centre_3, other.centre_3) >= config.min_angle_deg)
        )
        new_j = good_j & np.isnan(xyz_m3[a_j, 0])
        xyz_m3[a_j[new_j]] = xyz_j3[new_j]
    known_k = np.isfinite(xyz_m3[train_k, 0])
    return solve_pnp(
        xyz_m3[train_k[known_k]], features.uv_m2[query_k[known_k]], K_33, threshold_px=config.threshold_px,
        min_inliers=min_inliers, iterations=300,
    )


def _first_n(values_n: np.ndarray) -> np.ndarray:
    """Marks (N,) the first occurrence of each value of `values_n` (N,)."""
    first_n = np.zeros(len(values_n), dtype=bool)
    first_n[np.unique(values_n, return_index=True)[1]] = True
    return first_n
