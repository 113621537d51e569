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
from slam.pnp import RefinedPose, solve_pnp


@dataclass
class GuidedSeedConfig:
    """corner_px: how close to a map point's observation in the keyframe a matched keypoint
    must be to stand for it; threshold_px, min_inliers: PnP-RANSAC on those pairs."""

    corner_px: float = 3.0
    threshold_px: float = 4.0
    min_inliers: int = 12


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


def _first_n(values_n: np.ndarray) -> np.ndarray:
    """Marks (N,) the first occurrence of each value of `values_n` (N,)."""
    first_n = np.zeros(len(values_n), dtype=bool)
    first_n[np.unique(values_n, return_index=True)[1]] = True
    return first_n
