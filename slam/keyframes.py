"""Keyframe selection and source-frame planning for multi-view stereo.

Poses are `world_T_cam_44` (camera-to-world, metres). The distance between two poses is the
one of DeepVideoMVS: sqrt(||t_rel||^2 + (2/3) trace(I - R_rel)) for the relative motion
(R_rel, t_rel), so 0.1 is about 10 cm of translation or 7 degrees of rotation.

Parallax is camera travel over depth: the planner measures travel in units of the scene's
depth (`KeyframeConfig.depth_scale`), so its distances, given for a room seen at
`reference_depth`, give a desk seen from 0.4 m the same parallax with baselines six times
shorter, and a trajectory in the tracker's own units the same plan as in metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from mvs.geometry import invert_pose_44
from mvs.types import Camera

KEYFRAME_MODES = ("auto", "all")


@dataclass
class KeyframeConfig:
    """How references and their sources are chosen.

    new_keyframe_distance: pose distance from the last keyframe that makes a new keyframe.
    min_distance, max_distance: pose distances a source may have to its reference.
    optimal_distance: the preferred distance; sources closest to it are chosen first.
    max_view_angle_deg: largest angle between the optical axes of reference and source.
    min_overlap: share of the reference's view (sampled at `overlap_depths`, metres) that a
        source must see. A run measures the overlap at the scene's own depths
        (mvs/depth_range.py); these defaults serve where none are known.
    max_sources: at most this many sources per reference. The learned model is trained with
        2 and averages its matching costs over however many it is given; 4 lower the learned
        AbsRel on redkitchen 0:1000:2 from 0.100 to 0.097, on the tabletop from 0.198 to 0.195
        and on the synthetic room from 0.0136 to 0.0116 (GT poses, mesh F-score within 0.002),
        and `--adapt`, whose photometric loss takes the minimum over the sources, gains more
        on redkitchen (-8 % instead of -4 %; the tabletop -8 to -13 % over two runs, against
        -9 %), for about 1.8 times the depth stage's time (redkitchen: 24-27 s -> 43-50 s).
    min_translation: sources closer than this to the reference (camera travel) are
        used only when no candidate is farther: turning on the spot gives no parallax.
    search_keyframes: in `auto` mode, how many keyframes around each keyframe are candidates.
    reference_depth: the scene's median depth (metres) the distances above are given for;
        travel counts relative to the median of `overlap_depths` (`depth_scale`). 2.3 m is
        the median depth of the corners triangulated in the synthetic room the distances were
        chosen and the model trained on (room0: 2.28 m; the kitchen: 2.40 m).
    fallback_min_overlap, fallback_min_parallax_px: when no candidate meets the limits above
        (they choose the best of many views, and a reference with few neighbours may have
        none within them: two frames 2 cm apart, or turned past the angle limit), the
        reference still takes the candidates that see at least this share of its view and
        whose camera travel tells the nearest of `overlap_depths` from the farthest by at
        least this many pixels of parallax; others give no depth to measure.
    """

    new_keyframe_distance: float = 0.1
    min_distance: float = 0.05
    max_distance: float = 0.6
    optimal_distance: float = 0.2
    max_view_angle_deg: float = 30.0
    min_overlap: float = 0.5
    max_sources: int = 4
    search_keyframes: int = 12
    min_translation: float = 0.1
    overlap_depths: tuple[float, ...] = (1.0, 2.3, 4.0)
    reference_depth: float = 2.3
    fallback_min_overlap: float = 0.1
    fallback_min_parallax_px: float = 1.0

    @property
    def scene_depth(self) -> float:
        """The scene's median depth: the median of `overlap_depths`."""
        return float(np.median(self.overlap_depths))

    @property
    def depth_scale(self) -> float:
        """`scene_depth` over `reference_depth`: camera travel is divided by it before the
        distances above apply (1 for the defaults)."""
        return self.scene_depth / self.reference_depth


@dataclass(frozen=True)
class KeyframePlan:
    """A reference frame and the source frames to sweep it with (positions in the pose list)."""

    reference_index: int
    source_indices: tuple[int, ...]


@dataclass
class KeyframeSelection:
    """The result of planning: one plan per reference that found overlapping sources.

    keyframe_indices: positions of every selected keyframe (in `all` mode, every frame).
    unplanned_indices: keyframes that got no plan because no candidate overlapped enough.
    """

    plans: list[KeyframePlan] = field(default_factory=list)
    keyframe_indices: list[int] = field(default_factory=list)
    unplanned_indices: list[int] = field(default_factory=list)


def pose_distance(world_T_a_44: np.ndarray, world_T_b_44: np.ndarray) -> float:
    """sqrt(||t||^2 + (2/3) trace(I - R)) of the relative motion a_T_b (metres, unitless)."""
    return float(pose_distances_n(world_T_a_44, np.asarray(world_T_b_44)[None])[0])


def pose_distances_n(world_T_a_44: np.ndarray, world_T_b_n44: np.ndarray) -> np.ndarray:
    """`pose_distance` from one pose a to each of N poses b: (N,)."""
    a_T_b_n44 = invert_pose_44(world_T_a_44)[None] @ world_T_b_n44
    rotation_term_n = (2.0 / 3.0) * (3.0 - np.trace(a_T_b_n44[:, :3, :3], axis1=1, axis2=2))
    return np.sqrt(np.sum(a_T_b_n44[:, :3, 3] ** 2, axis=1) + np.maximum(rotation_term_n, 0.0))


def view_angles_deg_n(world_T_a_44: np.ndarray, world_T_b_n44: np.ndarray) -> np.ndarray:
    """Angles in degrees between the optical axis (z) of camera a and those of N cameras b."""
    cosine_n = np.clip(world_T_b_n44[:, :3, 2] @ world_T_a_44[:3, 2], -1.0, 1.0)
    return np.degrees(np.arccos(cosine_n))


def view_overlaps_n(
    world_T_ref_44: np.ndarray, world_T_src_n44: np.ndarray, camera: Camera, depths: tuple[float, ...]
) -> np.ndarray:
    """(N,) share of reference pixels (an 8 x 6 grid at each of `depths`, metres) each source sees."""
    u_g, v_g = np.meshgrid(
        (np.arange(8) + 0.5) * camera.width / 8 - 0.5, (np.arange(6) + 0.5) * camera.height / 6 - 0.5
    )
    rays_g3 = np.stack([u_g.ravel(), v_g.ravel(), np.ones(u_g.size)], axis=1) @ np.linalg.inv(camera.K_33).T
    points_ref_m3 = np.concatenate([rays_g3 * depth for depth in depths])
    src_T_ref_n44 = np.linalg.inv(world_T_src_n44) @ world_T_ref_44
    points_src_nm3 = points_ref_m3[None] @ src_T_ref_n44[:, :3, :3].transpose(0, 2, 1) + src_T_ref_n44[:, None, :3, 3]
    z_nm = points_src_nm3[..., 2]
    in_front_nm = z_nm > 1e-6
    pixels_nm3 = points_src_nm3 @ camera.K_33.T
    z_safe_nm = np.where(in_front_nm, z_nm, 1.0)
    u_nm = pixels_nm3[..., 0] / z_safe_nm
    v_nm = pixels_nm3[..., 1] / z_safe_nm
    inside_nm = (
        in_front_nm & (u_nm >= 0) & (u_nm <= camera.width - 1) & (v_nm >= 0) & (v_nm <= camera.height - 1)
    )
    return inside_nm.mean(axis=1)


def choose_sources(
    world_T_cam_n44: list[np.ndarray],
    reference_index: int,
    candidate_indices: list[int],
    camera: Camera,
    config: KeyframeConfig,
) -> tuple[int, ...]:
    """The at most `max_sources` candidates that overlap the reference, best first.

    A candidate qualifies with a pose distance in [min_distance, max_distance], a view angle
    of at most max_view_angle_deg and a view overlap of at least min_overlap; qualified
    candidates are ranked by |distance - optimal_distance|.
    """
    if not candidate_indices:
        return ()
    world_T_ref_44 = world_T_cam_n44[reference_index]
    world_T_src_c44 = np.stack([world_T_cam_n44[i] for i in candidate_indices])
    distances_c = pose_distances_n(world_T_ref_44, world_T_src_c44)
    keep_c = (
        (distances_c >= config.min_distance)
        & (distances_c <= config.max_distance)
        & (view_angles_deg_n(world_T_ref_44, world_T_src_c44) <= config.max_view_angle_deg)
    )
    keep_c = _overlapping_c(keep_c, world_T_ref_44, world_T_src_c44, camera, config.overlap_depths, config.min_overlap)
    return _best_sources(candidate_indices, world_T_ref_44, world_T_src_c44, keep_c, config)


def fallback_sources(
    world_T_cam_n44: list[np.ndarray],
    reference_index: int,
    candidate_indices: list[int],
    camera: Camera,
    config: KeyframeConfig,
) -> tuple[int, ...]:
    """The sources of a reference for which `choose_sources` finds none: the at most
    `max_sources` candidates, ranked as there, that see at least `fallback_min_overlap` of the
    reference's view and whose camera travel gives a parallax of at least
    `fallback_min_parallax_px` between the nearest and the farthest of `overlap_depths`
    (fx * travel * (1 / nearest - 1 / farthest), pixels), whatever their pose distance and
    view angle."""
    if not candidate_indices:
        return ()
    world_T_ref_44 = world_T_cam_n44[reference_index]
    world_T_src_c44 = np.stack([world_T_cam_n44[i] for i in candidate_indices])
    translations_c = np.linalg.norm(world_T_src_c44[:, :3, 3] - world_T_ref_44[:3, 3], axis=1)
    parallax_px_c = camera.fx * translations_c * (1.0 / min(config.overlap_depths) - 1.0 / max(config.overlap_depths))
    keep_c = parallax_px_c >= config.fallback_min_parallax_px
    keep_c = _overlapping_c(
        keep_c, world_T_ref_44, world_T_src_c44, camera, config.overlap_depths, config.fallback_min_overlap
    )
    return _best_sources(candidate_indices, world_T_ref_44, world_T_src_c44, keep_c, config)


def _overlapping_c(
    keep_c: np.ndarray,
    world_T_ref_44: np.ndarray,
    world_T_src_c44: np.ndarray,
    camera: Camera,
    overlap_depths: tuple[float, ...],
    min_overlap: float,
) -> np.ndarray:
    """`keep_c` (C,) narrowed to the candidates that see at least `min_overlap` of the
    reference's view (`view_overlaps_n`, measured only for those kept so far)."""
    keep_c = keep_c.copy()
    if keep_c.any():
        keep_c[keep_c] = view_overlaps_n(world_T_ref_44, world_T_src_c44[keep_c], camera, overlap_depths) >= min_overlap
    return keep_c


def _best_sources(
    candidate_indices: list[int],
    world_T_ref_44: np.ndarray,
    world_T_src_c44: np.ndarray,
    keep_c: np.ndarray,
    config: KeyframeConfig,
) -> tuple[int, ...]:
    """The kept candidates, those the camera travelled at least `min_translation` to first
    when there are any, ranked by |pose distance - optimal_distance|, at most `max_sources`."""
    distances_c = pose_distances_n(world_T_ref_44, world_T_src_c44)
    translations_c = np.linalg.norm(world_T_src_c44[:, :3, 3] - world_T_ref_44[:3, 3], axis=1)
    travelled_c = keep_c & (translations_c >= config.min_translation)
    if travelled_c.any():
        keep_c = travelled_c
    order_k = np.argsort(np.abs(distances_c[keep_c] - config.optimal_distance), kind="stable")
    return tuple(int(i) for i in np.asarray(candidate_indices)[keep_c][order_k][: config.max_sources])


def select_keyframes(
    world_T_cam_n44: list[np.ndarray], camera: Camera, config: KeyframeConfig, mode: str = "auto"
) -> KeyframeSelection:
    """Plan references and sources over a trajectory (positions index `world_T_cam_n44`).

    `auto`: a frame becomes a keyframe when its pose distance to the last keyframe reaches
    `new_keyframe_distance` (the first frame is one); each keyframe takes its sources among
    the `search_keyframes` keyframes nearest to it in order, half before and half after (the
    whole trajectory is known before depth is estimated, so later views count as much as
    earlier ones). `all`: every frame is a reference and takes its sources among all other
    frames, earlier and later. A reference none of whose candidates meets the limits of
    `choose_sources` takes the `fallback_sources` among them, and gets no plan only when
    none of them shares its view either.
    """
    if mode not in KEYFRAME_MODES:
        raise ValueError(f"keyframe mode: expected one of {KEYFRAME_MODES}, got {mode!r}")
    if config.max_sources < 1:
        raise ValueError(f"max_sources: expected >= 1, got {config.max_sources}")
    for position, world_T_cam_44 in enumerate(world_T_cam_n44):
        if np.asarray(world_T_cam_44).shape != (4, 4) or not np.all(np.isfinite(world_T_cam_44)):
            raise ValueError(f"pose {position}: expected a finite 4x4 camera-to-world matrix")
    if not config.depth_scale > 0:
        raise ValueError(f"overlap_depths, reference_depth: expected positive depths, got "
                         f"{config.overlap_depths} and {config.reference_depth}")
    world_T_cam_n44, config = _in_scene_depth_units(world_T_cam_n44, config)
    selection = KeyframeSelection()
    if mode == "all":
        everything = list(range(len(world_T_cam_n44)))
        for reference_index in everything:
            candidates = [index for index in everything if index != reference_index]
            _add_plan(selection, world_T_cam_n44, reference_index, candidates, camera, config)
        return selection
    keyframes: list[int] = []
    for position, world_T_cam_44 in enumerate(world_T_cam_n44):
        if not keyframes or pose_distance(world_T_cam_n44[keyframes[-1]], world_T_cam_44) >= config.new_keyframe_distance:
            keyframes.append(position)
    before = config.search_keyframes - config.search_keyframes // 2
    for k, position in enumerate(keyframes):
        candidates = keyframes[max(k - before, 0) : k] + keyframes[k + 1 : k + 1 + config.search_keyframes // 2]
        _add_plan(selection, world_T_cam_n44, position, candidates, camera, config)
    return selection


def _in_scene_depth_units(
    world_T_cam_n44: list[np.ndarray], config: KeyframeConfig
) -> tuple[list[np.ndarray], KeyframeConfig]:
    """The poses with their translations, and `config` with its overlap depths, divided by
    `config.depth_scale`: the scene then lies at `reference_depth`, and every distance and
    overlap the planner measures is one of parallax. Angles and pixels do not change."""
    scale = config.depth_scale
    scaled_n44 = [np.asarray(world_T_cam_44, dtype=np.float64).copy() for world_T_cam_44 in world_T_cam_n44]
    for world_T_cam_44 in scaled_n44:
        world_T_cam_44[:3, 3] /= scale
    return scaled_n44, replace(config, overlap_depths=tuple(depth / scale for depth in config.overlap_depths))


def _add_plan(
    selection: KeyframeSelection,
    world_T_cam_n44: list[np.ndarray],
    reference_index: int,
    candidates: list[int],
    camera: Camera,
    config: KeyframeConfig,
) -> None:
    selection.keyframe_indices.append(reference_index)
    sources = choose_sources(world_T_cam_n44, reference_index, candidates, camera, config) or fallback_sources(
        world_T_cam_n44, reference_index, candidates, camera, config
    )
    if sources:
        selection.plans.append(KeyframePlan(reference_index, sources))
    else:
        selection.unplanned_indices.append(reference_index)
