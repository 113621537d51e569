"""`batch` suite: scenes per hour of `python -m mvs.batch` with one worker and with two.

Four small synthetic rooms (seeds SEEDS, FRAMES frames of WIDTH x HEIGHT, made once by
`python -m mvs.synth` in <work>/batch/scenes) are reconstructed by `python -m mvs.batch`
with RUN_FLAGS, `--force`, on a local Ray instance of 1 CPU (one scene at a time) and of
2 CPUs (two at a time), each into its own outputs folder; every scene asks for one CPU, so
its thread pools have one thread. Scenes per hour, each scene's task time and its worker's
peak resident memory come from the batch's summary.csv (the batch's time runs from the first
task submitted; Ray's start is outside it but inside the command's wall time).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from mvs.batch.summary import TOTAL_LABEL
from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext, command_line, run_module

SEEDS = (11, 12, 13, 14)
FRAMES = 48
WIDTH, HEIGHT = 320, 240
RUN_FLAGS = ["--poses", "track", "--scale", "sensor", "--depth", "classic"]
WORKERS = (1, 2)


@dataclass
class BatchFigures:
    """What one batch's summary.csv says: scenes completed, the batch's seconds and scenes
    per hour (its total row), and per scene the task's wall seconds and the worker's peak
    resident memory (MB)."""

    complete: int
    batch_seconds: float
    scenes_per_hour: float
    scene_seconds: list[float]
    peak_rss_mb: list[float]


def read_summary(path: Path) -> BatchFigures:
    """The figures of a batch's summary.csv; ValueError when a scene did not complete."""
    with open(path) as stream:
        rows = list(csv.DictReader(stream))
    scenes = [row for row in rows if row["scene"] != TOTAL_LABEL]
    [total] = [row for row in rows if row["scene"] == TOTAL_LABEL]
    unfinished = [f"{row['scene']} ({row['status']}: {row['error']})" for row in scenes if row["status"] != "complete"]
    if unfinished:
        raise ValueError(f"{path}: expected every scene complete, got {', '.join(unfinished)}")
    return BatchFigures(len(scenes), float(total["wall_seconds"]), float(total["scenes_per_hour"]),
                        [float(row["wall_seconds"]) for row in scenes], [float(row["peak_rss_mb"]) for row in scenes])


def synthetic_rooms(scenes_dir: Path, table: Table) -> list[Path]:
    """The synthetic rooms of the suite in `scenes_dir`, generated where missing; their
    commands go into `table`."""
    rooms = []
    for seed in SEEDS:
        room = scenes_dir / f"room{seed}"
        args = ["--seed", str(seed), "--frames", str(FRAMES), "--width", str(WIDTH), "--height", str(HEIGHT),
                "--out", str(room)]
        if room.is_dir():
            print(f"  {room}: made by an earlier run", flush=True)
            table.commands.append(command_line("mvs.synth", args))
        else:
            log = scenes_dir.parent / "logs" / f"room{seed}.log"
            table.commands.append(run_module("mvs.synth", args, log).command)
        rooms.append(room)
    return rooms


def run(context: BenchContext) -> tuple[list[Table], dict]:
    work_dir = Path(context.work_dir) / "batch"
    table = Table(
        f"`python -m mvs.batch` over {len(SEEDS)} synthetic rooms ({FRAMES} frames of {WIDTH}x{HEIGHT}), "
        f"`{' '.join(RUN_FLAGS)}`",
        [],
        ["workers (`--num-cpus`)", "scenes", "wall (whole command)", "batch time", "scenes/hour", "time per scene",
         "worker peak RSS, max", "worker peak RSS, mean", "load before / after"],
        "lrrrrrrrr",
    )
    rooms = synthetic_rooms(work_dir / "scenes", table)
    data = {"frames": FRAMES, "width": WIDTH, "height": HEIGHT, "run_flags": RUN_FLAGS, "configurations": {}}
    for workers in WORKERS:
        outputs = work_dir / f"workers{workers}"
        load_before = os.getloadavg()[0]
        child = run_module("mvs.batch", [str(work_dir / "scenes" / "room*"), "--outputs", str(outputs),
                                       "--num-cpus", str(workers), "--force", "--", *RUN_FLAGS],
                         work_dir / "logs" / f"workers{workers}.log")
        load_after = os.getloadavg()[0]
        figures = read_summary(outputs / "batch" / "summary.csv")
        if figures.complete != len(rooms):
            raise ValueError(f"{outputs}: expected {len(rooms)} scenes in summary.csv, got {figures.complete}")
        table.commands.append(child.command)
        mean_scene_s = sum(figures.scene_seconds) / len(figures.scene_seconds)
        table.add_row(str(workers), str(figures.complete), fmt(child.seconds, 0, " s"),
                      fmt(figures.batch_seconds, 0, " s"), fmt(figures.scenes_per_hour, 0),
                      fmt(mean_scene_s, 1, " s"), f"{max(figures.peak_rss_mb):.0f} MB",
                      f"{sum(figures.peak_rss_mb) / len(figures.peak_rss_mb):.0f} MB",
                      f"{load_before:.1f} / {load_after:.1f}")
        data["configurations"][f"{workers} workers"] = {
            "command": child.command, "command_seconds": child.seconds, "batch_seconds": figures.batch_seconds,
            "scenes": figures.complete, "scenes_per_hour": figures.scenes_per_hour,
            "scene_seconds": figures.scene_seconds, "peak_rss_mb": figures.peak_rss_mb,
            "load_average": [load_before, load_after]}
    one, two = (data["configurations"][f"{w} workers"]["scenes_per_hour"] for w in WORKERS)
    shared = any(data["configurations"][f"{w} workers"]["load_average"][1] > w + 0.75 for w in WORKERS)
    table.notes = (
        f"Each scene is one Ray task asking for 1 CPU (one thread); `--num-cpus` sizes the local Ray instance, so "
        f"1 runs one scene at a time and 2 runs two. Two workers give {two / one:.2f}x the scenes/hour of one. "
        "Batch time and scenes/hour are those of summary.csv (from the first task submitted); the wall time adds "
        "Ray's start and stop. Time per scene is a task's own wall time; worker peak RSS is each worker "
        f"process's resident high-water mark (`ru_maxrss`), over the {len(rooms)} scenes. The last column is the "
        "1-minute load average before and after each batch"
        + (f"; after a batch it exceeded what the batch's own workers account for, so other jobs shared the "
           f"{os.cpu_count()} cores and the times are slower than on an idle machine." if shared else
           "; after each batch it stayed within what the batch's own workers account for.")
    )
    return [table], data
