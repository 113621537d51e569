"""`memory` suite: peak resident memory of a 5000-frame synthetic run.

The room is rendered once by `python -m mvs.synth` at 320x240 (5000 frames along one loop
of its camera path; cached in the work folder) and read from disk by the ordinary loader.
`python -m mvs.run` runs on the first 1000 frames and on all 5000 in child processes: a
bounded run has about the same peak whatever the number of frames.
"""

from __future__ import annotations

from pathlib import Path

from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext, run_and_evaluate, run_module

FRAMES = 5000
WIDTH, HEIGHT = 320, 240
SEED = 0
LIMIT_MB = 4096
POSES = {"gt poses, sensor depth": [], "track --scale sensor, sensor depth": ["--poses", "track", "--scale", "sensor"]}
SELECTIONS = {"first 1000": "0:1000", f"all {FRAMES}": ":"}


def ensure_long_room(context: BenchContext) -> tuple[Path, str]:
    """The rendered room's folder, rendered now unless a complete one is cached, and the
    command that renders it."""
    room_dir = Path(context.work_dir) / "memory" / f"room{SEED}_{FRAMES}_{WIDTH}x{HEIGHT}"
    args = ["--seed", str(SEED), "--frames", str(FRAMES), "--width", str(WIDTH), "--height", str(HEIGHT),
            "--out", str(room_dir)]
    command = f"python -m mvs.synth {' '.join(args)}"
    if room_dir.is_dir() and len(list((room_dir / "pose").glob("*.txt"))) == FRAMES:
        print(f"  using the rendered room {room_dir}", flush=True)
        return room_dir, command
    if room_dir.exists():
        raise ValueError(f"{room_dir}: exists but does not hold {FRAMES} frames; remove it to render it again")
    print(f"  rendering {FRAMES} frames at {WIDTH}x{HEIGHT} (once; several minutes)", flush=True)
    return room_dir, run_module("mvs.synth", args, room_dir.with_name(room_dir.name + ".log")).command


def run(context: BenchContext) -> tuple[list[Table], dict]:
    room_dir, render_command = ensure_long_room(context)
    table = Table(
        f"Peak resident memory of `python -m mvs.run` on a {FRAMES}-frame synthetic room ({WIDTH}x{HEIGHT})",
        [render_command],
        ["poses, depth", "frames", "wall (whole command)", "frames/s", "peak RSS", f"under {LIMIT_MB / 1024:.0f} GB"],
        "lrrrrl",
        notes="Peak RSS from wait4 of each child (the largest resident set of the run process). "
              "The same room and path rendered at 640x480 holds 4x the pixels per frame; "
              "frame images are read lazily and never accumulated, so the frame count should not raise the peak.",
    )
    data = {"frames": FRAMES, "width": WIDTH, "height": HEIGHT, "render_command": render_command, "runs": {}}
    for poses, poses_args in POSES.items():
        for selection, frames in SELECTIONS.items():
            name = f"{poses.split()[0]}_{frames.replace(':', '-')}"
            m = run_and_evaluate(["--sequence", str(room_dir), "--frames", frames, "--config", "configs/synthetic.yaml",
                                  *poses_args], Path(context.work_dir) / "memory" / name, evaluate=False)
            table.commands.append(m.run.command)
            selected = m.report["frames_selected"]
            table.add_row(poses, f"{selection} ({m.report['frames_fused']} fused)", fmt(m.run.seconds, 0, " s"),
                          fmt(selected / m.run.seconds, 0), f"{m.run.peak_rss_mb:.0f} MB",
                          "yes" if m.run.peak_rss_mb < LIMIT_MB else "**no**")
            data["runs"][f"{poses} / {selection}"] = {"command": m.run.command, "seconds": m.run.seconds,
                                                      "peak_rss_mb": m.run.peak_rss_mb, "report": m.report}
    return [table], data
