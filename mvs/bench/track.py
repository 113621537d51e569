"""`track` suite: poses from `track` and `rgbd` against ground truth, hard cases for tracking,
and COLMAP beside `track`.

Each of our runs is `python -m mvs.run ... --poses P` (fusing sensor depth) then
`python -m mvs.eval`; the pose stage's frames/s come from report.json (frame decoding
included). COLMAP runs in this process on the same redkitchen frames right after our
tracker, and both are scored by ATE after Sim(3) alignment with slam/trajectory.py.

The hard cases (`HARD_CASES`) run with default settings (no `--config`): the kitchen
decimated, cut and revisited, the tabletop sample (another camera), and synthetic rooms with
fast motion, motion blur and a blank-wall stretch; the kitchen tracked with the nominal camera
of its dataset given, instead of the focal length its frames give, and the tabletop with
the focal length its frames give (`--intrinsics auto`) instead of its own. Their rows
show the pieces (maps) the tracker reports in report.json (`tracking.pieces`) and how each
joined the main map.

Rows come in groups (`GROUPS`; the hard cases also by their own key), and `context.only`
runs some of them alone; rows of the hard-case and decimated-COLMAP tables that did not run
are kept from `context.previous`, the suite's figures of an earlier run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from mvs.bench.colmap import ColmapSettings, import_pycolmap, run_colmap
from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext, Measured, run_and_evaluate
from mvs.io.layout import open_sequence
from slam.trajectory import evaluate_trajectory

FRAMES = "0:1000:2"
COLMAP_FRAMES = "0:1000:4"
DECIMATED_FRAMES = ("0:1000:10", "0:1000:20")
CUT_FRAMES = "0:450,550:1000"
REVISIT_FRAMES = "0:1000:2,1:600:2"
MONOCULAR = ["--poses", "track", "--scale", "gt"]
RGBD = ["--poses", "rgbd"]
POSES = {
    "track --scale sensor": ("track", ["--poses", "track", "--scale", "sensor"]),
    "track --scale gt (colour only)": ("track_mono", MONOCULAR),
    "rgbd": ("rgbd", RGBD),
}
"""Row label: output folder suffix and the run's pose arguments. With `--scale sensor` the sensor's
depth also joins the tracker's global adjustment; `--scale gt` leaves the tracking to the colour
images and takes one scale from the ground truth."""
SYNTHETIC_HARD_ROOMS = {
    "fast": ("synthetic/room0_fast8", "synthetic room0, fast motion (8x: 14 cm, 9 degrees per frame)"),
    "blur": ("synthetic/room0_blur1", "synthetic room0, motion blur (shutter open the whole frame: ~16 px streaks)"),
    "blankwall": ("synthetic/room0_blankwall", "synthetic room0, blank-wall stretch (19 frames see only the panel)"),
}
"""Hard-case key: the synthetic room (generated on first use, `mvs.synth` names) and its row label."""
GROUPS = ("poses", "colmap", "kitchen", "tabletop", "synthetic", "rgbd", "intrinsics", "colmap-decimated")
"""Groups of rows `--only` selects; a hard case's own key (`HARD_CASES`) selects that row alone."""


@dataclass(frozen=True)
class HardCase:
    """One row of the hard-case table: `key` (selectable by `--only`, as is `group`), the
    sequence label, the output folder under `track/hard/`, the sequence (`kitchen`,
    `tabletop`, or a synthetic room's name), its frame selection and the pose arguments."""

    key: str
    group: str
    label: str
    folder: str
    sequence: str
    frames: str | None
    poses_args: list[str]

    @property
    def poses(self) -> str:
        return " ".join(self.poses_args[1:])

    def run_args(self, context: BenchContext) -> list[str]:
        if self.sequence == "kitchen":
            sequence_args = ["--sequence", context.kitchen]
        elif self.sequence == "tabletop":
            sequence_args = ["--sequence", context.tabletop]
        else:
            sequence_args = ["--sequence", self.sequence]
        return [*sequence_args, *(["--frames", self.frames] if self.frames else []), *self.poses_args]


def kitchen_case(key: str, group: str, frames: str, what: str, folder: str, poses_args: list[str]) -> HardCase:
    return HardCase(key, group, f"redkitchen {frames}{what}", folder, "kitchen", frames, poses_args)


HARD_CASES = [
    kitchen_case("kitchen-2", "kitchen", FRAMES, "", "rk2", MONOCULAR),
    kitchen_case("kitchen-revisit", "kitchen", REVISIT_FRAMES, " (revisit)", "rk2_revisit", MONOCULAR),
    *(kitchen_case(f"kitchen-{frames.rsplit(':', 1)[1]}", "kitchen", frames, "", f"rk{frames.rsplit(':', 1)[1]}",
                   MONOCULAR) for frames in DECIMATED_FRAMES),
    kitchen_case("kitchen-cut", "kitchen", CUT_FRAMES, " (cut)", "rk_cut", MONOCULAR),
    HardCase("tabletop", "tabletop", "tabletop sample (50 frames, fx 615)", "tabletop", "tabletop", None, MONOCULAR),
    *(HardCase(key, "synthetic", label, name.removeprefix("synthetic/"), name, None, MONOCULAR)
      for key, (name, label) in SYNTHETIC_HARD_ROOMS.items()),
    kitchen_case("rgbd-20", "rgbd", DECIMATED_FRAMES[1], "", "rk20_rgbd", RGBD),
    kitchen_case("rgbd-cut", "rgbd", CUT_FRAMES, " (cut)", "rk_cut_rgbd", RGBD),
    kitchen_case("kitchen-2-nominal", "intrinsics", FRAMES, ", the dataset's nominal camera given (fx 525)",
                 "rk2_nominal", [*MONOCULAR, "--intrinsics", "525,525,320,240"]),
    HardCase("tabletop-auto", "intrinsics", "tabletop sample, focal length from the frames", "tabletop_auto", "tabletop",
             None, [*MONOCULAR, "--intrinsics", "auto"]),
]
"""The hard-case rows in table order (the revisit beside the same frames played once)."""
ONLY_NAMES = (*GROUPS, *(case.key for case in HARD_CASES))
"""What `--only` may name: a group, or one hard case."""


def cm(value: float | None) -> str:
    return fmt(None if value is None else value * 100, 2, " cm")


def pieces_cell(report: dict) -> str:
    """The maps the tracker reports (`tracking_pieces` of report.json) and how each joined the
    main one, e.g. "2: main 0-449 (225), merged 550-998 (225)"; "—" when it reports none."""
    pieces = report.get("tracking_pieces")
    if not pieces:
        return "—"
    parts = [f"{p['joined']} {p['first']}-{p['last']} ({p['frames']})" for p in pieces]
    return f"{len(pieces)}: {', '.join(parts)}"


class MeasuredRuns:
    """`run_and_evaluate` once per output folder: a run that two tables show is made once."""

    def __init__(self) -> None:
        self.done: dict[Path, Measured] = {}

    def get(self, run_args: list[str], out_dir: Path) -> Measured:
        if out_dir not in self.done:
            self.done[out_dir] = run_and_evaluate(run_args, out_dir)
        return self.done[out_dir]


def hard_case_record(context: BenchContext, case: HardCase, runs: MeasuredRuns) -> dict:
    """The figures of one hard case; a run or evaluation that fails is recorded as failed with its log."""
    out_dir = Path(context.work_dir) / "track" / "hard" / case.folder
    try:
        m = runs.get(case.run_args(context), out_dir)
    except RuntimeError as error:
        print(f"    {case.label}: {error}", flush=True)
        return {"label": case.label, "poses": case.poses, "failed": str(error),
                "cells": [case.label, case.poses, f"failed (logs in {out_dir})", "—", "—", "—"]}
    posed, frames = m.report["frames_posed"], m.report["frames_selected"]
    pose_seconds = m.stage_seconds("poses")
    ate_sim3 = m.metric("trajectory_sim3", "ate_rmse")
    cells = [case.label, case.poses, f"{posed}/{frames}", pieces_cell(m.report), cm(ate_sim3),
             fmt(frames / pose_seconds if pose_seconds > 0 else None, 1)]
    return {"label": case.label, "poses": case.poses, "command": f"{m.run.command} && python -m mvs.eval --out {out_dir}",
            "frames_posed": posed, "frames_selected": frames, "pieces": m.report.get("tracking_pieces"),
            "ate_sim3": ate_sim3, "pose_seconds": pose_seconds, "cells": cells}


def hard_case_table(context: BenchContext, runs: MeasuredRuns) -> tuple[Table, dict]:
    """The hard cases selected by `context.only`, beside the kept rows of an earlier run."""
    cases = HARD_CASES
    previous = (context.previous or {}).get("hard_cases", {})
    records = {case.key: previous[case.key] for case in cases if case.key in previous}
    kept = set(records)
    for case in cases:
        if selected(context, case.key, case.group):
            records[case.key] = hard_case_record(context, case, runs)
            kept.discard(case.key)
    kept_labels = [records[case.key]["label"] for case in cases if case.key in kept]
    table = Table(
        "Hard cases for tracking: colour only (`--poses track --scale gt`) and `--poses rgbd`, default settings",
        [records[case.key]["command"] for case in cases if case.key in records and "command" in records[case.key]],
        ["sequence", "poses", "frames posed / selected", "pieces (maps): how each joined, frames first-last (count)",
         "ATE RMSE Sim(3)", "pose stage frames/s"],
        "llrlrr",
        notes="No `--config`: what a new user gets. ATE of the posed camera centres after a Sim(3) fit to the "
              "ground truth. Pieces as the tracker reports them in report.json (`tracking_pieces`), — where it "
              "reports none. Frames/s: frames selected per second of the pose stage (frame decoding included). "
              "The tabletop sample's camera comes from its `intrinsics.K.txt`, which the reader finds; the kitchen's "
              "focal length from its frames, as its layout holds only its dataset's nominal camera; the synthetic "
              "rooms are `python -m mvs.synth --seed 0` with `--speed 8`, `--exposure 1` and `--blank-wall`."
              + (f" Kept from an earlier run (not selected by `--only`): {'; '.join(kept_labels)}." if kept_labels else ""),
    )
    for case in cases:
        if case.key in records:
            table.add_row(*records[case.key]["cells"])
    return table, records


def selected(context: BenchContext, *names: str) -> bool:
    """Whether `context.only` (empty: everything) names any of `names`."""
    return not context.only or any(name in context.only for name in names)


def pose_runs(context: BenchContext, runs: MeasuredRuns) -> tuple[Table, dict]:
    """track and rgbd on the synthetic room and on redkitchen FRAMES."""
    sequences = {
        "synthetic room0, 300 frames": ["--sequence", "synthetic/room0"],
        f"redkitchen {FRAMES}": ["--sequence", context.kitchen, "--frames", FRAMES],
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
            m = runs.get([*sequence_args, *poses_args], out_dir)
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


def colmap_comparison(context: BenchContext, runs: MeasuredRuns, frames: str, out_dir: Path) -> tuple[Table, dict]:
    """`--poses track` on the colour images alone (default settings) and COLMAP on redkitchen
    `frames`, back to back; our run is reused when another table of this suite made it."""
    ours: Measured = runs.get(["--sequence", context.kitchen, "--frames", frames, *MONOCULAR], out_dir)
    sequence = open_sequence(context.kitchen, frames=frames)
    settings = ColmapSettings()
    described = ", ".join(f"{name}={value}" for name, value in vars(settings).items())
    print(f"  COLMAP (pycolmap) on {len(sequence)} frames: {described}", flush=True)
    colmap = run_colmap(sequence, Path(context.work_dir) / "track" / f"colmap_{frames.replace(':', '_')}", settings)
    print(f"    done in {colmap.total_seconds:.1f} s, {colmap.registered}/{colmap.images} images registered", flush=True)
    colmap_sim3 = evaluate_trajectory(colmap.world_T_cam_44, sequence.gt_world_T_cam_44, with_scale=True)
    ours_sim3 = ours.metric("trajectory_sim3", "ate_rmse")
    ours_seconds = ours.stage_seconds("input") + ours.stage_seconds("poses")
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in colmap.seconds.items())
    table = Table(
        f"Monocular poses beside COLMAP: redkitchen {frames} ({len(sequence)} frames, colour only)",
        [f"{ours.run.command} && python -m mvs.eval --out {out_dir}",
         f"pycolmap {import_pycolmap().__version__}: SIFT features, matching and incremental mapping with one "
         f"PINHOLE camera fx, fy, cx, cy = {sequence.camera.fx:g}, {sequence.camera.fy:g}, {sequence.camera.cx:g}, "
         f"{sequence.camera.cy:g}, fixed; ColmapSettings({described})"],
        ["method", "frames posed", "ATE RMSE Sim(3)", "pose wall time", "frames/s", "ATE vs COLMAP",
         "speed vs COLMAP"],
        "lrrrrrr",
        notes=f"Ours with default settings (no `--config`). Both run back to back in the same suite on the same decoded frames and "
              f"are aligned to the ground truth by Sim(3) over the frames each posed. Our time is the input and pose "
              f"stages of report.json (the focal length estimate where the input chose one, frame decoding and the "
              f"scale fit to the ground truth included); COLMAP's is feature "
              f"extraction, matching and mapping ({stages}; writing its input images excluded), on all cores. "
              f"COLMAP's poses are those of its largest model ({colmap.models} model(s)).",
    )
    table.add_row("ours: `--poses track`", f"{ours.report['frames_posed']}/{len(sequence)}", cm(ours_sim3),
                  fmt(ours_seconds, 1, " s"), fmt(ours.report["frames_posed"] / ours_seconds, 0),
                  f"{ours_sim3 / colmap_sim3.ate_rmse:.2f}x", speed_ratio(colmap.total_seconds / ours_seconds))
    table.add_row("COLMAP (pycolmap, incremental)", f"{colmap.registered}/{colmap.images}", cm(colmap_sim3.ate_rmse),
                  fmt(colmap.total_seconds, 1, " s"), fmt(colmap.registered / colmap.total_seconds, 1), "1.00x", "1.0x")
    data = {
        "frames": frames,
        "ours": {"command": ours.run.command, "pose_seconds": ours_seconds, "ate_sim3": ours_sim3,
                 "frames_posed": ours.report["frames_posed"], "eval": ours.evaluation},
        "colmap": {"settings": vars(settings), "seconds": colmap.seconds, "registered": colmap.registered,
                   "images": colmap.images, "models": colmap.models, "ate_sim3": colmap_sim3.ate_rmse},
        "ate_ratio": ours_sim3 / colmap_sim3.ate_rmse,
        "speed_ratio": colmap.total_seconds / ours_seconds,
    }
    return table, data


def speed_ratio(ratio: float) -> str:
    """How many times as fast as the reference `ratio` (its time over ours) is, in words."""
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def run(context: BenchContext) -> tuple[list[Table], dict]:
    """The groups `context.only` selects (all without it), in the order of `GROUPS`."""
    if selected(context, "colmap", "colmap-decimated"):
        import_pycolmap()
    runs = MeasuredRuns()
    tables: list[Table] = []
    data: dict = {}
    if selected(context, "poses"):
        table, data["runs"] = pose_runs(context, runs)
        tables.append(table)
    if selected(context, "colmap"):
        out_dir = Path(context.work_dir) / "track" / "rk4_track"
        table, data["colmap_comparison"] = colmap_comparison(context, runs, COLMAP_FRAMES, out_dir)
        tables.append(table)
    if any(selected(context, case.key, case.group) for case in HARD_CASES):
        table, data["hard_cases"] = hard_case_table(context, runs)
        tables.append(table)
    if selected(context, "colmap-decimated"):
        data["colmap_decimated"] = {}
        for frames in DECIMATED_FRAMES:
            step = frames.rsplit(":", 1)[1]
            table, data["colmap_decimated"][frames] = colmap_comparison(
                context, runs, frames, Path(context.work_dir) / "track" / "hard" / f"rk{step}")
            tables.append(table)
    return tables, data
