"""Posing a frame against the map by descriptor matches, and finding where two pieces meet.

Relocalisation: the frame's corners are described and matched to the described observations
of a candidate keyframe and its neighbours in the same piece; the matched map points give
2D-3D pairs for PnP-RANSAC, a seed pose. Whole-pixel matches across a wide baseline leave
that pose centimetres off, so the neighbourhood's map points are then tracked by KLT from
their keyframe observations into the frame, starting where the seed pose projects them, and
the pose is solved again from those sub-pixel positions with a tighter threshold. Merging (and
loops): a keyframe of one piece is matched to a keyframe of another; pairs of map points (one
of each piece) give a similarity by RANSAC, which places the keyframe in the other piece, and
that pose is verified and refined as a relocalisation is, from the other piece's points
tracked into the keyframe's image: only a pose that many of them agree with counts, and the
similarity is re-derived from it. Where the descriptor matches of map points are too few (a
wide baseline, a rolled camera), the whole-image ORB matches seed the pose instead
(`slam/guided_seed.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial import cKDTree

from mvs.geometry import invert_pose_44, project_n2, transform_n3
from slam.alignment import Similarity, ransac_similarity
from slam.features import Describer, Descriptors
from slam.guided_seed import GuidedSeedConfig, guided_seed
from slam.image_features import ImageFeatures, ImageMatcher
from slam.klt import KLTConfig
from slam.map import SparseMap, track_into
from slam.pnp import RefinedPose, solve_pnp


@dataclass
class RelocaliseConfig:
    """neighbours: keyframes on each side of a candidate (in the same piece) matched with it;
    threshold_px and seed_inliers: PnP-RANSAC threshold on the descriptor matches and the
    fewest inliers of a pose worth refining; search_radius_px: how far from its projection
    under that pose a map point tracked into the frame may land; refine_threshold_px and
    min_inliers: PnP threshold on the tracked points and the fewest inliers of a
    relocalisation; merge_threshold_relative: how far (times the depth of the target point
    from its keyframe) a point of one piece may land from its match in the other under their
    similarity; merge_min_inliers: the fewest points of the other piece that agree with the
    keyframe's pose in it (without their images, as in RGB-D tracking: the fewest point
    pairs agreeing on the similarity); guided: the seed from whole-image feature matches, tried
    where the descriptor matches give none (`slam/guided_seed.py`); pair_radius_px: how close
    the observations of two pieces' points in the keyframe must be to pair them for the scale
    of a guided merge."""

    neighbours: int = 2
    threshold_px: float = 4.0
    seed_inliers: int = 10
    search_radius_px: float = 8.0
    refine_threshold_px: float = 2.0
    min_inliers: int = 20
    merge_min_inliers: int = 20
    merge_threshold_relative: float = 0.05
    guided: GuidedSeedConfig = field(default_factory=GuidedSeedConfig)
    pair_radius_px: float = 2.0


@dataclass
class Relocalisation:
    """A frame posed in `piece`: cam_T_world_44 (4, 4), and the map points it sees (inliers):
    ids (N,) at its pixels (N, 2); `position` the candidate keyframe that posed it;
    `unused_k` the positions in the query descriptors left unmatched."""

    cam_T_world_44: np.ndarray
    piece: int
    position: int
    point_ids_n: np.ndarray
    uv_n2: np.ndarray
    unused_k: np.ndarray


@dataclass
class PieceMatch:
    """Where the keyframe at `position` (piece A) sees the keyframe at `other_position`
    (piece B): `other_T_piece` maps A's world to B's; `other_ids_n` (N,) points of B that A's
    keyframe sees (and does not observe yet) at pixels `uv_n2` (N, 2)."""

    position: int
    other_position: int
    other_T_piece: Similarity
    other_ids_n: np.ndarray
    uv_n2: np.ndarray


def _neighbourhood(world: SparseMap, position: int, count: int) -> list[int]:
    """The keyframe at `position` and up to `count` keyframes on each side of it in its piece."""
    positions = world.piece_positions(world.keyframes[position].piece)
    at = positions.index(position)
    return positions[max(0, at - count) : at + count + 1]


def _matched_points(
    world: SparseMap, describer: Describer, query: Descriptors, positions: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Matches of `query` to the described map points of the keyframes at `positions`: query
    positions (K,) and point ids (K,), one point per query and one query per point."""
    query_k, ids_k = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for position in positions:
        train, ids_n = world.described_points(position)
        q_k, t_k = describer.match(query, train)
        query_k.append(q_k)
        ids_k.append(ids_n[t_k])
    query_k, ids_k = np.concatenate(query_k), np.concatenate(ids_k)
    _, first_k = np.unique(query_k, return_index=True)
    query_k, ids_k = query_k[first_k], ids_k[first_k]
    _, first_k = np.unique(ids_k, return_index=True)
    return query_k[first_k], ids_k[first_k]


def relocalise(
    world: SparseMap,
    describer: Describer,
    query: Descriptors,
    query_uv_n2: np.ndarray,
    gray_hw: np.ndarray,
    features: ImageFeatures,
    matcher: ImageMatcher,
    candidates: list[int],
    K_33: np.ndarray,
    config: RelocaliseConfig,
    klt: KLTConfig,
) -> Relocalisation | None:
    """Pose the frame (H, W) whose described corners are `query` (rows into `query_uv_n2`
    (M, 2)) and whose ORB features are `features` against each candidate keyframe position
    with its neighbours: PnP on the descriptor matches seeds a pose, or where it finds none,
    the whole-image matches do (`guided_seed`); `refine_pose` verifies and refines it from the
    map points tracked into the frame. The pose with the most inliers wins; None when none
    reaches `min_inliers`."""
    best: Relocalisation | None = None
    tried: set[tuple[int, ...]] = set()
    for position in candidates:
        neighbourhood = _neighbourhood(world, position, config.neighbours)
        if tuple(neighbourhood) in tried:
            continue
        tried.add(tuple(neighbourhood))
        query_k, ids_k = _matched_points(world, describer, query, neighbourhood)
        uv_k2 = query_uv_n2[query.rows_n[query_k]].astype(np.float64)
        seed = solve_pnp(
            world.points.xyz_n3[ids_k], uv_k2, K_33, threshold_px=config.threshold_px,
            min_inliers=config.seed_inliers, iterations=300,
        )
        if seed is not None:
            seed_44, used_k = seed.cam_T_world_44, query_k[seed.inlier_n]
        else:
            guided = guided_seed(world, position, features, matcher, K_33, config.guided)
            seed_44, used_k = (None if guided is None else guided.cam_T_world_44), query_k
        if seed_44 is None:
            continue
        refined = refine_pose(world, position, seed_44, gray_hw, K_33, config, klt)
        if refined is None or (best is not None and refined.inlier_n.sum() <= len(best.point_ids_n)):
            continue
        ids_r, uv_r2 = refined.ids_n[refined.inlier_n], refined.uv_n2[refined.inlier_n]
        unused_k = np.setdiff1d(np.arange(len(query)), used_k)
        best = Relocalisation(refined.cam_T_world_44, world.keyframes[position].piece, position, ids_r, uv_r2, unused_k)
    return best


def refine_pose(
    world: SparseMap,
    position: int,
    cam_T_world_44: np.ndarray,
    gray_hw: np.ndarray,
    K_33: np.ndarray,
    config: RelocaliseConfig,
    klt: KLTConfig,
) -> RefinedPose | None:
    """A frame (H, W) posed near `cam_T_world_44`, re-posed from sub-pixel observations:
    the map points the keyframe at `position` and its neighbours observe, each tracked by KLT
    from its observation in the nearest of them that keeps its image into the frame, starting at
    its projection, and kept within `search_radius_px` of it; then PnP from the given pose
    with `refine_threshold_px`. None when fewer than `min_inliers` agree: the given pose
    was wrong, or the frame does not see those points."""
    sources = [k for k in _neighbourhood(world, position, config.neighbours) if world.keyframes[k].gray_hw is not None]
    ids_n, source_n, uv_n2 = world.nearest_observations(position, sources)
    projected_n2, z_n = project_n2(transform_n3(cam_T_world_44, world.points.xyz_n3[ids_n]), K_33)
    height, width = gray_hw.shape
    inside_n = (z_n > 0) & np.all(np.isfinite(projected_n2), axis=1)
    inside_n[inside_n] = np.all((projected_n2[inside_n] >= 0) & (projected_n2[inside_n] <= [width - 1, height - 1]), axis=1)
    ids_k, uv_k2 = track_into(world, gray_hw, ids_n, source_n, uv_n2, projected_n2, inside_n, config.search_radius_px, klt)
    pnp = solve_pnp(
        world.points.xyz_n3[ids_k], uv_k2, K_33, threshold_px=config.refine_threshold_px,
        min_inliers=config.min_inliers, cam_T_world_guess_44=cam_T_world_44,
    )
    if pnp is None:
        return None
    return RefinedPose(pnp.cam_T_world_44, ids_k, uv_k2, pnp.inlier_n)


def match_unmapped(
    world: SparseMap,
    describer: Describer,
    query: Descriptors,
    query_uv_n2: np.ndarray,
    found: Relocalisation,
    K_33: np.ndarray,
    max_epipolar_px: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks of the keyframe that posed `found` that have no map point yet, matched to the
    frame's unused corners (`found.unused_k` of `query`, rows into `query_uv_n2` (M, 2)) and
    kept within `max_epipolar_px` of their epipolar line under the two known poses, so that
    they can be triangulated: track ids (N,) and the frame's pixels (N, 2)."""
    kf = world.keyframes[found.position]
    if kf.descriptors is None:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2))
    rows_n = kf.descriptors.rows_n
    unmapped_n = ~world.points.ok_n[kf.track_ids_n[rows_n]] & kf.valid_n[rows_n]
    train = Descriptors(kf.descriptors.values_nd[unmapped_n], rows_n[unmapped_n])
    unused = Descriptors(query.values_nd[found.unused_k], query.rows_n[found.unused_k])
    query_k, train_k = describer.match(unused, train)
    uv_k2 = query_uv_n2[unused.rows_n[query_k]].astype(np.float64)
    kf_uv_k2 = kf.uv_n2[train.rows_n[train_k]]
    cam_T_kf_44 = found.cam_T_world_44 @ np.linalg.inv(kf.cam_T_world_44)
    t_3 = cam_T_kf_44[:3, 3]
    skew_33 = np.array([[0, -t_3[2], t_3[1]], [t_3[2], 0, -t_3[0]], [-t_3[1], t_3[0], 0]])
    K_inv_33 = np.linalg.inv(K_33)
    F_33 = K_inv_33.T @ skew_33 @ cam_T_kf_44[:3, :3] @ K_inv_33
    line_k3 = np.column_stack([kf_uv_k2, np.ones(len(kf_uv_k2))]) @ F_33.T
    point_k3 = np.column_stack([uv_k2, np.ones(len(uv_k2))])
    distance_k = np.abs(np.sum(line_k3 * point_k3, axis=1)) / np.maximum(np.linalg.norm(line_k3[:, :2], axis=1), 1e-12)
    keep_k = distance_k < max_epipolar_px
    return kf.track_ids_n[train.rows_n[train_k]][keep_k], uv_k2[keep_k]


def match_pieces(
    world: SparseMap,
    describer: Describer,
    matcher: ImageMatcher,
    position: int,
    candidates: list[int],
    K_33: np.ndarray,
    config: RelocaliseConfig,
    klt: KLTConfig,
) -> PieceMatch | None:
    """The similarity from the piece of the keyframe at `position` to the piece of a candidate
    keyframe (another piece, or a distant part of the same one), from matches between the
    map points each observes (a point matched to itself is left out): RANSAC over the pairs
    seeds it with at least `seed_inliers`, or where it finds none, the keyframe's whole-image
    features seed its pose in the other piece (`guided_seed`); that pose is verified by
    `verify_pose`. The match's observations are those verified points (pixels of the tracking
    image, K_33 (3, 3)) that the keyframe does not observe yet. Where the keyframe has sensor
    depth (its points measured, not triangulated, and old images released), or the other
    keyframes' images are gone, at least `merge_min_inliers` pairs agreeing on the
    similarity decide, and they are the match's observations."""
    kf = world.keyframes[position]
    query, ids_n = world.described_points(position)
    for other in candidates:
        neighbourhood = _neighbourhood(world, other, config.neighbours)
        query_k, other_ids_k = _matched_points(world, describer, query, neighbourhood)
        distinct_k = ids_n[query_k] != other_ids_k
        query_k, other_ids_k = query_k[distinct_k], other_ids_k[distinct_k]
        images = kf.gray_hw is not None and any(world.keyframes[k].gray_hw is not None for k in neighbourhood)
        verify = kf.depth_n is None and images
        seed_inliers = config.seed_inliers if verify else config.merge_min_inliers
        found = None
        if len(query_k) >= seed_inliers:
            other_kf = world.keyframes[other]
            target_k3 = world.points.xyz_n3[other_ids_k]
            depth_k = transform_n3(other_kf.cam_T_world_44, target_k3)[:, 2]
            found = ransac_similarity(
                world.points.xyz_n3[ids_n[query_k]], target_k3, config.merge_threshold_relative * np.abs(depth_k),
                min_inliers=seed_inliers,
            )
        if found is not None:
            similarity, inlier_k = found
            own_ids_k, other_ids_k = ids_n[query_k][inlier_k], other_ids_k[inlier_k]
            if not verify:
                uv_k2 = kf.uv_n2[query.rows_n[query_k][inlier_k]]
                return PieceMatch(position, other, similarity, other_ids_k, uv_k2)
            seed_44 = invert_pose_44(similarity.apply_to_world_T_cam_44(invert_pose_44(kf.cam_T_world_44)))
            verified = verify_pose(world, position, other, seed_44, K_33, config, klt, (own_ids_k, other_ids_k))
        elif verify and kf.features is not None:
            guided = guided_seed(world, other, kf.features, matcher, K_33, config.guided)
            if guided is None:
                continue
            verified = verify_pose(world, position, other, guided.cam_T_world_44, K_33, config, klt, fallback=guided)
        else:
            continue
        if verified is not None:
            return verified
    return None


def verify_pose(
    world: SparseMap,
    position: int,
    other: int,
    cam_T_other_44: np.ndarray,
    K_33: np.ndarray,
    config: RelocaliseConfig,
    klt: KLTConfig,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
    fallback: RefinedPose | None = None,
) -> PieceMatch | None:
    """The match of the keyframe at `position` to the keyframe at `other` when its seed pose
    `cam_T_other_44` (4, 4) in the other piece is confirmed by at least `merge_min_inliers` of
    that piece's points tracked into its image (`refine_pose`); the similarity between the
    pieces follows from the refined pose and the keyframe's own, its scale the median ratio of
    the depths, in the keyframe's camera, of pairs of points of the two pieces: the matched
    `pairs` (own ids (K,), other ids (K,)) whose projections agree within `search_radius_px`,
    or without them, the points observed within `pair_radius_px` of each other in its image.
    Where KLT finds too few of them (blur, a baseline of 20-30 degrees), the `fallback` (a
    `guided_seed`, its points found at matched features) counts when at least
    `merge_min_inliers` of its points agree with it. None when not confirmed or with fewer
    than `seed_inliers` pairs."""
    kf = world.keyframes[position]
    verify_config = replace(config, min_inliers=config.merge_min_inliers)
    refined = refine_pose(world, other, cam_T_other_44, kf.gray_hw, K_33, verify_config, klt)
    if refined is None and fallback is not None and fallback.inlier_n.sum() >= config.merge_min_inliers:
        refined = fallback
    if refined is None:
        return None
    ids_r, uv_r2 = refined.ids_n[refined.inlier_n], refined.uv_n2[refined.inlier_n]
    if pairs is None:
        own_n = kf.valid_n & world.points.ok_n[kf.track_ids_n]
        distance_r, nearest_r = cKDTree(kf.uv_n2[own_n]).query(uv_r2, distance_upper_bound=config.pair_radius_px)
        close_r = np.isfinite(distance_r)
        own_ids_k, other_ids_k = kf.track_ids_n[own_n][nearest_r[close_r]], ids_r[close_r]
        distinct_k = own_ids_k != other_ids_k
        own_ids_k, other_ids_k = own_ids_k[distinct_k], other_ids_k[distinct_k]
    else:
        own_ids_k, other_ids_k = pairs
    own_uv_k2, own_depth_k = project_n2(transform_n3(kf.cam_T_world_44, world.points.xyz_n3[own_ids_k]), K_33)
    other_uv_k2, other_depth_k = project_n2(transform_n3(refined.cam_T_world_44, world.points.xyz_n3[other_ids_k]), K_33)
    agree_k = (own_depth_k > 0) & (other_depth_k > 0)
    agree_k[agree_k] = np.linalg.norm(own_uv_k2[agree_k] - other_uv_k2[agree_k], axis=1) < config.search_radius_px
    if agree_k.sum() < config.seed_inliers:
        return None
    scale = float(np.median(other_depth_k[agree_k] / own_depth_k[agree_k]))
    R_33, t_3 = kf.cam_T_world_44[:3, :3], kf.cam_T_world_44[:3, 3]
    R_o33, t_o3 = refined.cam_T_world_44[:3, :3], refined.cam_T_world_44[:3, 3]
    verified = Similarity(scale, R_o33.T @ R_33, R_o33.T @ (scale * t_3 - t_o3))
    new_r = ~np.isin(ids_r, kf.track_ids_n)
    return PieceMatch(position, other, verified, ids_r[new_r], uv_r2[new_r])
