"""Camera paths of the synthetic rooms.

`LoopPath` is a closed hand-held loop around the room centre, looking outward, over a loop
parameter s in [0, 1). `Trajectory` turns it into poses over time (one loop takes time 1),
optionally with a detour to a blank wall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from mvs.geometry import look_at_world_T_cam_44, make_pose_44

WORLD_UP_3 = np.array([0.0, 0.0, 1.0])

LEAVE_S = 0.5
"""Loop parameter where the blank-wall detour leaves the loop (half way round)."""
BACKTRACK_S = 0.12
"""The loop resumes this far (loop parameter) before where it was left."""
APPROACH_TIME, HOLD_TIME, RETURN_TIME = 0.05, 0.08, 0.05
"""Durations of the detour's phases, in loops (one loop of the path takes time 1)."""
HOLD_DISTANCE_M = 0.35
"""Distance of the camera from the blank panel while it faces it."""
PANEL_HALF_2 = np.array([0.8, 0.5])
"""Half width and half height (metres) of the blank panel."""
PANEL_OFFSET_M = 0.01
"""The panel stands this far in front of its wall."""
PANEL_MARGIN_M = 0.05
"""Least distance from the panel to the room's corners, floor and ceiling."""


@dataclass
class Wiggle:
    """A smooth periodic signal over the loop parameter s in [0, 1): sum of sines."""

    amplitude_k: np.ndarray
    cycles_k: np.ndarray
    phase_k: np.ndarray

    def __call__(self, s_n: np.ndarray) -> np.ndarray:
        angle_nk = 2 * np.pi * s_n[:, None] * self.cycles_k + self.phase_k
        return np.sin(angle_nk) @ self.amplitude_k


@dataclass
class LoopPath:
    """A closed hand-held loop around the room centre, looking outward.

    The eye sits on an ellipse (semi-axes `semi_axes_2`, metres) at height `height`, moved
    by the x, y, z wiggles (metres); the view heads outward, turned by `heading` and tilted
    by `pitch` + `pitch_wiggle`, then rolled by `roll` about the optical axis (radians).
    """

    semi_axes_2: np.ndarray
    start_angle: float
    turn_sign: float
    height: float
    pitch: float
    x: Wiggle
    y: Wiggle
    z: Wiggle
    heading: Wiggle
    pitch_wiggle: Wiggle
    roll: Wiggle

    def eye_n3(self, s_n: np.ndarray) -> np.ndarray:
        """(N, 3) eye positions (world metres) at loop parameters `s_n`."""
        angle_n = self.start_angle + self.turn_sign * 2 * np.pi * s_n
        return np.stack(
            [
                self.semi_axes_2[0] * np.cos(angle_n) + self.x(s_n),
                self.semi_axes_2[1] * np.sin(angle_n) + self.y(s_n),
                self.height + self.z(s_n),
            ],
            axis=1,
        )

    def world_T_cam_n44(self, s_n: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses at loop parameters `s_n`."""
        eye_n3 = self.eye_n3(s_n)
        heading_n = self.start_angle + self.turn_sign * 2 * np.pi * s_n + self.heading(s_n)
        pitch_n = self.pitch + self.pitch_wiggle(s_n)
        roll_n = self.roll(s_n)
        view_n3 = np.stack(
            [np.cos(heading_n) * np.cos(pitch_n), np.sin(heading_n) * np.cos(pitch_n), np.sin(pitch_n)], axis=1
        )
        poses = []
        for eye_3, view_3, roll in zip(eye_n3, view_n3, roll_n):
            c, s = np.cos(roll), np.sin(roll)
            cam_T_rolled_44 = make_pose_44(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.zeros(3))
            poses.append(look_at_world_T_cam_44(eye_3, eye_3 + view_3, WORLD_UP_3) @ cam_T_rolled_44)
        return np.stack(poses)


def random_wiggle(rng: np.random.Generator, amplitude: float, cycles_low: int, cycles_high: int, terms: int) -> Wiggle:
    """Sum of `terms` sines (cycles per loop in [low, high]) with amplitudes summing to `amplitude`."""
    weight_k = rng.uniform(0.5, 1.0, terms)
    return Wiggle(amplitude * weight_k / weight_k.sum(), rng.integers(cycles_low, cycles_high + 1, terms),
                  rng.uniform(0, 2 * np.pi, terms))


def sum_wiggles(*wiggles: Wiggle) -> Wiggle:
    return Wiggle(*(np.concatenate(arrays) for arrays in zip(*((w.amplitude_k, w.cycles_k, w.phase_k) for w in wiggles))))


def random_path(rng: np.random.Generator, size_3: np.ndarray) -> LoopPath:
    """A hand-held loop: slow sway (a few cycles per loop) plus small tremor."""
    semi_axes_2 = np.array([np.clip(size_3[0] / 2 - 1.5, 0.45, 1.0), np.clip(size_3[1] / 2 - 1.5, 0.35, 0.9)])
    return LoopPath(
        semi_axes_2=semi_axes_2,
        start_angle=float(rng.uniform(0, 2 * np.pi)),
        turn_sign=float(rng.choice([-1.0, 1.0])),
        height=float(rng.uniform(1.35, 1.55)),
        pitch=float(rng.uniform(-0.25, -0.08)),
        x=sum_wiggles(random_wiggle(rng, 0.1, 2, 5, 2), random_wiggle(rng, 0.003, 20, 40, 2)),
        y=sum_wiggles(random_wiggle(rng, 0.1, 2, 5, 2), random_wiggle(rng, 0.003, 20, 40, 2)),
        z=sum_wiggles(random_wiggle(rng, 0.12, 1, 4, 2), random_wiggle(rng, 0.003, 20, 40, 2)),
        heading=sum_wiggles(random_wiggle(rng, 0.3, 2, 3, 2), random_wiggle(rng, 0.004, 20, 40, 2)),
        pitch_wiggle=sum_wiggles(random_wiggle(rng, 0.12, 2, 5, 2), random_wiggle(rng, 0.004, 20, 40, 2)),
        roll=random_wiggle(rng, 0.04, 1, 4, 2),
    )


@dataclass
class BlankWallDetour:
    """A detour from the loop to face a blank panel on a wall from close up.

    At loop parameter `leave_s` the camera leaves the loop and turns to face the panel
    (centre `panel_centre_3`, world metres, on the wall whose inward unit normal is
    `normal_3`; half extents `PANEL_HALF_2` along the wall and vertically) from
    `HOLD_DISTANCE_M`, level and unrolled; it holds still, then comes back to the loop at
    `return_s` = `leave_s` - `BACKTRACK_S`, a place it saw before it left. At that distance
    the 63 degree field of view covers 0.43 x 0.32 m of the panel, so nothing else is seen.
    """

    leave_s: float
    panel_centre_3: np.ndarray
    normal_3: np.ndarray

    @property
    def return_s(self) -> float:
        return self.leave_s - BACKTRACK_S

    @property
    def hold_world_T_cam_44(self) -> np.ndarray:
        eye_3 = self.panel_centre_3 + HOLD_DISTANCE_M * self.normal_3
        return look_at_world_T_cam_44(eye_3, self.panel_centre_3, WORLD_UP_3)

    def panel_corners_43(self) -> np.ndarray:
        """(4, 3) corners of the panel, in order around it, world metres."""
        along_3 = np.cross(WORLD_UP_3, self.normal_3)
        half_w, half_h = PANEL_HALF_2
        signs_42 = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]])
        return self.panel_centre_3 + signs_42[:, :1] * half_w * along_3 + signs_42[:, 1:] * half_h * WORLD_UP_3


def plan_blank_wall(path: LoopPath, size_3: np.ndarray) -> BlankWallDetour:
    """The detour at `LEAVE_S`: the panel goes on the wall the view meets there (seen from
    above), moved along the wall and vertically as needed to stay `PANEL_MARGIN_M` inside it."""
    world_T_cam_44 = path.world_T_cam_n44(np.array([LEAVE_S]))[0]
    eye_2 = world_T_cam_44[:2, 3]
    view_2 = world_T_cam_44[:2, 2] / np.linalg.norm(world_T_cam_44[:2, 2])
    half_2 = size_3[:2] / 2
    # Distance along the view to the wall x = +-half_x and to the wall y = +-half_y.
    distance_2 = np.array([
        (np.sign(view_2[k]) * half_2[k] - eye_2[k]) / view_2[k] if abs(view_2[k]) > 1e-9 else np.inf for k in range(2)
    ])
    axis = int(np.argmin(distance_2))
    other = 1 - axis
    hit_2 = eye_2 + distance_2[axis] * view_2
    normal_3 = np.zeros(3)
    normal_3[axis] = -np.sign(view_2[axis])
    centre_3 = np.zeros(3)
    centre_3[axis] = hit_2[axis] + PANEL_OFFSET_M * normal_3[axis]
    reach = half_2[other] - PANEL_HALF_2[0] - PANEL_MARGIN_M
    centre_3[other] = np.clip(hit_2[other], -reach, reach)
    centre_3[2] = np.clip(world_T_cam_44[2, 3], PANEL_HALF_2[1] + PANEL_MARGIN_M,
                          size_3[2] - PANEL_HALF_2[1] - PANEL_MARGIN_M)
    return BlankWallDetour(LEAVE_S, centre_3, normal_3)


@dataclass
class Trajectory:
    """Camera poses over time t (loops: one loop of `path` takes time 1), periodic.

    Without a detour the camera is at loop parameter s = t. With one, it follows the loop
    up to `detour.leave_s`, blends to the hold pose over `APPROACH_TIME`, holds for
    `HOLD_TIME`, blends back to the loop pose at `detour.return_s` over `RETURN_TIME`
    (positions linearly, rotations by slerp, both eased in and out) and follows the loop
    again from there to its end.
    """

    path: LoopPath
    detour: BlankWallDetour | None = None

    @property
    def period(self) -> float:
        """Time of one lap."""
        if self.detour is None:
            return 1.0
        return 1.0 + APPROACH_TIME + HOLD_TIME + RETURN_TIME + BACKTRACK_S

    def phase_starts_4(self) -> np.ndarray:
        """Times at which the detour's approach, hold, return and the loop again begin."""
        leave = self.detour.leave_s
        return np.cumsum([leave, APPROACH_TIME, HOLD_TIME, RETURN_TIME])

    def holding_n(self, t_n: np.ndarray) -> np.ndarray:
        """(N,) bool: the camera faces the blank panel from the hold pose at times `t_n`."""
        if self.detour is None:
            return np.zeros(len(t_n), dtype=bool)
        t_n = np.mod(t_n, self.period)
        _, hold_start, return_start, _ = self.phase_starts_4()
        return (t_n >= hold_start) & (t_n < return_start)

    def world_T_cam_n44(self, t_n: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses at times `t_n`."""
        s_n, blends = self._loop_and_blends(t_n)
        world_T_cam_n44 = self.path.world_T_cam_n44(s_n)
        for inside_n, from_44, to_44, weight_m in blends:
            world_T_cam_n44[inside_n] = _blend_n44(from_44, to_44, weight_m)
        return world_T_cam_n44

    def eye_n3(self, t_n: np.ndarray) -> np.ndarray:
        """(N, 3) camera centres (world metres) at times `t_n`; cheaper than the poses."""
        s_n, blends = self._loop_and_blends(t_n)
        eye_n3 = self.path.eye_n3(s_n)
        for inside_n, from_44, to_44, weight_m in blends:
            eye_n3[inside_n] = _blend_n44(from_44, to_44, weight_m)[:, :3, 3]
        return eye_n3

    def _loop_and_blends(self, t_n: np.ndarray) -> tuple[np.ndarray, list]:
        """The loop parameter (N,) of every time, and for each detour phase the times in it
        (a mask over N), the poses it blends from and to, and the eased weights of those times."""
        t_n = np.mod(np.asarray(t_n, dtype=np.float64), self.period)
        if self.detour is None:
            return t_n, []
        detour = self.detour
        approach_start, hold_start, return_start, loop_again = self.phase_starts_4()
        s_n = np.where(t_n < approach_start, t_n, t_n - loop_again + detour.return_s)
        leave_44, back_44 = self.path.world_T_cam_n44(np.array([detour.leave_s, detour.return_s]))
        hold_44 = detour.hold_world_T_cam_44
        blends = []
        for start, end, from_44, to_44 in [(approach_start, hold_start, leave_44, hold_44),
                                           (hold_start, return_start, hold_44, hold_44),
                                           (return_start, loop_again, hold_44, back_44)]:
            inside_n = (t_n >= start) & (t_n < end)
            blends.append((inside_n, from_44, to_44, _ease_n((t_n[inside_n] - start) / (end - start))))
        return s_n, blends


def _ease_n(x_n: np.ndarray) -> np.ndarray:
    """Smoothstep: 0 to 1 with zero slope at both ends."""
    return x_n * x_n * (3 - 2 * x_n)


def _blend_n44(a_44: np.ndarray, b_44: np.ndarray, weight_n: np.ndarray) -> np.ndarray:
    """(N, 4, 4) poses from `a_44` (weight 0) to `b_44` (weight 1): centres linearly, rotations by slerp."""
    slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([a_44[:3, :3], b_44[:3, :3]])))
    world_T_cam_n44 = np.tile(np.eye(4), (len(weight_n), 1, 1))
    world_T_cam_n44[:, :3, :3] = slerp(weight_n).as_matrix()
    world_T_cam_n44[:, :3, 3] = (1 - weight_n)[:, None] * a_44[:3, 3] + weight_n[:, None] * b_44[:3, 3]
    return world_T_cam_n44
