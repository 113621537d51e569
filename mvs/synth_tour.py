"""A camera tour of a synthetic room for training data: views across the room and close-ups.

The loop of `mvs/synth_paths.py` circles the room centre looking outward, so its views see
the walls and furniture from 1-3 m. A tour instead visits keyposes chosen to look at the
room's surfaces from distances drawn log-uniformly in [`NEAREST_VIEW_M`, `FARTHEST_VIEW_M`]
(as far as the room allows): close-ups of a table top or a shelf at arm's length, views
across the room at a few metres, the far wall of a large room. Between keyposes the camera
moves straight and turns its heading and pitch (never its roll), eased in and out, with a
small hand-held tremor. Every camera centre on the tour keeps `CLEARANCE_M` from all
geometry, so nothing in view is nearer than about a quarter of a metre.

World frame and pose conventions as in `mvs/synth.py` (metres, +z up, floor at z = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from mvs.geometry import look_at_world_T_cam_44, make_pose_44
from mvs.synth_paths import WORLD_UP_3, Wiggle, random_wiggle

NEAREST_VIEW_M, FARTHEST_VIEW_M = 0.35, 9.0
"""Range of the distance from a keypose's camera to the surface point it looks at."""
CLEARANCE_M = 0.3
"""Least distance from any camera centre on the tour to the room's geometry."""
EYE_HEIGHT_RANGE_M = (0.35, 2.1)
PITCH_RANGE_RAD = (-1.2, 0.45)
"""Keyposes look at most ~69 degrees down and ~26 degrees up."""
ROTATION_COST_M_PER_RAD = 1.5
"""A turn of one radian takes as long as 1.5 m of travel."""
DWELL_COST_M = 0.2
"""Extra time at every keypose, in metres of travel."""
SEGMENT_STEP_M = 0.05


@dataclass
class Keypose:
    """A camera centre `eye_3` (world metres) and a view heading (yaw about +z from +x),
    pitch (up positive) and roll, in radians."""

    eye_3: np.ndarray
    yaw: float
    pitch: float
    roll: float


@dataclass
class TourPath:
    """A closed tour through `keyposes`, one lap over time [0, 1) (see the module docstring).

    Transition k goes from keypose k to keypose k + 1 (the last back to the first) and starts
    at `start_times_k[k]`; `tremor_6` adds hand-held wiggles to the eye (x, y, z, metres) and
    to heading, pitch and roll (radians). Offers the time interface of
    `synth_paths.Trajectory` (`period`, `world_T_cam_n44`, `eye_n3`, `holding_n`).
    """

    keyposes: list[Keypose]
    start_times_k: np.ndarray
    tremor_6: list[Wiggle]

    @property
    def period(self) -> float:
        return 1.0

    def holding_n(self, t_n: np.ndarray) -> np.ndarray:
        """(N,) bool: never true, a tour has no blank-wall hold."""
        return np.zeros(len(np.atleast_1d(t_n)), dtype=bool)

    def _state_n6(self, t_n: np.ndarray) -> np.ndarray:
        """(N, 6) eye x, y, z, yaw, pitch, roll at times `t_n` (loops)."""
        t_n = np.mod(np.asarray(t_n, dtype=np.float64), 1.0)
        ends_k = np.r_[self.start_times_k[1:], 1.0]
        k_n = np.searchsorted(self.start_times_k, t_n, side="right") - 1
        fraction_n = (t_n - self.start_times_k[k_n]) / (ends_k[k_n] - self.start_times_k[k_n])
        weight_n = fraction_n * fraction_n * (3 - 2 * fraction_n)
        states_k6 = np.array([[*p.eye_3, p.yaw, p.pitch, p.roll] for p in self.keyposes])
        from_n6, to_n6 = states_k6[k_n], states_k6[(k_n + 1) % len(states_k6)]
        delta_n6 = to_n6 - from_n6
        delta_n6[:, 3] = np.angle(np.exp(1j * delta_n6[:, 3]))  # the shorter way round
        state_n6 = from_n6 + weight_n[:, None] * delta_n6
        return state_n6 + np.stack([wiggle(t_n) for wiggle in self.tremor_6], axis=1)

    def eye_n3(self, t_n: np.ndarray) -> np.ndarray:
        """(N, 3) camera centres (world metres) at times `t_n`."""
        return self._state_n6(t_n)[:, :3]

    def world_T_cam_n44(self, t_n: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses at times `t_n`."""
        return np.stack([pose_44(*state_6) for state_6 in self._state_n6(t_n)])


def pose_44(x: float, y: float, z: float, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world pose at (x, y, z) looking along heading `yaw` and `pitch`, rolled by
    `roll` about its optical axis (radians)."""
    eye_3 = np.array([x, y, z])
    view_3 = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    c, s = np.cos(roll), np.sin(roll)
    rolled_44 = make_pose_44(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.zeros(3))
    return look_at_world_T_cam_44(eye_3, eye_3 + view_3, WORLD_UP_3) @ rolled_44


class FreeSpace:
    """Where a camera may be in a room of extents `size_3` (metres) holding `scene`'s geometry."""

    def __init__(self, scene: o3d.t.geometry.RaycastingScene, size_3: np.ndarray) -> None:
        self.scene = scene
        self.size_3 = np.asarray(size_3, dtype=np.float64)

    def cast_n(self, origins_n3: np.ndarray, directions_n3: np.ndarray) -> np.ndarray:
        """(N,) distance along unit `directions_n3` to the first surface (inf: none)."""
        rays_n6 = np.concatenate([origins_n3, directions_n3], axis=1).astype(np.float32)
        return self.scene.cast_rays(o3d.core.Tensor(rays_n6))["t_hit"].numpy().astype(np.float64)

    def free_n(self, points_n3: np.ndarray, clearance: float) -> np.ndarray:
        """(N,) bool: inside the room, `clearance` metres from every surface, and not inside
        or under a piece of furniture (straight up, the first surface is the ceiling)."""
        points_n3 = np.atleast_2d(points_n3)
        half_2 = self.size_3[:2] / 2
        inside_n = (
            np.all(np.abs(points_n3[:, :2]) < half_2 - clearance, axis=1)
            & (points_n3[:, 2] > clearance)
            & (points_n3[:, 2] < self.size_3[2] - clearance)
        )
        free_n = np.zeros(len(points_n3), dtype=bool)
        if inside_n.any():
            inside_m3 = points_n3[inside_n]
            distance_m = self.scene.compute_distance(o3d.core.Tensor(inside_m3.astype(np.float32))).numpy()
            up_m = self.cast_n(inside_m3, np.tile(WORLD_UP_3, (len(inside_m3), 1)))
            free_n[inside_n] = (distance_m >= clearance) & (up_m >= self.size_3[2] - inside_m3[:, 2] - 1e-3)
        return free_n

    def segment_free(self, a_3: np.ndarray, b_3: np.ndarray, clearance: float) -> bool:
        """Whether every point of the straight segment a-b (sampled every `SEGMENT_STEP_M`) is free."""
        steps = max(2, int(np.ceil(np.linalg.norm(b_3 - a_3) / SEGMENT_STEP_M)) + 1)
        weights_n = np.linspace(0.0, 1.0, steps)[:, None]
        return bool(np.all(self.free_n((1 - weights_n) * a_3 + weights_n * b_3, clearance)))


class SurfaceSampler:
    """Random points on groups of triangles (world metres), uniform over each group's area;
    `weights_g` is how often each group is drawn."""

    def __init__(self, groups: list[tuple[np.ndarray, np.ndarray]], weights_g: list[float]) -> None:
        self.triangles_g = [vertices_v3[triangles_t3] for vertices_v3, triangles_t3 in groups]
        self.areas_g = [np.linalg.norm(np.cross(t_t33[:, 1] - t_t33[:, 0], t_t33[:, 2] - t_t33[:, 0]), axis=1)
                        for t_t33 in self.triangles_g]
        weights_g = np.asarray(weights_g, dtype=np.float64) * np.array([len(t) > 0 for t in self.triangles_g])
        self.weights_g = weights_g / weights_g.sum()

    def point_3(self, rng: np.random.Generator) -> np.ndarray:
        group = int(rng.choice(len(self.weights_g), p=self.weights_g))
        areas_t = self.areas_g[group]
        t_33 = self.triangles_g[group][rng.choice(len(areas_t), p=areas_t / areas_t.sum())]
        a, b = rng.uniform(size=2)
        if a + b > 1:
            a, b = 1 - a, 1 - b
        return t_33[0] + a * (t_33[1] - t_33[0]) + b * (t_33[2] - t_33[0])


def random_keypose(rng: np.random.Generator, space: FreeSpace, targets: SurfaceSampler, tries: int = 400) -> Keypose:
    """A keypose looking at a random surface point of `targets` from a log-uniform distance
    (shortened as the room requires), along a random heading and pitch, from a free place
    whose view of the point nothing blocks."""
    size_3 = space.size_3
    distance = float(np.exp(rng.uniform(np.log(NEAREST_VIEW_M), np.log(FARTHEST_VIEW_M))))
    for attempt in range(tries):
        if attempt and attempt % 40 == 0:
            distance = max(NEAREST_VIEW_M, 0.75 * distance)
        yaw, pitch = rng.uniform(-np.pi, np.pi), rng.uniform(*PITCH_RANGE_RAD)
        view_3 = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
        eye_3 = targets.point_3(rng) - distance * view_3
        if not (EYE_HEIGHT_RANGE_M[0] <= eye_3[2] <= EYE_HEIGHT_RANGE_M[1]) or not space.free_n(eye_3[None], CLEARANCE_M)[0]:
            continue
        if space.cast_n(eye_3[None], view_3[None])[0] >= distance - 0.02:
            return Keypose(eye_3, float(yaw), float(pitch), float(rng.normal(0.0, 0.03)))
    raise ValueError(f"room of {size_3.round(2).tolist()} m: found no free camera position in {tries} tries")


def plan_tour(
    rng: np.random.Generator, space: FreeSpace, targets: SurfaceSampler, keyposes: int
) -> TourPath:
    """A closed tour through `keyposes` random keyposes looking at points of `targets`,
    whose straight moves keep clear of `space`'s geometry; transitions take time in
    proportion to their travel and turning."""
    size_3 = space.size_3
    chosen: list[Keypose] = []
    for _ in range(50 * keyposes):
        if len(chosen) == keyposes:
            break
        candidate = random_keypose(rng, space, targets)
        if chosen and not space.segment_free(chosen[-1].eye_3, candidate.eye_3, CLEARANCE_M):
            continue
        if len(chosen) == keyposes - 1 and not space.segment_free(candidate.eye_3, chosen[0].eye_3, CLEARANCE_M):
            continue
        chosen.append(candidate)
    if len(chosen) < keyposes:
        raise ValueError(f"room of {np.round(size_3, 2).tolist()} m: could not link {keyposes} keyposes by free moves")
    costs_k = []
    for a, b in zip(chosen, chosen[1:] + chosen[:1]):
        turn = abs(np.angle(np.exp(1j * (b.yaw - a.yaw)))) + abs(b.pitch - a.pitch)
        costs_k.append(np.linalg.norm(b.eye_3 - a.eye_3) + ROTATION_COST_M_PER_RAD * turn + DWELL_COST_M)
    start_times_k = np.r_[0.0, np.cumsum(costs_k)[:-1]] / np.sum(costs_k)
    tremor_6 = [random_wiggle(rng, amplitude, 20, 40, 2) for amplitude in (0.006, 0.006, 0.006, 0.004, 0.004, 0.004)]
    return TourPath(chosen, start_times_k, tremor_6)
