"""Settings chosen from the input: what its layout says of the recording (`Capture`) and
what a few of its frames show, never its name.

What is read: the sensor's depth units, whether depth is registered to colour and whether
the two were synchronised (the layout's reader, `Sequence.capture`), and, from the depth of
a few frames spread over the selection, how far it reaches and how coarse its steps are.
A sensor that measures disparity (structured light, stereo) stores depth in steps that grow
as c z^2 (a Kinect v1: c about 0.003 /m, 1.2 cm at 2 m, 4.8 cm at 4 m); where the steps are
as fine as the storage unit, depth carries no such limit.

What is chosen, each with its reason (`Setting`), for the sources the run uses:
- `fusion.depth_max`: the depth the sensor reaches, rounded up, and no farther than where
  its steps pass FUSION_MAX_DEPTH_STEP_M; not for a run in tracking units, whose depths
  the sensor's metres do not measure;
- dense RGB-D odometry (`--poses rgbd` with `tracking.rgbd.tracker: odometry`; the keyframe
  map tracker takes none of these): the depth range where steps stay under
  TRACKING_MAX_DEPTH_STEP_M; with depth not registered to colour, geometry only
  (point-to-plane) against the fused model, at 320 pixels wide with 6, 3, 1 iterations;
- dataset poses that track another sensor at other instants than the colour frames
  (7-Scenes'), before a plane sweep over the colour images: refined to those images, from
  colour alone (poses fitted to the sensor's depth would make scores against it circular);
- a colour camera known only by its dataset's nominal intrinsics (7-Scenes'), before
  monocular tracking: the focal length estimated from the frames (`focal_from_frames`;
  `mvs.pipeline.open_with_intrinsics` estimates it).
A video or an image folder without depth shows none of this: the defaults stay. Nothing in
the input speaks for the monocular tracker's tuning (`tracking.vo`): it is never chosen here.

Once the poses are known, what the scene shows (`with_scene_settings`, mvs/depth_range.py):
the depth range of a plane sweep (`depth.near`, `depth.far`) and the depths at which the
keyframe planner measures view overlap and against which it measures camera travel
(`depth.keyframe.overlap_depths`), from the map or from corners triangulated with the poses,
never from the sensor's depth; and the TSDF voxel size (`fusion.voxel_size`), made for a
room at the planner's `reference_depth`, scaled by the scene's median depth over it: a
plane sweep's errors, and the detail it resolves, are shares of the depth.

Precedence: the defaults, then these, then the `--config` file, then the flags; a key the
file or a flag set (listed in `RunConfig.settings` already) is never chosen here.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mvs.config import RunConfig, Setting, update_dataclass
from mvs.depth_range import FAR_MARGIN, NEAR_MARGIN, OVERLAP_PERCENTILES, estimate_scene_range
from mvs.types import Capture, Sequence
from slam.result import TrackingResult

SAMPLED_FRAMES = 8
"""Frames, spread evenly over the selection, whose sensor depth is sampled."""
FAR_PERCENTILE = 99.9
"""The percentile of the sampled depth taken as how far the sensor reaches."""
DEPTH_MAX_ROUNDING_M = 0.5
MIN_DEPTH_MAX_M = 1.0
FUSION_MAX_DEPTH_STEP_M = 0.05
"""Coarsest depth step fused: 2.5 voxels of the default 2 cm, under the 8 cm truncation band."""
TRACKING_MAX_DEPTH_STEP_M = 0.03
"""Coarsest depth step RGB-D odometry uses: under half its 7 cm outlier distance."""
STEP_BIN_M = 0.25
"""Width of the depth bins whose value spacing measures the step."""
MIN_PIXELS_PER_VALUE = 50
"""A bin measures the step only when it holds this many pixels per distinct value: sparse
bins leave representable values unseen and would look coarse."""
MODEL_ODOMETRY_WIDTH = 320
MODEL_ODOMETRY_ITERATIONS = (6, 3, 1)
UNITS = {1e-3: "mm", 2e-4: "1/5000 m"}
VOXEL_DECIMALS = 4
"""A voxel size the scene chooses is rounded to this many decimals (0.1 mm)."""
SCENE_KEYS = ("depth.near", "depth.far", "depth.keyframe.overlap_depths", "fusion.voxel_size")
"""The keys the scene's depth range chooses (`with_scene_settings`)."""
Choose = Callable[[str, Any, str], None]
"""Sets a dotted key to a value for a reason (unless the user set it)."""


@dataclass(frozen=True)
class DepthSample:
    """What the sensor depth of a few frames shows.

    frames: frames sampled; far_m: the FAR_PERCENTILE percentile of their valid depth
    (metres); step_per_m2: c of the steps c z^2 (metres) the depth is stored in, None where
    the steps are as fine as the storage unit.
    """

    frames: int
    far_m: float
    step_per_m2: float | None

    def depth_for_step(self, step_m: float) -> float:
        """The depth (metres) whose step is `step_m`; infinite without coarse steps."""
        return math.inf if self.step_per_m2 is None else math.sqrt(step_m / self.step_per_m2)


def sample_depth(sequence: Sequence, count: int = SAMPLED_FRAMES) -> DepthSample | None:
    """The depth of `count` frames spread evenly over the selection, or None when the
    sequence has no sensor depth or none of them holds a valid depth."""
    if not sequence.has_depth or len(sequence) == 0:
        return None
    positions = np.unique(np.linspace(0, len(sequence) - 1, count).round().astype(int))
    depths = []
    for position in positions:
        frame = sequence.readable_frame(sequence.indices[position])
        if frame is not None and frame.depth_hw is not None:
            depths.append(frame.depth_hw[frame.depth_hw > 0])
    if not depths or not sum(d.size for d in depths):
        return None
    depth_n = np.concatenate(depths).astype(np.float64)
    metres_per_unit = sequence.capture.depth_metres_per_unit or 1e-3
    far_m = float(np.percentile(depth_n, FAR_PERCENTILE))
    return DepthSample(len(depths), far_m, _step_per_m2(depth_n, metres_per_unit))


def _step_per_m2(depth_n: np.ndarray, metres_per_unit: float) -> float | None:
    """c of the steps c z^2 of depth values `depth_n` (metres) stored in `metres_per_unit`:
    the median over bins of STEP_BIN_M of (median spacing of the distinct values) / z^2, over
    the bins whose spacing is at least two storage units; None when no bin's is."""
    units_n = np.rint(depth_n / metres_per_unit).astype(np.int64)
    bin_n = np.floor(depth_n / STEP_BIN_M).astype(np.int64)
    ratios = []
    for b in np.unique(bin_n):
        units_m = units_n[bin_n == b]
        values = np.unique(units_m)
        if len(values) < 3 or len(units_m) < MIN_PIXELS_PER_VALUE * len(values):
            continue
        step_units = float(np.median(np.diff(values)))
        if step_units >= 2:
            z_m = float(np.median(units_m)) * metres_per_unit
            ratios.append(step_units * metres_per_unit / z_m**2)
    return float(np.median(ratios)) if ratios else None


def describe_capture(sequence: Sequence) -> str:
    """Whether the sequence has sensor depth and what is known of it, in a few words:
    "yes (mm, not registered to colour, not synchronised)"."""
    if not sequence.has_depth:
        return "no"
    capture = sequence.capture
    facts = []
    if capture.depth_metres_per_unit is not None:
        unit = UNITS.get(capture.depth_metres_per_unit, f"{capture.depth_metres_per_unit:g} m")
        facts.append(unit)
    known_facts = ((capture.depth_registered, "registered to colour"), (capture.depth_synchronised, "synchronised"))
    for known, name in known_facts:
        if known is not None:
            facts.append(name if known else f"not {name}")
    return f"yes ({', '.join(facts)})" if facts else "yes"


def with_input_settings(config: RunConfig, sequence: Sequence) -> RunConfig:
    """A copy of `config` (its sources resolved) with the settings the input chooses for the
    keys its `settings` do not list yet, each appended there with its reason."""
    config = copy.deepcopy(config)
    choose = _chooser(config)
    sample = sample_depth(sequence)
    if sample is not None and config.tracking.in_metres:
        _choose_fusion_range(choose, sample)
    if config.tracking.poses == "rgbd" and config.tracking.rgbd.tracker == "odometry" and sequence.has_depth:
        _choose_rgbd(choose, sequence.capture, sample, config.tracking.rgbd.depth_max)
    sweep_over_dataset_poses = config.tracking.poses == "gt" and config.depth.source != "sensor"
    if sweep_over_dataset_poses and _poses_miss_colour(sequence.capture):
        choose("tracking.refine_gt", True,
               "the dataset's poses track depth frames that are not synchronised with the colour ones: "
               "refined to the colour images the plane sweep uses")
        if config.tracking.refine_gt:
            choose("tracking.refine.depth_sigma_relative", 0.0,
                   "refined from colour alone: poses fitted to the sensor's depth would make scores against "
                   "it circular")
    return config


def focal_from_frames(config: RunConfig, sequence: Sequence) -> str | None:
    """Why the focal length of `sequence` is to be estimated from its frames before a run of
    `config` (its sources resolved), or None: the monocular tracker fits every pose to
    the colour camera's intrinsics, and where the layout holds only its dataset's nominal
    ones (`Capture.colour_calibrated` False) the frames measure this recording's better."""
    if config.tracking.poses == "track" and sequence.capture.colour_calibrated is False:
        return (f"the {sequence.layout} layout holds only its dataset's nominal colour intrinsics "
                f"(fx {sequence.camera.fx:g} px), and the poses are tracked from colour")
    return None


def with_scene_settings(config: RunConfig, sequence: Sequence, poses: TrackingResult) -> tuple[RunConfig, str]:
    """A copy of `config` with the settings the scene's depth range chooses for a plane sweep
    (`mvs.depth_range.estimate_scene_range`: from the map of `poses`, else from corners
    triangulated over some of the keyframes `config` plans before the scene is known), for
    the keys its `settings` do not list yet, each appended there with its reason; and a line
    for the console saying what the sweep uses. With every key listed, nothing is estimated."""
    config = copy.deepcopy(config)
    if config.listed_keys.issuperset(SCENE_KEYS):
        return config, f"depth range: {_describe_sweep(config, poses)}, as the --config file and flags set it"
    scene = estimate_scene_range(sequence, poses, config.depth.keyframe, config.depth.keyframes)
    if scene is None:
        return config, f"depth range: {_describe_sweep(config, poses)}; too few depths to estimate the scene's"
    choose = _chooser(config)
    choose("depth.near", scene.near, f"{scene.describe()}, divided by {NEAR_MARGIN:g}")
    choose("depth.far", scene.far, f"{scene.describe()}, times {FAR_MARGIN:g}")
    percentiles = ", ".join(f"{p:g}" for p in OVERLAP_PERCENTILES)
    choose("depth.keyframe.overlap_depths", scene.overlap_depths,
           f"the scene's depth: its {percentiles} % percentiles, of {scene.evidence}")
    keyframe, units = config.depth.keyframe, poses.length_unit
    choose("fusion.voxel_size", round(config.fusion.voxel_size * keyframe.depth_scale, VOXEL_DECIMALS),
           f"the scene's median depth, {keyframe.scene_depth:.2f} {units}, over the {keyframe.reference_depth:g} m "
           f"a room's {config.fusion.voxel_size:g} m voxels are made for")
    return config, (f"depth range: {_describe_sweep(config, poses)}; from {scene.evidence}; "
                    f"TSDF voxels of {config.fusion.voxel_size:g} {units}")


def _describe_sweep(config: RunConfig, poses: TrackingResult) -> str:
    """The depth range and overlap depths a plane sweep uses, in a few words."""
    units = poses.length_unit
    overlap = ", ".join(f"{d:.2f}" for d in config.depth.keyframe.overlap_depths)
    return f"{config.depth.near:.2f}-{config.depth.far:.2f} {units}, view overlap measured at {overlap} {units}"


def _chooser(config: RunConfig) -> Choose:
    """Sets a dotted key of `config` for a reason and records it in `config.settings`, unless
    `settings` lists the key already (the --config file or a flag set it)."""
    listed = config.listed_keys

    def choose(key: str, value: Any, reason: str) -> None:
        if key not in listed:
            update_dataclass(config, _nested(key, value), "the input")
            config.settings.append(Setting(key, value, "input", reason))

    return choose


def _choose_fusion_range(choose: Choose, sample: DepthSample) -> None:
    """fusion.depth_max: how far the sensor reaches, no farther than where its steps pass
    FUSION_MAX_DEPTH_STEP_M."""
    reach_m = _round(sample.far_m, math.ceil)
    reason = (f"the sensor's depth reaches {sample.far_m:.2f} m "
              f"({FAR_PERCENTILE:g}th percentile of {sample.frames} frames)")
    fine_to_m = sample.depth_for_step(FUSION_MAX_DEPTH_STEP_M)
    if fine_to_m < reach_m:
        reach_m = _round(fine_to_m, math.floor)
        reason = (f"the sensor's depth steps ({sample.step_per_m2:.4f} z^2 m) pass "
                  f"{100 * FUSION_MAX_DEPTH_STEP_M:g} cm at {fine_to_m:.2f} m")
    choose("fusion.depth_max", reach_m, reason)


def _choose_rgbd(choose: Choose, capture: Capture, sample: DepthSample | None, depth_max_m: float) -> None:
    """RGB-D odometry: its depth range from the depth's steps; geometry only against the
    fused model when depth is not registered to colour."""
    if sample is not None:
        fine_to_m = sample.depth_for_step(TRACKING_MAX_DEPTH_STEP_M)
        if fine_to_m < depth_max_m:
            choose("tracking.rgbd.depth_max", _round(fine_to_m, math.floor),
                   f"the sensor's depth steps ({sample.step_per_m2:.4f} z^2 m) pass "
                   f"{100 * TRACKING_MAX_DEPTH_STEP_M:g} cm at {fine_to_m:.2f} m")
    if capture.depth_registered is False:
        choose("tracking.rgbd.method", "point_to_plane",
               "depth is not registered to colour: geometry-only odometry, as the two disagree at edges")
        choose("tracking.rgbd.reference", "model",
               "depth is not registered to colour: track against the fused model, which averages its edge offsets")
        choose("tracking.rgbd.max_width", MODEL_ODOMETRY_WIDTH,
               "frame-to-model odometry: 320 pixels across resolve the fused model's 2 cm voxels at room depth")
        choose("tracking.rgbd.iterations", MODEL_ODOMETRY_ITERATIONS,
               "frame-to-model odometry starts from the model's prediction, near the answer: 6, 3, 1 iterations")


def _poses_miss_colour(capture: Capture) -> bool:
    """Whether the dataset's poses belong to another sensor's instants than the colour
    frames' (they track depth frames not synchronised with the colour ones)."""
    return capture.poses_of_colour is False and capture.depth_synchronised is False


def _round(depth_m: float, direction: Callable[[float], int]) -> float:
    """`depth_m` rounded by `direction` (math.ceil or math.floor) to DEPTH_MAX_ROUNDING_M,
    and no less than MIN_DEPTH_MAX_M."""
    return max(MIN_DEPTH_MAX_M, direction(depth_m / DEPTH_MAX_ROUNDING_M) * DEPTH_MAX_ROUNDING_M)


def _nested(key: str, value: Any) -> dict[str, Any]:
    """{"a": {"b": value}} of the dotted key "a.b"."""
    nested: Any = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested
