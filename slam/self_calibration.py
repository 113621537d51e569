"""The focal length of a camera from its own frames, for inputs that come without intrinsics
or only with their dataset's nominal ones (`mvs.io.settings.focal_from_frames`).

A video or an image folder with no calibration still shows how the camera's view changes as
it moves, and only one focal length explains those changes with a rigid scene. The first
frames are tracked with a guessed focal length (the principal point at the image centre,
square pixels); the keyframes and map points of the main piece are then bundle-adjusted
again with the focal length scaled by each of a geometric range of factors. The
reprojection error of the adjusted map is lowest near the true focal length: away from it
the rays of a point seen from keyframes that turned cannot meet. Errors are truncated at the
adjustment's outlier threshold so that every factor is scored on the same observations. A
coarse grid over the range, a finer one around its best factor and a parabola through the
three best (in log factor) give the estimate.

From the default guess (`GUESS_FIELD_OF_VIEW_DEG`) the estimate is 0.5 % short on the
synthetic room (525 px), 1.3 % long on the tabletop sample (615 px) and 541 px on the 7-Scenes
kitchen, whose nominal value is 525 px and whose images COLMAP's self-calibration puts at
538.5 px. The estimate leans towards the focal length the map was tracked with where the
motion constrains it weakly: from guesses of 384 and 554 px the kitchen's first frames give
534 and 553 px.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from tqdm import tqdm

from mvs.io.intrinsics import HOW_TO_GIVE_INTRINSICS
from mvs.types import Camera, Sequence
from slam.backend import window_observations
from slam.bundle import bundle_adjust
from slam.bundle_problem import BundleConfig
from slam.frontend import MonocularTracker
from slam.pieces import pieces_of_frames
from slam.vo_config import VOConfig


@dataclass
class FocalSearchConfig:
    """frames, keyframes: the first frames tracked, until the map holds that many keyframes
    (which bounds the time the search takes); low, high: the range of factors of the guessed
    focal length searched; coarse_steps: factors of the geometric grid over that range;
    fine_steps: factors of the finer grid spanning one coarse step on each side of the best;
    min_keyframes: the fewest keyframes of the main piece an estimate needs; bundle: the
    adjustment at each factor."""

    frames: int = 150
    keyframes: int = 40
    low: float = 0.5
    high: float = 2.0
    coarse_steps: int = 13
    fine_steps: int = 5
    min_keyframes: int = 8
    bundle: BundleConfig = field(default_factory=lambda: BundleConfig(iterations=15, rounds=2))


@dataclass
class FocalEstimate:
    """focal_px: the estimated focal length (pixels of the input's images); guess_px: the
    focal length the frames were tracked with; factors_s (S,) and errors_s (S,): each factor
    of the guess tried and the truncated RMS reprojection error (tracking pixels) of the map
    adjusted with it; frames, keyframes, observations: what the map was made of; seconds:
    wall time of the whole estimate."""

    focal_px: float
    guess_px: float
    factors_s: np.ndarray
    errors_s: np.ndarray
    frames: int
    keyframes: int
    observations: int
    seconds: float

    def describe(self) -> str:
        """The estimate and its evidence in a few words."""
        return (
            f"estimated from the first {self.frames} frames: a map of {self.keyframes} keyframes and "
            f"{self.observations} observations reprojects best (RMS {self.errors_s.min():.2f} px) at "
            f"fx = fy = {self.focal_px:.1f} px, searched from {self.factors_s.min() * self.guess_px:.0f} to "
            f"{self.factors_s.max() * self.guess_px:.0f} px; principal point at the image centre"
        )


GUESS_FIELD_OF_VIEW_DEG = 65.0
"""The horizontal field of view the search starts from (across the longer image side): a
phone's main camera or a webcam; the search spans a quarter to four times its focal length."""


class CalibrationFailed(ValueError):
    """The frames did not give a map to estimate the focal length from."""


def centred_camera(focal_px: float, width: int, height: int) -> Camera:
    """A pinhole camera with square pixels of focal length `focal_px` and its principal point
    at the image centre (pixel centres at integers)."""
    K_33 = np.array([[focal_px, 0.0, (width - 1) / 2], [0.0, focal_px, (height - 1) / 2], [0.0, 0.0, 1.0]])
    return Camera(K_33, width, height)


def guessed_camera(width: int, height: int) -> Camera:
    """The camera the search starts from: `GUESS_FIELD_OF_VIEW_DEG` across the longer side."""
    focal_px = max(width, height) / 2 / np.tan(np.deg2rad(GUESS_FIELD_OF_VIEW_DEG) / 2)
    return centred_camera(float(focal_px), width, height)


def estimate_focal(
    sequence: Sequence, config: FocalSearchConfig | None = None, vo: VOConfig | None = None, progress: bool = True
) -> FocalEstimate:
    """The focal length of `sequence`'s camera from its first frames (see the module
    docstring), tracked with `sequence.camera` as the guess. Raises CalibrationFailed when the
    tracking gives no map of `min_keyframes` keyframes, or when the error is lowest at an end
    of the range searched (the focal length would be a guess)."""
    config = config or FocalSearchConfig()
    start = time.perf_counter()
    prefix = replace(sequence, indices=sequence.indices[: config.frames])
    tracker = MonocularTracker(sequence.camera, vo)
    frames = 0
    for frame in tqdm(prefix, total=len(prefix), desc="focal length: tracking", unit="frame", disable=not progress):
        tracker.process(frame.index, frame.image_hw3, None)
        frames += 1
        if len(tracker.map.keyframes) >= config.keyframes:
            break
    tracker.adjust_globally()
    world = tracker.map
    _, main = pieces_of_frames(world, tracker.history)
    positions = world.piece_positions(main)
    if len(positions) < config.min_keyframes:
        raise CalibrationFailed(
            f"{sequence.root}: the first {frames} frames gave {len(positions)} keyframes in one map, fewer than the "
            f"{config.min_keyframes} a focal length estimate needs (the camera must move through a textured scene); "
            f"{HOW_TO_GIVE_INTRINSICS}"
        )
    # Every observation of the map, the tracker's outliers too: outliers judged at the guessed
    # focal length would favour it, and the truncated errors keep true outliers from weighing.
    for k in positions:
        world.keyframes[k].valid_n[:] = True
    observations = window_observations(world, positions, world.observed_point_ids_n(positions))
    cam_T_world_k44 = np.stack([world.keyframes[k].cam_T_world_44 for k in positions])
    points_n3 = world.points.xyz_n3[observations.point_ids_n]
    fixed_k = np.arange(len(positions)) == 0

    def error(factor: float) -> float:
        K_33 = tracker.K_33.copy()
        K_33[:2, :2] *= factor
        result = bundle_adjust(
            K_33, cam_T_world_k44, points_n3, observations.cam_index_m, observations.point_index_m,
            observations.uv_m2, fixed_k, config.bundle,
        )
        return float(np.sqrt(np.mean(np.minimum(result.errors_m, config.bundle.outlier_px) ** 2)))

    coarse_s = np.geomspace(config.low, config.high, config.coarse_steps)
    step = (config.high / config.low) ** (1 / max(config.coarse_steps - 1, 1))
    tried: dict[float, float] = {}
    bar = tqdm(total=config.coarse_steps + config.fine_steps, desc="focal length: search", unit="factor", disable=not progress)
    for factor in coarse_s:
        tried[float(factor)] = error(float(factor))
        bar.update(1)
    best = min(tried, key=tried.get)
    guess_px = float(sequence.camera.K_33[0, 0])
    if best in (coarse_s[0], coarse_s[-1]):
        bar.close()
        raise CalibrationFailed(
            f"{sequence.root}: the reprojection error of the first {frames} frames' map still falls at the end of "
            f"the focal lengths searched ({best * guess_px:.0f} px, {config.low:g}-{config.high:g} times "
            f"{guess_px:.0f} px): the camera's is outside that range, or the motion does not constrain it; "
            f"{HOW_TO_GIVE_INTRINSICS}"
        )
    for factor in np.geomspace(best / step, best * step, config.fine_steps):
        if float(factor) not in tried:
            tried[float(factor)] = error(float(factor))
        bar.update(1)
    bar.close()
    factors_s = np.array(sorted(tried))
    errors_s = np.array([tried[f] for f in factors_s])
    factor = parabola_minimum(np.log(factors_s), errors_s)
    return FocalEstimate(
        focal_px=guess_px * float(np.exp(factor)),
        guess_px=guess_px,
        factors_s=factors_s,
        errors_s=errors_s,
        frames=frames,
        keyframes=len(positions),
        observations=len(observations.cam_index_m),
        seconds=time.perf_counter() - start,
    )


def parabola_minimum(x_s: np.ndarray, y_s: np.ndarray) -> float:
    """The x (S,) of the vertex of the parabola through the lowest sample of y (S,) and its
    neighbours in x; the lowest sample itself at either end or where the three are level."""
    best = int(np.argmin(y_s))
    if best == 0 or best == len(x_s) - 1:
        return float(x_s[best])
    a_3 = np.polyfit(x_s[best - 1 : best + 2], y_s[best - 1 : best + 2], 2)
    if a_3[0] <= 0:
        return float(x_s[best])
    return float(np.clip(-a_3[1] / (2 * a_3[0]), x_s[best - 1], x_s[best + 1]))
