"""Refinement of given camera poses (a dataset's) to the colour images they are used with.

A dataset's poses can disagree with its colour frames by more than multi-view stereo
tolerates. 7-Scenes' poses track the depth camera, whose frames are not synchronised with
the colour ones; the colour frame then sits up to a few frames' motion away from its pose
(about a degree while the camera turns), and the error changes from frame to frame.

The refinement keeps the given trajectory's frame and overall shape and corrects
each frame locally: KLT tracks across the frames are triangulated with the current poses,
then every pose and point is bundle-adjusted at once, each pose held near its given one by
a weak prior (which fixes the gauge and the scale and costs little against the hundreds of
pixel residuals a frame has); the points are re-triangulated with the new poses and the
adjustment repeats. Points are seen from many frames, so per-frame errors average out of
them and each frame moves towards the pose its colour image shows. A frame that sees too
few points, or whose correction exceeds the plausible bounds, is not re-posed by the
adjustment: it takes the correction of the nearest re-posed frame, as the offset between
the pose and the colour frame changes slowly along the video (or keeps its given pose
when no frame was re-posed).

Colour alone takes the scale and the shape of the reconstruction from the given poses, and
measures nothing against the sensor whose surfaces they were tracked on; on 7-Scenes the
colour reconstruction then sits off those surfaces by a few centimetres. Where the frames
carry sensor depth, the depth of every tracked point joins the adjustment, so that the
points lie on the sensor's surfaces as well as on their pixels' rays; depths at depth edges
are left out, as unregistered depth and colour disagree most there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from mvs.geometry import invert_pose_44, rotation_angle
from mvs.types import Sequence
from slam.bundle import bundle_adjust
from slam.bundle_problem import BundleConfig, ObservedDepth, PosePrior
from slam.klt import KLTConfig, detect_corners_n2, track_points_n2
from slam.twoview import triangulate_n3, triangulation_angles_deg_n


@dataclass
class PoseRefineConfig:
    """Settings of `refine_poses`. KLT tracks the colour image downscaled to at most
    `max_width` pixels wide (the `klt` pixels are of that image); `max_error_px` is in pixels
    of the colour image.

    min_views: observations a track needs to make a point; min_angle_deg: the smallest angle
    between the rays of its first and last observation; max_error_px: observations farther
    than this from their point's projection are dropped. iterations: triangulate-adjust
    rounds. prior_sigma_m, prior_sigma_deg: standard deviations of the prior holding each
    pose near its given one. min_points: fewest points a frame must see to be re-posed.
    max_rotation_deg, max_translation_m: larger corrections are rejected (the frame takes
    the nearest re-posed frame's correction). depth_sigma_relative: standard deviation of a
    sensor depth as a share of it (0: sensor depth is not used); depth_edge_ratio: a depth is
    left out where the largest and smallest valid depth of its 5x5 neighbourhood differ by
    more than this ratio.
    """

    max_width: int = 640
    klt: KLTConfig = field(default_factory=lambda: KLTConfig(max_corners=400))
    bundle: BundleConfig = field(default_factory=lambda: BundleConfig(iterations=8, rounds=2))
    min_views: int = 3
    min_angle_deg: float = 2.0
    max_error_px: float = 3.0
    iterations: int = 3
    prior_sigma_m: float = 0.01
    prior_sigma_deg: float = 0.25
    min_points: int = 30
    max_rotation_deg: float = 5.0
    max_translation_m: float = 0.1
    depth_sigma_relative: float = 0.05
    depth_edge_ratio: float = 1.03


@dataclass
class _Tracks:
    """Observations of KLT tracks: track `track_m[m]` seen in frame `frame_m[m]` (position in
    the frame list) at pixel `uv_m2[m]` (full-resolution pixels), with the sensor's depth
    `depth_m[m]` there (metres; nan where none or at a depth edge)."""

    frame_m: np.ndarray
    track_m: np.ndarray
    uv_m2: np.ndarray
    depth_m: np.ndarray


@dataclass
class PoseRefinement:
    """Refined camera-to-world poses by dataset index, and what the refinement did.

    rotation_deg, translation_m: size of each re-posed frame's correction;
    unrefined: indices of the frames the adjustment did not re-pose (they took the nearest
    re-posed frame's correction); points: points triangulated.
    """

    world_T_cam_44: dict[int, np.ndarray]
    rotation_deg: dict[int, float]
    translation_m: dict[int, float]
    unrefined: list[int]
    points: int


def camera_centres_k3(cam_T_world_k44: np.ndarray) -> np.ndarray:
    """Camera centres (K, 3) in world coordinates of world-to-camera poses (K, 4, 4)."""
    return -np.einsum("kji,kj->ki", cam_T_world_k44[:, :3, :3], cam_T_world_k44[:, :3, 3])


def smooth_depth_at_n(depth_hw: np.ndarray | None, uv_n2: np.ndarray, edge_ratio: float) -> np.ndarray:
    """Depth (N,) of `depth_hw` (metres, 0 = invalid) at each of `uv_n2` (pixels), bilinear;
    nan outside the image and where the 5x5 neighbourhood of the nearest pixel holds an
    invalid depth or depths spanning more than `edge_ratio` (a depth edge)."""
    depth_n = np.full(len(uv_n2), np.nan)
    if depth_hw is None:
        return depth_n
    kernel = np.ones((5, 5), np.uint8)
    valid_hw = cv2.erode((depth_hw > 0).astype(np.uint8), kernel, borderValue=0) > 0
    largest_hw = cv2.dilate(depth_hw, kernel)
    smallest_hw = cv2.erode(depth_hw, kernel)
    smooth_hw = valid_hw & (largest_hw <= edge_ratio * smallest_hw)
    col_n, row_n = np.round(uv_n2).astype(int).T
    height, width = depth_hw.shape
    inside_n = (col_n >= 0) & (col_n < width) & (row_n >= 0) & (row_n < height)
    smooth_n = np.zeros(len(uv_n2), dtype=bool)
    smooth_n[inside_n] = smooth_hw[row_n[inside_n], col_n[inside_n]]
    # The 5x5 neighbourhood holds the four pixels around the point, all valid and inside.
    u_s, v_s = uv_n2[smooth_n].T
    col_s, row_s = np.floor(u_s).astype(int), np.floor(v_s).astype(int)
    du_s, dv_s = u_s - col_s, v_s - row_s
    top_s = (1 - du_s) * depth_hw[row_s, col_s] + du_s * depth_hw[row_s, col_s + 1]
    bottom_s = (1 - du_s) * depth_hw[row_s + 1, col_s] + du_s * depth_hw[row_s + 1, col_s + 1]
    depth_n[smooth_n] = (1 - dv_s) * top_s + dv_s * bottom_s
    return depth_n


def _track_frames(sequence: Sequence, indices: list[int], config: PoseRefineConfig) -> _Tracks:
    """KLT tracks through `indices` in order, corners replenished in every frame."""
    scale = min(1.0, config.max_width / sequence.camera.width)
    use_depth = sequence.has_depth and config.depth_sigma_relative > 0
    frames, tracks, uvs, depths = [], [], [], []
    previous_hw: np.ndarray | None = None
    uv_n2 = np.zeros((0, 2), dtype=np.float32)
    id_n = np.zeros(0, dtype=np.int64)
    next_id = 0
    for position, index in enumerate(tqdm(indices, desc="refining poses: tracks", unit="frame")):
        frame = sequence.load_frame(index)
        grey_hw = cv2.cvtColor(frame.image_hw3, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey_hw = cv2.resize(grey_hw, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if previous_hw is not None and len(uv_n2):
            uv_n2, ok_n = track_points_n2(previous_hw, grey_hw, uv_n2, config.klt)
            uv_n2, id_n = uv_n2[ok_n], id_n[ok_n]
        new_n2 = detect_corners_n2(grey_hw, uv_n2, config.klt.max_corners - len(uv_n2), config.klt)
        uv_n2 = np.concatenate([uv_n2, new_n2]).astype(np.float32)
        id_n = np.concatenate([id_n, np.arange(next_id, next_id + len(new_n2))])
        next_id += len(new_n2)
        frames.append(np.full(len(id_n), position))
        tracks.append(id_n.copy())
        # Tracking pixel centres at integers map back by (u + 0.5) / scale - 0.5.
        uvs.append((uv_n2.astype(np.float64) + 0.5) / scale - 0.5)
        depths.append(smooth_depth_at_n(frame.depth_hw if use_depth else None, uvs[-1], config.depth_edge_ratio))
        previous_hw = grey_hw
    return _Tracks(np.concatenate(frames), np.concatenate(tracks), np.concatenate(uvs), np.concatenate(depths))


def nearest_corrections_k44(correction_k44: np.ndarray, refined_k: np.ndarray) -> np.ndarray:
    """Each frame's correction (K, 4, 4): its own where `refined_k` (K,), else that of the
    nearest refined frame in the list (the earlier one on a tie); identity when none is."""
    refined_r = np.flatnonzero(refined_k)
    if not len(refined_r):
        return np.broadcast_to(np.eye(4), correction_k44.shape).copy()
    positions_k = np.arange(len(refined_k))
    nearest_k = refined_r[np.abs(positions_k[:, None] - refined_r[None, :]).argmin(axis=1)]
    return correction_k44[nearest_k]


def _triangulate(
    K_33: np.ndarray, cam_T_world_k44: np.ndarray, tracks: _Tracks, config: PoseRefineConfig
) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) of the tracks seen `min_views` times with enough parallax, and for
    each observation the row of its point (-1 where it has none or is an outlier)."""
    track_ids, inverse_m, counts = np.unique(tracks.track_m, return_inverse=True, return_counts=True)
    order_m = np.argsort(inverse_m, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first_m, last_m = order_m[starts], order_m[starts + counts - 1]
    long_t = counts >= config.min_views
    first_m, last_m = first_m[long_t], last_m[long_t]
    a_k44, b_k44 = cam_T_world_k44[tracks.frame_m[first_m]], cam_T_world_k44[tracks.frame_m[last_m]]
    points_t3 = triangulate_n3(K_33, a_k44, b_k44, tracks.uv_m2[first_m], tracks.uv_m2[last_m])
    centres_a_t3 = camera_centres_k3(a_k44)
    centres_b_t3 = camera_centres_k3(b_k44)
    finite_t = np.isfinite(points_t3).all(axis=1)
    angle_t = np.zeros(len(points_t3))
    angle_t[finite_t] = triangulation_angles_deg_n(points_t3[finite_t], centres_a_t3[finite_t], centres_b_t3[finite_t])
    good_t = finite_t & (angle_t >= config.min_angle_deg)
    point_of_track = np.full(len(track_ids), -1)
    point_of_track[np.flatnonzero(long_t)[good_t]] = np.arange(good_t.sum())
    points_n3 = points_t3[good_t]
    point_m = point_of_track[inverse_m]
    observed_m = point_m >= 0
    if not observed_m.any():
        return points_n3, point_m
    # Multi-view refinement of the points with every camera held fixed.
    result = bundle_adjust(
        K_33,
        cam_T_world_k44,
        points_n3,
        tracks.frame_m[observed_m],
        point_m[observed_m],
        tracks.uv_m2[observed_m],
        np.ones(len(cam_T_world_k44), dtype=bool),
        config.bundle,
    )
    points_n3 = result.points_n3
    errors_m = np.full(len(point_m), np.inf)
    errors_m[observed_m] = result.errors_m
    point_m = np.where(errors_m <= config.max_error_px, point_m, -1)
    return points_n3, point_m


def refine_poses(sequence: Sequence, world_T_cam_44: dict[int, np.ndarray], config: PoseRefineConfig) -> PoseRefinement:
    """Refine the camera-to-world poses `world_T_cam_44` (by dataset index) of `sequence`'s
    selected frames to its colour images, as the module docstring describes (metres)."""
    if config.iterations < 1:
        raise ValueError(f"PoseRefineConfig: expected iterations >= 1, got {config.iterations}")
    indices = [i for i in sequence.indices if i in world_T_cam_44]
    K_33 = sequence.camera.K_33
    world_T_given_k44 = np.stack([world_T_cam_44[i] for i in indices])
    given_k44 = np.stack([invert_pose_44(pose_44) for pose_44 in world_T_given_k44])
    tracks = _track_frames(sequence, indices, config)
    prior = PosePrior(given_k44, config.prior_sigma_m, np.deg2rad(config.prior_sigma_deg))
    measured = np.isfinite(tracks.depth_m).any()
    cam_T_world_k44 = given_k44.copy()
    for _ in tqdm(range(config.iterations), desc="refining poses: bundle adjustment", unit="round"):
        points_n3, point_m = _triangulate(K_33, cam_T_world_k44, tracks, config)
        seen_m = point_m >= 0
        seen_k = np.bincount(tracks.frame_m[seen_m], minlength=len(indices))
        result = bundle_adjust(
            K_33,
            cam_T_world_k44,
            points_n3,
            tracks.frame_m[seen_m],
            point_m[seen_m],
            tracks.uv_m2[seen_m],
            np.zeros(len(indices), dtype=bool),
            config.bundle,
            prior,
            ObservedDepth(tracks.depth_m[seen_m], config.depth_sigma_relative) if measured else None,
        )
        adjusted_k44 = result.cam_T_world_k44
        inliers_k = np.bincount(tracks.frame_m[seen_m][result.errors_m <= config.max_error_px], minlength=len(indices))
        correction_k44 = adjusted_k44 @ world_T_given_k44
        rotation_k = np.array([np.rad2deg(rotation_angle(c_44[:3, :3])) for c_44 in correction_k44])
        shift_k = np.linalg.norm(camera_centres_k3(adjusted_k44) - world_T_given_k44[:, :3, 3], axis=1)
        refined_k = (
            (seen_k >= config.min_points)
            & (inliers_k >= config.min_points)
            & (rotation_k <= config.max_rotation_deg)
            & (shift_k <= config.max_translation_m)
        )
        cam_T_world_k44 = nearest_corrections_k44(correction_k44, refined_k) @ given_k44
    return PoseRefinement(
        world_T_cam_44={i: invert_pose_44(cam_T_world_k44[k]) for k, i in enumerate(indices)},
        rotation_deg={i: float(rotation_k[k]) for k, i in enumerate(indices) if refined_k[k]},
        translation_m={i: float(shift_k[k]) for k, i in enumerate(indices) if refined_k[k]},
        unrefined=[i for k, i in enumerate(indices) if not refined_k[k]],
        points=len(points_n3),
    )
