"""The sparse map of the monocular tracker: keyframes, map points, and the pieces they form.

A map point is indexed by the id of the KLT track that created it (one point per track).
A keyframe holds its pose and its observations of tracks (with or without a map point).
Keyframes belong to pieces: a piece is a set of keyframes with one gauge and one scale,
started by a two-view initialisation; when a piece is merged into another, its keyframes take
the other's id and its poses and points are moved into the other's frame and scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvs.geometry import invert_pose_44, project_n2, transform_n3
from slam.features import Descriptors
from slam.image_features import ImageFeatures
from slam.klt import KLTConfig, free_mask_hw, track_points_n2


@dataclass
class Keyframe:
    """A keyframe's pose and its observations: track ids (N,) at pixels (N, 2) of the
    tracking image; `valid_n` is False where bundle adjustment rejected the observation;
    `gray_hw` is the tracking image, kept while the keyframe is recent enough to re-find
    points from (to the end with the global adjustment); `depth_n` the sensor depth (metres,
    nan where invalid) at each observation, when the frame had it; `descriptors` those of
    its observations (rows into its arrays as they were when described) and `features` the
    whole image's ORB features (`slam/image_features.py`), for relocalisation and merging;
    `piece` the id of the piece it belongs to."""

    frame_index: int
    cam_T_world_44: np.ndarray
    track_ids_n: np.ndarray
    uv_n2: np.ndarray
    valid_n: np.ndarray
    gray_hw: np.ndarray | None
    piece: int = 0
    depth_n: np.ndarray | None = None
    descriptors: Descriptors | None = None
    features: ImageFeatures | None = None

    @property
    def centre_3(self) -> np.ndarray:
        """Camera centre (3,) in world coordinates."""
        return invert_pose_44(self.cam_T_world_44)[:3, 3]

    def add_observations(self, ids_n: np.ndarray, uv_n2: np.ndarray) -> None:
        """Valid observations of the points `ids_n` (N,) at pixels `uv_n2` (N, 2) join the
        keyframe (without a sensor depth)."""
        self.track_ids_n = np.concatenate([self.track_ids_n, ids_n])
        self.uv_n2 = np.concatenate([self.uv_n2, uv_n2])
        self.valid_n = np.concatenate([self.valid_n, np.ones(len(ids_n), dtype=bool)])
        if self.depth_n is not None:
            self.depth_n = np.concatenate([self.depth_n, np.full(len(ids_n), np.nan)])


class MapPoints:
    """World positions of the tracks that have a map point; arrays grow by doubling.

    xyz_n3: position in the world of the piece the point belongs to; ok_n: the track has a
    point; birth_kf_n: position of the keyframe where the track was born (-1 before the
    piece's first keyframe exists); birth_uv_n2: its pixel there.
    """

    def __init__(self) -> None:
        self.xyz_n3 = np.zeros((1024, 3))
        self.ok_n = np.zeros(1024, dtype=bool)
        self.birth_kf_n = np.full(1024, -1, dtype=np.int64)
        self.birth_uv_n2 = np.zeros((1024, 2))

    def reserve(self, count: int) -> None:
        """Grow the arrays (doubling) until they hold at least `count` tracks."""
        while count > len(self.ok_n):
            size = len(self.ok_n)
            self.xyz_n3 = np.concatenate([self.xyz_n3, np.zeros((size, 3))])
            self.ok_n = np.concatenate([self.ok_n, np.zeros(size, dtype=bool)])
            self.birth_kf_n = np.concatenate([self.birth_kf_n, np.full(size, -1, dtype=np.int64)])
            self.birth_uv_n2 = np.concatenate([self.birth_uv_n2, np.zeros((size, 2))])


class SparseMap:
    """Keyframes (in insertion order; a keyframe is named by its position) and map points."""

    def __init__(self) -> None:
        self.keyframes: list[Keyframe] = []
        self.points = MapPoints()

    def piece_positions(self, piece: int) -> list[int]:
        """Positions of the keyframes of `piece`, in insertion order."""
        return [k for k, kf in enumerate(self.keyframes) if kf.piece == piece]

    def observed_point_ids_n(self, positions: list[int]) -> np.ndarray:
        """Ids (sorted) of the map points the keyframes at these positions observe."""
        if not positions:
            return np.zeros(0, dtype=np.int64)
        ids_n = np.unique(np.concatenate([self.keyframes[k].track_ids_n[self.keyframes[k].valid_n] for k in positions]))
        return ids_n[self.points.ok_n[ids_n]]

    def point_ids_n(self, kf: Keyframe) -> np.ndarray:
        """Ids of the map points `kf` observes validly, in its observation order."""
        ids_n = kf.track_ids_n[kf.valid_n]
        return ids_n[self.points.ok_n[ids_n]]

    def median_depth(self, kf: Keyframe) -> float:
        """Median depth of the map points `kf` observes (1 when it observes none)."""
        ids_n = self.point_ids_n(kf)
        if len(ids_n) == 0:
            return 1.0
        return float(np.median(transform_n3(kf.cam_T_world_44, self.points.xyz_n3[ids_n])[:, 2]))

    def nearest_observations(self, position: int, sources: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every map point that the keyframes at positions `sources` observe, its
        observation in the source nearest to `position`: point ids (N,) in increasing
        order, source positions (N,) and pixels (N, 2)."""
        ids, source, uv = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], [np.zeros((0, 2))]
        for other in sources:
            old = self.keyframes[other]
            use_n = old.valid_n & self.points.ok_n[old.track_ids_n]
            ids.append(old.track_ids_n[use_n])
            source.append(np.full(use_n.sum(), other))
            uv.append(old.uv_n2[use_n])
        ids_n, source_n, uv_n2 = np.concatenate(ids), np.concatenate(source), np.concatenate(uv)
        nearest_n = np.lexsort((np.abs(source_n - position), ids_n))
        ids_n, source_n, uv_n2 = ids_n[nearest_n], source_n[nearest_n], uv_n2[nearest_n]
        _, once_n = np.unique(ids_n, return_index=True)
        return ids_n[once_n], source_n[once_n], uv_n2[once_n]

    def described_points(self, position: int) -> tuple[Descriptors, np.ndarray]:
        """The descriptors of the keyframe at `position` whose observation still has a valid
        map point, and those points' ids (N,)."""
        kf = self.keyframes[position]
        if kf.descriptors is None:
            raise ValueError(f"keyframe at position {position} (frame {kf.frame_index}) has no descriptors")
        rows_n = kf.descriptors.rows_n
        ids_n = kf.track_ids_n[rows_n]
        use_n = kf.valid_n[rows_n] & self.points.ok_n[ids_n]
        return Descriptors(kf.descriptors.values_nd[use_n], rows_n[use_n]), ids_n[use_n]

    def transform_piece(self, piece: int, scale: float, target_T_piece_44: np.ndarray) -> None:
        """Move the keyframes and points of `piece` by the similarity: points x become
        R (scale x) + t with (R, t) = `target_T_piece_44`; camera frames keep their unit."""
        positions = self.piece_positions(piece)
        ids_n = self.observed_point_ids_n(positions)
        born_n = np.isin(self.points.birth_kf_n[: len(self.points.ok_n)], positions)
        ids_n = np.union1d(ids_n, np.flatnonzero(born_n & self.points.ok_n))
        self.points.xyz_n3[ids_n] = transform_n3(target_T_piece_44, scale * self.points.xyz_n3[ids_n])
        for k in positions:
            kf = self.keyframes[k]
            piece_T_cam_44 = invert_pose_44(kf.cam_T_world_44)
            piece_T_cam_44[:3, 3] *= scale
            kf.cam_T_world_44 = invert_pose_44(target_T_piece_44 @ piece_T_cam_44)


def track_into(
    world: SparseMap,
    target_gray_hw: np.ndarray,
    ids_n: np.ndarray,
    source_n: np.ndarray,
    uv_n2: np.ndarray,
    projected_n2: np.ndarray,
    select_n: np.ndarray,
    radius_px: float,
    klt: KLTConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """The points `ids_n[select_n]` found in the image `target_gray_hw` (H, W): each tracked
    by KLT from its pixel `uv_n2` in the keyframe at position `source_n` (which keeps its
    image), starting at its projection `projected_n2` in the target, and kept when it lands
    within `radius_px` of it. Returns the found ids (F,) and their pixels (F, 2)."""
    found_ids, found_uv = [np.zeros(0, dtype=np.int64)], [np.zeros((0, 2))]
    for other in np.unique(source_n[select_n]):
        from_n = select_n & (source_n == other)
        tracked_n2, ok_n = track_points_n2(world.keyframes[other].gray_hw, target_gray_hw, uv_n2[from_n], klt, projected_n2[from_n])
        ok_n &= np.linalg.norm(tracked_n2 - projected_n2[from_n], axis=1) < radius_px
        found_ids.append(ids_n[from_n][ok_n])
        found_uv.append(tracked_n2[ok_n].astype(np.float64))
    return np.concatenate(found_ids), np.concatenate(found_uv)


def reacquire(
    world: SparseMap,
    position: int,
    sources: list[int],
    tracked_ids_n: np.ndarray,
    tracked_uv_n2: np.ndarray,
    K_33: np.ndarray,
    radius_px: float,
    klt: KLTConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Map points of the keyframes at `sources` (those that keep their image) that the
    keyframe at `position` does not track (`tracked_ids_n` (T,) at `tracked_uv_n2` (T, 2)):
    each projected into it, and where it falls in front of the camera, inside the image and
    away from the tracked corners, tracked by KLT from its latest observation (`track_into`).
    Returns the found ids (F,) and their pixels (F, 2)."""
    kf = world.keyframes[position]
    sources = [k for k in sources if world.keyframes[k].gray_hw is not None]
    ids_n, source_n, uv_n2 = world.nearest_observations(position, sources)
    untracked_n = ~np.isin(ids_n, tracked_ids_n)
    ids_n, source_n, uv_n2 = ids_n[untracked_n], source_n[untracked_n], uv_n2[untracked_n]
    projected_n2, z_n = project_n2(transform_n3(kf.cam_T_world_44, world.points.xyz_n3[ids_n]), K_33)
    free_hw = free_mask_hw(kf.gray_hw.shape, tracked_uv_n2, klt)
    inside_n = (z_n > 0) & np.all(np.isfinite(projected_n2), axis=1)
    pixel_n2 = np.where(inside_n[:, None], np.rint(projected_n2), 0).astype(np.int64)
    height, width = free_hw.shape
    inside_n &= (pixel_n2[:, 0] >= 0) & (pixel_n2[:, 0] < width) & (pixel_n2[:, 1] >= 0) & (pixel_n2[:, 1] < height)
    inside_n[inside_n] = free_hw[pixel_n2[inside_n, 1], pixel_n2[inside_n, 0]] > 0
    return track_into(world, kf.gray_hw, ids_n, source_n, uv_n2, projected_n2, inside_n, radius_px, klt)


def sensor_depth_n(depth_hw: np.ndarray, uv_n2: np.ndarray, scale: float, max_spread: float) -> np.ndarray:
    """Sensor depth (N,) in metres at tracking-image pixels `uv_n2` (N, 2), which are `scale`
    times smaller than the depth map (H, W) (metres, 0 invalid): the nearest depth pixel's
    value where its 3x3 neighbourhood is valid and spreads by at most `max_spread` of it
    (corners often sit on depth edges, where the nearest pixel may belong to either side);
    nan elsewhere."""
    height, width = depth_hw.shape
    pixel_n2 = np.rint((uv_n2 + 0.5) * scale - 0.5).astype(np.int64)
    inside_n = np.all((pixel_n2 >= 1) & (pixel_n2 < np.array([width - 1, height - 1])), axis=1)
    dy_33, dx_33 = np.meshgrid(np.arange(-1, 2), np.arange(-1, 2), indexing="ij")
    patch_n9 = depth_hw[pixel_n2[inside_n, 1, None] + dy_33.ravel(), pixel_n2[inside_n, 0, None] + dx_33.ravel()]
    centre_n = depth_hw[pixel_n2[inside_n, 1], pixel_n2[inside_n, 0]]
    flat_n = (patch_n9.min(axis=1) > 0) & (np.ptp(patch_n9, axis=1) <= max_spread * centre_n)
    depth_n = np.full(len(uv_n2), np.nan)
    depth_n[np.flatnonzero(inside_n)[flat_n]] = centre_n[flat_n]
    return depth_n
