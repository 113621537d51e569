"""`python -m mvs.eval --out DIR`: score a run's outputs against the sequence's ground truth.

The sequence and frame selection default to those in `DIR/config.yaml`. Mesh metrics compare
`DIR/mesh.ply` with the reference: the synthetic room's `mesh.ply`, or for real RGB-D
sequences a mesh fused from sensor depth with ground-truth poses (cached as
`DIR/reference.ply`); the reference is culled to the surfaces the cameras saw. Depth
metrics compare `DIR/depth/<index>.png` with the sensor depth, over all pixels and over
those `DIR/confidence/<index>.png` confirms (the ones a run fuses). Trajectory
metrics (ATE, RPE after SE(3) and Sim(3) alignment) compare `DIR/trajectory.txt` with the
ground-truth poses and draw `DIR/trajectory.png`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
from tqdm import tqdm

from fusion.export import CONFIDENCE_DIR, DEPTH_DIR, read_confidence_hw, read_depth_hw, write_json_atomic, write_ply
from fusion.metrics import MeshMetrics, mesh_metrics
from fusion.reference import REFERENCE_FILE, reference_mesh
from mvs.depth_metrics import DepthBias, DepthBiasAccumulator, DepthMetrics, DepthMetricsAccumulator
from mvs.config import RunConfig, load_yaml, update_dataclass
from mvs.pipeline import load_sequence
from mvs.report import write_report_html
from mvs.types import Sequence
from slam.alignment import Similarity, umeyama_alignment
from slam.trajectory import TrajectoryMetrics, evaluate_trajectory, plot_trajectory_png, read_tum_trajectory


@dataclass
class EvalReport:
    """Every metric the run could be scored on; None where the ground truth is missing.
    depth: over every pixel of the saved depth maps; depth_confirmed: over those their
    confidence maps confirm (None for depth with no confidence, e.g. the sensor's);
    depth_bias: the median ratio to the ground truth by its depth, over every pixel."""

    sequence: str
    mesh: MeshMetrics | None = None
    depth: DepthMetrics | None = None
    depth_confirmed: DepthMetrics | None = None
    depth_bias: DepthBias | None = None
    trajectory_se3: TrajectoryMetrics | None = None
    trajectory_sim3: TrajectoryMetrics | None = None


def read_mesh(path: Path) -> o3d.geometry.TriangleMesh:
    """A triangle mesh from a PLY file, with an error naming the file when it is unusable."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mesh not found; run `python -m mvs.run` first")
    mesh = o3d.io.read_triangle_mesh(str(path))
    if len(mesh.triangles) == 0:
        raise ValueError(f"{path}: mesh has no triangles")
    return mesh


def evaluate_mesh(
    sequence: Sequence, config: RunConfig, out_dir: Path, world_alignment: Similarity | None
) -> MeshMetrics | None:
    """Mesh metrics at 5 cm against the (cached) reference; None without ground truth.

    `world_alignment` maps the run's world frame (that of estimated poses) onto the ground
    truth's; None when the run used ground-truth poses.
    """
    if not (sequence.has_mesh or (sequence.has_depth and sequence.has_poses)):
        return None
    cached = out_dir / REFERENCE_FILE
    if cached.is_file():
        reference = read_mesh(cached)
    else:
        reference = reference_mesh(sequence, config.fusion)
        write_ply(cached, reference)
    mesh = read_mesh(out_dir / "mesh.ply")
    if world_alignment is not None:
        vertices_n3 = world_alignment.apply_n3(np.asarray(mesh.vertices))
        mesh.vertices = o3d.utility.Vector3dVector(vertices_n3)
    return mesh_metrics(mesh, reference, threshold=0.05)


def read_trajectory(path: Path, sequence: Sequence) -> dict[int, np.ndarray]:
    """Camera-to-world poses of a TUM trajectory, keyed by the dataset index of their timestamp."""
    timestamps_n, world_T_cam_n44 = read_tum_trajectory(path)
    index_by_time = {round(sequence.timestamp(i), 6): i for i in sequence.indices}
    poses = {}
    for timestamp, world_T_cam_44 in zip(timestamps_n, world_T_cam_n44):
        index = index_by_time.get(round(float(timestamp), 6))
        if index is None:
            raise ValueError(f"{path}: timestamp {timestamp} matches no frame of {sequence.root}")
        poses[index] = world_T_cam_44
    return poses


def evaluate_depth(
    sequence: Sequence, out_dir: Path, scale: float, min_confidence: float
) -> tuple[DepthMetrics | None, DepthMetrics | None, DepthBias | None]:
    """Metrics of every `out_dir/depth/<index>.png`, multiplied by `scale` (the Sim(3)
    alignment scale of a run in tracking units, else 1), against the sensor depth within
    (0, 10] m, accumulated over all pixels of all maps; and the same over the pixels whose
    confidence (`out_dir/confidence/<index>.png`) is above `min_confidence`, the ones a run
    fuses before its consistency check (None when a map has no confidence); and the median
    ratio to the sensor depth by its depth over all pixels (`DepthBias`). (None, None, None)
    without maps or sensor depth."""
    paths = sorted((out_dir / DEPTH_DIR).glob("*.png"), key=lambda p: p.stem)
    if not (sequence.has_depth and paths):
        return None, None, None
    every, confirmed = DepthMetricsAccumulator(max_depth=10.0), DepthMetricsAccumulator(max_depth=10.0)
    bias = DepthBiasAccumulator()
    all_confident = True
    positions = {index: position for position, index in enumerate(sequence.indices)}
    for path in tqdm(paths, desc="depth metrics", unit="map"):
        if not path.stem.isdigit() or int(path.stem) not in positions:
            raise ValueError(f"{path}: expected <frame index>.png of a frame of {sequence.root}")
        predicted_hw = read_depth_hw(path) * np.float32(scale)
        gt_hw = sequence[positions[int(path.stem)]].depth_hw
        every.add(predicted_hw, gt_hw)
        bias.add(predicted_hw, gt_hw)
        confidence_path = out_dir / CONFIDENCE_DIR / path.name
        all_confident = all_confident and confidence_path.is_file()
        if all_confident:
            confirmed.add(np.where(read_confidence_hw(confidence_path) > min_confidence, predicted_hw, 0.0), gt_hw)
    return every.result(), confirmed.result() if all_confident else None, bias.result()


@dataclass
class TrajectoryEvaluation:
    """ATE/RPE after SE(3) and Sim(3) alignment, and the alignment the run's units call for."""

    se3: TrajectoryMetrics
    sim3: TrajectoryMetrics
    world_alignment: Similarity


def evaluate_trajectory_file(sequence: Sequence, out_dir: Path, metric: bool) -> TrajectoryEvaluation | None:
    """Score `trajectory.txt` and draw `trajectory.png`; None without ground truth.

    `metric` says the run's poses are in metres (SE(3) alignment of its world frame),
    otherwise in tracking units (Sim(3)).
    """
    path = out_dir / "trajectory.txt"
    if not (sequence.has_poses and path.is_file()):
        return None
    est_world_T_cam_44 = read_trajectory(path, sequence)
    gt_world_T_cam_44 = sequence.gt_world_T_cam_44
    se3 = evaluate_trajectory(est_world_T_cam_44, gt_world_T_cam_44, with_scale=False)
    sim3 = evaluate_trajectory(est_world_T_cam_44, gt_world_T_cam_44, with_scale=True)
    common = sorted(set(est_world_T_cam_44) & set(gt_world_T_cam_44))
    est_n3 = np.stack([est_world_T_cam_44[i][:3, 3] for i in common])
    gt_n3 = np.stack([gt_world_T_cam_44[i][:3, 3] for i in common])
    world_alignment = umeyama_alignment(est_n3, gt_n3, with_scale=not metric)
    plot_trajectory_png(out_dir / "trajectory.png", world_alignment.apply_n3(est_n3), gt_n3)
    return TrajectoryEvaluation(se3, sim3, world_alignment)


def evaluate(config: RunConfig, out_dir: Path) -> EvalReport:
    """Score the outputs in `out_dir` of a run made with `config`; writes `eval.json` and
    refreshes `report.html` with the metrics."""
    sequence = load_sequence(config)
    metric = config.tracking.in_metres
    trajectory = evaluate_trajectory_file(sequence, out_dir, metric)
    world_alignment = None if config.tracking.poses == "gt" or trajectory is None else trajectory.world_alignment
    depth_scale = 1.0 if metric or trajectory is None else trajectory.world_alignment.scale
    depth, depth_confirmed, depth_bias = evaluate_depth(sequence, out_dir, depth_scale, config.depth.fuse_min_confidence)
    report = EvalReport(
        sequence=str(sequence.root),
        mesh=evaluate_mesh(sequence, config, out_dir, world_alignment),
        depth=depth,
        depth_confirmed=depth_confirmed,
        depth_bias=depth_bias,
        trajectory_se3=None if trajectory is None else trajectory.se3,
        trajectory_sim3=None if trajectory is None else trajectory.sim3,
    )
    write_json_atomic(out_dir / "eval.json", asdict(report))
    if (out_dir / "report.json").is_file():
        write_report_html(out_dir, sequence, metric_rows(report))
    return report


def metric_rows(report: EvalReport) -> list[tuple[str, str]]:
    """(name, formatted value) of every metric the report holds."""
    rows = [("sequence", report.sequence)]
    if report.mesh is not None:
        m = report.mesh
        rows += [
            ("mesh accuracy (m)", f"{m.accuracy:.4f}"),
            ("mesh completeness (m)", f"{m.completeness:.4f}"),
            (f"mesh precision @ {m.threshold * 100:.0f} cm", f"{m.precision:.3f}"),
            (f"mesh recall @ {m.threshold * 100:.0f} cm", f"{m.recall:.3f}"),
            (f"mesh F-score @ {m.threshold * 100:.0f} cm", f"{m.fscore:.3f}"),
        ]
    if report.depth is not None:
        d = report.depth
        rows += [
            ("depth AbsRel", f"{d.abs_rel:.4f}"),
            ("depth SqRel", f"{d.sq_rel:.4f}"),
            ("depth RMSE (m)", f"{d.rmse:.4f}"),
            ("depth RMSE log", f"{d.rmse_log:.4f}"),
            ("depth scale-invariant log", f"{d.silog:.4f}"),
            ("depth delta < 1.25 / 1.25^2 / 1.25^3", f"{d.delta1:.3f} / {d.delta2:.3f} / {d.delta3:.3f}"),
            ("depth completeness", f"{d.completeness:.3f}"),
        ]
    if report.depth_confirmed is not None:
        d = report.depth_confirmed
        rows += [
            ("depth AbsRel, confirmed pixels", f"{d.abs_rel:.4f}"),
            ("depth delta < 1.25, confirmed pixels", f"{d.delta1:.3f}"),
            ("depth completeness, confirmed pixels", f"{d.completeness:.3f}"),
        ]
    if report.depth_bias is not None:
        rows.append(("depth median ratio by true depth", report.depth_bias.summary()))
    for t in (report.trajectory_se3, report.trajectory_sim3):
        if t is not None:
            rows += [
                (f"ATE RMSE, {t.alignment} (m)", f"{t.ate_rmse:.4f}"),
                (f"RPE translation, {t.alignment} (m/frame)", f"{t.rpe_translation_rmse:.4f}"),
                (f"RPE rotation, {t.alignment} (deg/frame)", f"{t.rpe_rotation_rmse_deg:.3f}"),
                ("frames posed / with ground truth", f"{t.frames_matched} / {t.frames_ground_truth}"),
            ]
    return rows


def format_table(report: EvalReport) -> str:
    """The metrics as an aligned text table."""
    rows = metric_rows(report)
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvs.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder of a run")
    parser.add_argument("--sequence", help="sequence (default: the one in OUT/config.yaml)")
    parser.add_argument("--frames", help="START:STOP:STEP (default: the run's selection)")
    args = parser.parse_args(argv)
    started = time.time()
    config = RunConfig()
    try:
        saved = args.out / "config.yaml"
        if saved.is_file():
            update_dataclass(config, load_yaml(saved), str(saved))
        if args.sequence is not None:
            config.sequence.name = args.sequence
        if args.frames is not None:
            config.sequence.frames = args.frames
        report = evaluate(config, args.out)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(report))
    print("wrote:")
    for name in ("eval.json", REFERENCE_FILE, "trajectory.png", "report.html", "mesh.png"):
        if (args.out / name).is_file() and (args.out / name).stat().st_mtime >= started:
            print(f"  {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
