"""The reconstruction pipeline: camera poses, per-frame depth, TSDF fusion, outputs.

Each stage sits behind a small interface so that its implementations can be swapped by
configuration: a pose source (`--poses`, `mvs/poses.py`), a depth source (`--depth`) and the
fuser; what the console says before a run starts is in `mvs/console.py`.
Outputs are written even when a stage fails or the run is interrupted, so that what was
fused before the failure is never lost.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from fusion.consistency import EstimatedDepth, filter_consistent
from fusion.export import (
    CONFIDENCE_DIR,
    DEPTH_DIR,
    write_confidence_png,
    write_depth_png,
    write_json_atomic,
    write_ply,
    write_text_atomic,
)
from fusion.reference import REFERENCE_FILE
from fusion.tsdf import TSDFVolume
from mvs.adapt import adapt_to_sequence
from mvs.config import DepthConfig, RunConfig, Setting, fusion_config, to_yaml
from mvs.console import describe_run
from mvs.depth import ClassicDepthEstimator, DepthEstimator, LearnedDepthEstimator
from mvs.geometry import invert_pose_44
from mvs.io.export import write_interop
from mvs.io.intrinsics import ESTIMATE_INTRINSICS, MissingIntrinsics, parse_intrinsics
from mvs.io.layout import open_sequence
from mvs.io.settings import focal_from_frames, with_input_settings, with_scene_settings
from mvs.poses import estimate_poses, lost_reason, refined_to_colour
from mvs.report import write_report_html
from mvs.types import Camera, Frame, Sequence
from slam.keyframes import KeyframeSelection, select_keyframes
from slam.result import METRES, TrackedPiece, TrackingFailed, TrackingResult
from slam.self_calibration import CalibrationFailed, centred_camera, estimate_focal, guessed_camera
from slam.trajectory import format_tum_trajectory

SEQUENCES_DIR = Path("sequences")
UNJOINED_REASON = "in a tracked piece that never joined the main map"
OUTPUTS_DIR = Path("outputs")


@dataclass
class DepthMap:
    """A depth map ready for fusion: metres, registered to `frame`'s colour camera."""

    frame: Frame
    depth_hw: np.ndarray
    world_T_cam_44: np.ndarray


@dataclass
class RunReport:
    """What a run did: saved as `report.json` next to the outputs; `camera` is the colour
    camera of every pose and depth map (the viewer draws frustums with it); `settings` what
    was chosen other than by default and why (as in config.yaml); `tracking_pieces`
    the runs of tracked frames and how each joined the main map (monocular tracking);
    `adaptation` what `--adapt` did (`mvs.adapt.AdaptResult`); `seconds` the wall time of
    each stage, "input" opening the sequence (and estimating its focal length where that is
    needed)."""

    sequence: str
    layout: str
    poses: str
    depth: str
    units: str
    frames_selected: int
    camera: Camera | None = None
    settings: list[Setting] = field(default_factory=list)
    frames_posed: int = 0
    keyframes: int = 0
    depth_maps: int = 0
    frames_fused: int = 0
    skipped: dict[int, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    fusion_frames_per_second: float = 0.0
    pose_refinement: dict[str, float] = field(default_factory=dict)
    adaptation: dict[str, float | int | str] = field(default_factory=dict)
    tracking_pieces: list[TrackedPiece] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    status: str = "running"


@contextmanager
def timed(report: RunReport, stage: str) -> Iterator[None]:
    """Add the wall time (seconds) of the enclosed block to `report.seconds[stage]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        report.seconds[stage] = report.seconds.get(stage, 0.0) + time.perf_counter() - start


def default_out_dir(sequence_name: str) -> Path:
    """`outputs/<sequence>`; a path outside `sequences/` contributes its last name only, and
    a file (a video, a `.sens` file) its name without the extension."""
    name_path = Path(sequence_name)
    if name_path.is_absolute() or ".." in name_path.parts:
        name_path = Path(name_path.resolve().name)
    if name_path.suffix and not (name_path.is_dir() or (SEQUENCES_DIR / name_path).is_dir()):
        name_path = name_path.with_suffix("")
    return OUTPUTS_DIR / name_path


def output_dir(config: RunConfig) -> Path:
    """Where a run writes: `config.out`, else `outputs/<sequence>`."""
    return Path(config.out) if config.out else default_out_dir(config.sequence.name)


def load_sequence(config: RunConfig) -> Sequence:
    """Open the configured sequence, generating a synthetic room on first use."""
    name = config.sequence.name
    if name.startswith("synthetic/") and not (SEQUENCES_DIR / name).exists():
        from mvs.synth import ensure_room

        ensure_room(name, SEQUENCES_DIR)
    return open_sequence(name, SEQUENCES_DIR, config.sequence.frames, parse_intrinsics(config.sequence.intrinsics))


def open_with_intrinsics(config: RunConfig) -> tuple[Sequence, RunConfig]:
    """The configured sequence and `config`. Where the input holds no camera intrinsics and
    none are given, where `--intrinsics auto` asks, or where the input chooses it
    (`mvs.io.settings.focal_from_frames`), the focal length is first estimated from its
    frames (slam/self_calibration.py): the returned config gives it as `sequence.intrinsics`,
    with the evidence in its `settings`, so that the run and its evaluation read the frames
    with the same camera. Where the input chose the estimate and it fails, its own intrinsics
    stay."""
    config = copy.deepcopy(config)
    asked = config.sequence.intrinsics.strip() == ESTIMATE_INTRINSICS
    config.sequence.intrinsics = "" if asked else config.sequence.intrinsics
    own: Sequence | None = None
    try:
        sequence = load_sequence(config)
        chosen = None if asked else focal_from_frames(resolve_sources(config, sequence), sequence)
        if not asked and chosen is None:
            return sequence, config
        why, own = ("--intrinsics auto", None) if asked else (chosen, sequence)
        size_wh = (sequence.camera.width, sequence.camera.height)
    except MissingIntrinsics as missing:
        why, size_wh = "none given", missing.size_wh
    guessed = copy.deepcopy(config)
    guessed.sequence.intrinsics = intrinsics_spec(guessed_camera(*size_wh))
    try:
        estimate = estimate_focal(load_sequence(guessed), vo=config.tracking.vo)
    except CalibrationFailed as failed:
        if own is None:
            raise
        print(f"intrinsics: the input's own kept; {failed}")
        return own, config
    config.sequence.intrinsics = intrinsics_spec(centred_camera(estimate.focal_px, *size_wh))
    config.settings = [s for s in config.settings if s.key != "sequence.intrinsics"]
    reason = estimate.describe() if own is None else f"{why}; {estimate.describe()}"
    config.settings.append(Setting("sequence.intrinsics", config.sequence.intrinsics, "input", reason))
    print(f"intrinsics: {why}; focal length {estimate.describe()} ({estimate.seconds:.0f} s)")
    return load_sequence(config), config


def intrinsics_spec(camera: Camera) -> str:
    """`camera` as `--intrinsics` takes it: "fx,fy,cx,cy" (pixels, to 1e-3)."""
    return ",".join(f"{value:.3f}" for value in (camera.fx, camera.fy, camera.cx, camera.cy))


def resolve_sources(config: RunConfig, sequence: Sequence) -> RunConfig:
    """`config` with `auto` pose and depth sources replaced by what `sequence` supports:
    its own poses, else RGB-D odometry with sensor depth, else monocular tracking; its sensor
    depth, else the learned plane sweep."""
    tracking, depth = config.tracking, config.depth
    if tracking.poses == "auto":
        tracking = replace(tracking, poses="gt" if sequence.has_poses else "rgbd" if sequence.has_depth else "track")
    if depth.source == "auto":
        depth = replace(depth, source="sensor" if sequence.has_depth else "learned")
    return replace(config, tracking=tracking, depth=depth)


def sensor_depth_maps(sequence: Sequence, poses: TrackingResult, report: RunReport) -> Iterator[DepthMap]:
    """The depth sensor's maps of every posed frame (`--depth sensor`); a frame that cannot
    be read is skipped (`Sequence.readable_frame`)."""
    if not sequence.has_depth:
        raise ValueError(f"{sequence.root}: --depth sensor needs sensor depth and this sequence has none")
    for index in sequence.indices:
        if index not in poses.world_T_cam_44:
            report.skipped.setdefault(index, "no camera pose")
            continue
        frame = sequence.readable_frame(index)
        if frame is None:
            continue
        if frame.depth_hw is None:
            report.skipped[index] = "no sensor depth"
            continue
        yield DepthMap(frame, frame.depth_hw, poses.world_T_cam_44[index])


def make_estimator(config: DepthConfig, device: str) -> DepthEstimator:
    """The plane-sweep depth estimator `config.source` names (`classic` or `learned`)."""
    if config.source == "classic":
        return ClassicDepthEstimator(config, device)
    if config.source == "learned":
        return LearnedDepthEstimator(config, device)
    raise ValueError(f"--depth: expected sensor, classic or learned, got '{config.source}'")


def plan_keyframes(
    sequence: Sequence, poses: TrackingResult, config: DepthConfig
) -> tuple[list[int], KeyframeSelection]:
    """The posed dataset indices, and the keyframes planned over them with their source
    frames (positions in that list)."""
    posed = [i for i in sequence.indices if i in poses.world_T_cam_44]
    world_T_cam_n44 = [poses.world_T_cam_44[i] for i in posed]
    return posed, select_keyframes(world_T_cam_n44, sequence.camera, config.keyframe, config.keyframes)


def plane_sweep_depth_maps(
    sequence: Sequence,
    poses: TrackingResult,
    posed: list[int],
    selection: KeyframeSelection,
    config: RunConfig,
    report: RunReport,
    out_dir: Path,
) -> Iterator[DepthMap]:
    """Multi-view stereo depth of every planned keyframe (`--depth classic|learned`).

    Each depth map is written to `out_dir/depth/<index>.png` (uint16 mm, 0 = no estimate)
    with its confidence in `out_dir/confidence/<index>.png` (`write_confidence_png`; 0 where
    the estimate is kept but not confirmed), and yielded without the pixels whose
    confidence is not above `fuse_min_confidence` and those its neighbouring depth maps do
    not confirm (`fusion.consistency`). A frame that
    cannot be read (`Sequence.readable_frame`) gives no depth map and is no source.
    """
    estimator = make_estimator(config.depth, config.device)

    @lru_cache(maxsize=4 * config.depth.keyframe.max_sources)
    def posed_frame(index: int) -> Frame | None:
        frame = sequence.readable_frame(index)
        return None if frame is None else replace(frame, world_T_cam_44=poses.world_T_cam_44[index])

    depth_dir, confidence_dir = out_dir / DEPTH_DIR, out_dir / CONFIDENCE_DIR
    for folder in (depth_dir, confidence_dir):
        folder.mkdir(exist_ok=True)
        for earlier_png in folder.glob("*.png"):  # an earlier run's maps would be scored as this run's
            earlier_png.unlink()

    def estimates() -> Iterator[EstimatedDepth[Frame]]:
        for plan in selection.plans:
            reference = posed_frame(posed[plan.reference_index])
            if reference is None:
                continue
            sources = [frame for k in plan.source_indices if (frame := posed_frame(posed[k])) is not None]
            if not sources:
                report.skipped[reference.index] = "no readable source frames"
                continue
            result = estimator.estimate(reference, sources, sequence.camera)
            # Confidence first: a depth map on disk has its confidence, and is counted
            # right away, whenever a signal stops the run.
            write_confidence_png(confidence_dir / f"{reference.index}.png", result.confidence_hw)
            write_depth_png(depth_dir / f"{reference.index}.png", result.depth_hw)
            report.depth_maps += 1
            confident_hw = result.confidence_hw > config.depth.fuse_min_confidence
            depth_hw = np.where(confident_hw, result.depth_hw, 0.0).astype(np.float32)
            yield EstimatedDepth(depth_hw, reference.world_T_cam_44, reference)

    for estimate, depth_hw in filter_consistent(estimates(), sequence.camera, config.depth.consistency):
        yield DepthMap(estimate.item, depth_hw, estimate.world_T_cam_44)


def depth_maps(
    sequence: Sequence, poses: TrackingResult, config: RunConfig, report: RunReport, out_dir: Path
) -> tuple[int, Iterator[DepthMap]]:
    """Depth maps from the source `config.depth.source` names, and the number of frames
    they are drawn from (the progress bar's total).

    A plane sweep plans its keyframes with the settings the scene chose (`scene_settings`),
    then adapts the learned model to those keyframes (`--adapt`); keyframes whose candidate
    sources do not overlap get no plan and are counted in `report.skipped`.
    """
    if config.depth.source == "sensor":
        return len(sequence), sensor_depth_maps(sequence, poses, report)
    posed, selection = plan_keyframes(sequence, poses, config.depth)
    report.skipped.update({posed[k]: "no overlapping source frames" for k in selection.unplanned_indices})
    report.keyframes = len(selection.keyframe_indices)
    if config.depth.adapt.enabled:
        with timed(report, "adapt"):
            adaptation = adapt_to_sequence(
                sequence, poses.world_T_cam_44, posed, selection.plans, config.depth.keyframe.scene_depth,
                config.depth.weights, config.depth.adapt, config.device, out_dir,
            )
        report.adaptation = asdict(adaptation)
        report.outputs.append(adaptation.weights)
        config = replace(config, depth=replace(config.depth, weights=adaptation.weights))
    return len(selection.plans), plane_sweep_depth_maps(sequence, poses, posed, selection, config, report, out_dir)


def scene_settings(
    sequence: Sequence, poses: TrackingResult, config: RunConfig, report: RunReport, out_dir: Path
) -> RunConfig:
    """For a plane sweep, `config` with the settings the scene's depth chooses
    (`with_scene_settings`: the sweep's depth range, the planner's depths, the TSDF voxel
    size), said on the console and saved to config.yaml and `report.settings`; sensor depth
    takes none."""
    if config.depth.source == "sensor":
        return config
    with timed(report, "depth range"):
        config, scene_line = with_scene_settings(config, sequence, poses)
    print(scene_line)
    report.settings = list(config.settings)
    write_text_atomic(out_dir / "config.yaml", to_yaml(config))
    return config


def write_outputs(
    out_dir: Path,
    volume: TSDFVolume | None,
    sequence: Sequence,
    poses: TrackingResult | None,
    report: RunReport,
    render_mesh: bool,
) -> None:
    """Write mesh, cloud, trajectory, report.json and report.html of whatever has been
    computed so far."""
    with timed(report, "write"):
        cloud = None
        if volume is not None and volume.frames_integrated > 0:
            mesh = volume.mesh()
            if mesh.has_triangles():
                report.outputs.append(str(write_ply(out_dir / "mesh.ply", mesh)))
            cloud = volume.point_cloud()
            if cloud.has_points():
                report.outputs.append(str(write_ply(out_dir / "cloud.ply", cloud)))
        if poses is not None and poses.world_T_cam_44:
            indices = sorted(poses.world_T_cam_44)
            text = format_tum_trajectory(
                [sequence.timestamp(i) for i in indices], [poses.world_T_cam_44[i] for i in indices]
            )
            report.outputs.append(str(write_text_atomic(out_dir / "trajectory.txt", text)))
            report.outputs += [str(path) for path in write_interop(out_dir, sequence, poses.world_T_cam_44, cloud)]
    if report.depth_maps:
        report.outputs += [str(out_dir / DEPTH_DIR), str(out_dir / CONFIDENCE_DIR)]
    report.outputs.append(str(out_dir / "report.json"))
    report.skipped = dict(sorted({**report.skipped, **sequence.unreadable}.items()))
    write_json_atomic(out_dir / "report.json", asdict(report))
    with timed(report, "report"):
        report.outputs += [str(path) for path in write_report_html(out_dir, sequence, render=render_mesh)]
    write_json_atomic(out_dir / "report.json", asdict(report))


def run(config: RunConfig, verbose: bool = False) -> RunReport:
    """Reconstruct `config.sequence` into `config.out`; returns the report written there.

    The console gets a few lines on the input and the choices made (`describe_run`), and
    with `verbose` the full resolved configuration, which is always saved to config.yaml.
    """
    out_dir = output_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REFERENCE_FILE).unlink(missing_ok=True)  # an earlier run's, fused with that run's settings
    requested = config
    opening = time.perf_counter()
    sequence, config = open_with_intrinsics(config)
    opened_seconds = time.perf_counter() - opening
    config = with_input_settings(resolve_sources(config, sequence), sequence)
    if config.depth.adapt.enabled and config.depth.source != "learned":
        raise ValueError(
            f"--adapt fine-tunes the learned depth model, and depth comes from '{config.depth.source}' here: "
            "add --depth learned"
        )
    write_text_atomic(out_dir / "config.yaml", to_yaml(config))
    if verbose:
        print(to_yaml(config), end="")
    print(describe_run(requested, config, sequence, out_dir))
    report = RunReport(
        sequence=str(sequence.root),
        layout=sequence.layout,
        poses=config.tracking.poses,
        depth=config.depth.source,
        units="metres",
        frames_selected=len(sequence),
        camera=sequence.camera,
        settings=list(config.settings),
        skipped=dict(sequence.skipped),
        seconds={"input": opened_seconds},
    )
    volume: TSDFVolume | None = None
    poses: TrackingResult | None = None
    try:
        with timed(report, "poses"):
            try:
                poses = estimate_poses(sequence, config.tracking)
            except TrackingFailed as failure:
                poses = failure.partial
                raise
            poses, report.pose_refinement = refined_to_colour(sequence, poses, config)
        report.units = poses.scale
        if poses.scale != METRES and config.depth.source == "sensor":
            raise ValueError(
                f"--poses {config.tracking.poses} gives poses in {poses.scale}; fusing sensor depth "
                "needs metres: add --scale sensor (or --scale gt for evaluation)"
            )
        report.frames_posed = sum(i in poses.world_T_cam_44 for i in sequence.indices)
        report.skipped.update({i: lost_reason(config.tracking) for i in poses.lost})
        report.skipped.update({i: UNJOINED_REASON for i in poses.unjoined})
        report.tracking_pieces = poses.pieces
        config = scene_settings(sequence, poses, config, report, out_dir)
        volume = TSDFVolume(fusion_config(config))
        fusion_seconds = 0.0
        total, depth_iter = depth_maps(sequence, poses, config, report, out_dir)
        progress = tqdm(total=total, desc="depth + fusion", unit="frame")
        loop_start = time.perf_counter()
        for depth_map in depth_iter:
            start = time.perf_counter()
            volume.integrate(
                depth_map.depth_hw,
                depth_map.frame.image_hw3,
                sequence.camera,
                invert_pose_44(depth_map.world_T_cam_44),
            )
            fusion_seconds += time.perf_counter() - start
            progress.update(1)
        progress.close()
        report.seconds["depth"] = time.perf_counter() - loop_start - fusion_seconds
        report.seconds["fusion"] = fusion_seconds
        report.fusion_frames_per_second = volume.frames_integrated / max(fusion_seconds, 1e-9)
        report.status = "complete"
    except KeyboardInterrupt:
        report.status = "interrupted"
        raise
    except Exception as error:
        report.status = f"failed: {error}"
        raise
    finally:
        if volume is not None:
            report.frames_fused = volume.frames_integrated
        write_outputs(out_dir, volume, sequence, poses, report, config.report.render_mesh)
    return report
