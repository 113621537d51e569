"""`track` suite: poses from `track` and `rgbd` against ground truth, and COLMAP beside `track`.

Each of our runs is `python -m mvs.run ... --poses P` (fusing sensor depth) then
`python -m mvs.eval`; the pose stage's frames/s come from report.json (frame decoding
included). COLMAP runs in this process on the same redkitchen frames right after our
tracker, and both are scored by ATE after Sim(3) alignment with slam/trajectory.py.
"""

from __future__ import annotations

from pathlib import Path

from mvs.bench.colmap import ColmapSettings, import_pycolmap, run_colmap
from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext, Measured, run_and_evaluate
from mvs.sequences import open_sequence
from slam.trajectory import evaluate_trajectory

FRAMES = "0:1000:2"
COLMAP_FRAMES = "0:1000:4"
KITCHEN_CONFIG = ["--config", "configs/7scenes.yaml"]
POSES = {
    "track --scale sensor": ("track", ["--poses", "track", "--scale", "sensor"]),
    "track --scale gt (colour only)": ("track_mono", ["--poses", "track", "--scale", "gt"]),
    "rgbd": ("rgbd", ["--poses", "rgbd"]),
}
"""Row label: output folder suffix and the run's pose arguments. With `--scale sensor` the sensor's
depth also joins the tracker's global adjustment; `--scale gt` leaves the tracking to the colour
images and takes one scale from the ground truth."""


def cm(value: float | None) -> str:
    return fmt(None if value is None else value * 100, 2, " cm")


def pose_runs(context: BenchContext) -> tuple[Table, dict]:
    """track and rgbd on the synthetic room and on redkitchen FRAMES."""
    sequences = {
        "synthetic room0, 300 frames": ["--sequence", "synthetic/room0"],
        f"redkitchen {FRAMES}": ["--sequence", context.kitchen, "--frames", FRAMES, *KITCHEN_CONFIG],
    }
    table = Table(
        "Pose accuracy and speed, then fusion of sensor depth with those poses",
        [],
        ["sequence", "poses", "ATE RMSE SE(3)", "ATE RMSE Sim(3)", "frames posed", "pose stage frames/s",
         "wall (whole command)", "peak RSS", "mesh F-score @ 5 cm"],
        "llrrrrrrr",
        notes="ATE of camera centres against the ground truth; the mesh is aligned to the ground truth by "
              "the SE(3) of the trajectory and scored against the synthetic room's mesh or the mesh fused from "
              "sensor depth with ground-truth poses.",
    )
    data = {}
    for number, (sequence, sequence_args) in enumerate(sequences.items()):
        for poses, (folder, poses_args) in POSES.items():
            out_dir = Path(context.work_dir) / "track" / f"{'room0' if number == 0 else 'rk'}_{folder}"
            m = run_and_evaluate([*sequence_args, *poses_args], out_dir)
            table.commands.append(f"{m.run.command} && python -m mvs.eval --out {out_dir}")
            posed = m.report["frames_posed"]
            table.add_row(
                sequence, poses, cm(m.metric("trajectory_se3", "ate_rmse")), cm(m.metric("trajectory_sim3", "ate_rmse")),
                f"{posed}/{m.report['frames_selected']}", fmt(posed / m.stage_seconds("poses"), 0),
                fmt(m.run.seconds, 0, " s"), f"{m.run.peak_rss_mb:.0f} MB", fmt(m.metric("mesh", "fscore")),
            )
            data[f"{sequence} / {poses}"] = {"command": m.run.command, "seconds": m.run.seconds,
                                             "peak_rss_mb": m.run.peak_rss_mb, "report": m.report, "eval": m.evaluation}
    return table, data


def colmap_comparison(context: BenchContext) -> tuple[Table, dict]:
    """`--poses track` on the colour images alone and COLMAP on redkitchen COLMAP_FRAMES, back to back."""
    out_dir = Path(context.work_dir) / "track" / "rk4_track"
    ours: Measured = run_and_evaluate(
        ["--sequence", context.kitchen, "--frames", COLMAP_FRAMES, *KITCHEN_CONFIG, *POSES["track --scale gt (colour only)"][1]], out_dir
    )
    sequence = open_sequence(context.kitchen, frames=COLMAP_FRAMES)
    settings = ColmapSettings()
    print(f"  COLMAP (pycolmap) on {len(sequence)} frames: SIFT ({settings.max_num_features} features), "
          f"sequential matching (overlap {settings.overlap}), incremental mapping", flush=True)
    colmap = run_colmap(sequence, Path(context.work_dir) / "track" / "colmap", settings)
    print(f"    done in {colmap.total_seconds:.1f} s, {colmap.registered}/{colmap.images} images registered", flush=True)
    colmap_sim3 = evaluate_trajectory(colmap.world_T_cam_44, sequence.gt_world_T_cam_44, with_scale=True)
    ours_sim3 = ours.metric("trajectory_sim3", "ate_rmse")
    ours_seconds = ours.stage_seconds("poses")
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in colmap.seconds.items())
    table = Table(
        f"Monocular poses beside COLMAP: redkitchen {COLMAP_FRAMES} ({len(sequence)} frames, colour only)",
        [f"{ours.run.command} && python -m mvs.eval --out {out_dir}",
         f"pycolmap {import_pycolmap().__version__}: extract_features (SIFT, max {settings.max_num_features} per image, "
         f"one PINHOLE camera fx, fy, cx, cy = {sequence.camera.fx:g}, {sequence.camera.fy:g}, {sequence.camera.cx:g}, "
         f"{sequence.camera.cy:g}, fixed), match_sequential (overlap {settings.overlap}), incremental_mapping"],
        ["method", "frames posed", "ATE RMSE Sim(3)", "pose wall time", "frames/s", "ATE vs COLMAP",
         "speed vs COLMAP"],
        "lrrrrrr",
        notes=f"Both run back to back in the same suite on the same decoded frames and are aligned to the "
              f"ground truth by Sim(3) over the frames each posed. Our time is the pose stage of report.json "
              f"(frame decoding and the scale fit to the ground truth included); COLMAP's is feature extraction, matching and "
              f"mapping ({stages}; writing its input images excluded), on all cores. COLMAP's poses are those "
              f"of its largest model ({colmap.models} model(s)).",
    )
    table.add_row("ours: `--poses track`", f"{ours.report['frames_posed']}/{len(sequence)}", cm(ours_sim3),
                  fmt(ours_seconds, 1, " s"), fmt(ours.report["frames_posed"] / ours_seconds, 0),
                  f"{ours_sim3 / colmap_sim3.ate_rmse:.2f}x", f"{colmap.total_seconds / ours_seconds:.1f}x faster")
    table.add_row("COLMAP (pycolmap, incremental)", f"{colmap.registered}/{colmap.images}", cm(colmap_sim3.ate_rmse),
                  fmt(colmap.total_seconds, 1, " s"), fmt(colmap.registered / colmap.total_seconds, 1), "1.00x", "1.0x")
    data = {
        "frames": COLMAP_FRAMES,
        "ours": {"command": ours.run.command, "pose_seconds": ours_seconds, "ate_sim3": ours_sim3,
                 "frames_posed": ours.report["frames_posed"], "eval": ours.evaluation},
        "colmap": {"settings": vars(settings), "seconds": colmap.seconds, "registered": colmap.registered,
                   "images": colmap.images, "models": colmap.models, "ate_sim3": colmap_sim3.ate_rmse},
        "ate_ratio": ours_sim3 / colmap_sim3.ate_rmse,
        "speed_ratio": colmap.total_seconds / ours_seconds,
    }
    return table, data


def run(context: BenchContext) -> tuple[list[Table], dict]:
    import_pycolmap()
    poses_table, poses_data = pose_runs(context)
    colmap_table, colmap_data = colmap_comparison(context)
    return [poses_table, colmap_table], {"runs": poses_data, "colmap_comparison": colmap_data}
