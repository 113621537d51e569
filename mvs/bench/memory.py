"""`memory` suite: peak resident memory of a 5000-frame synthetic run.

The sequence is the default room's closed camera loop (`synthetic/room0`, 300 frames at
640x480, its last frame one step before its first) traversed again and again: frame i of
the 5000-frame ScanNet-layout folder links to frame i mod 300 of the room, so the camera
circles the room 16.7 times along a continuous path, read from disk by the ordinary loader.
`python -m mvs.run` runs on the first 1000 frames and on all 5000 in child processes: a
bounded run has about the same peak whatever the number of frames.
"""

from __future__ import annotations

import os
from pathlib import Path

from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext, run_and_evaluate
from mvs.pipeline import SEQUENCES_DIR
from mvs.synth import ensure_room

ROOM = "synthetic/room0"
ROOM_FRAMES = 300
FRAMES = 5000
LIMIT_MB = 4096
POSES = {"gt poses, sensor depth": [], "track --scale sensor, sensor depth": ["--poses", "track", "--scale", "sensor"]}
SELECTIONS = {1000: "0:1000", FRAMES: ":"}


def link_looped_room(room_dir: Path, out_dir: Path, frames: int) -> Path:
    """A ScanNet-layout folder of `frames` frames whose frame i links to frame i mod N of
    the closed-loop room in `room_dir` (N frames); made once, then reused."""
    room_frames = len(list((room_dir / "pose").glob("*.txt")))
    if room_frames == 0:
        raise ValueError(f"{room_dir}: expected a synthetic room with pose/<i>.txt files, found none")
    if (out_dir / "pose" / f"{frames - 1}.txt").exists():
        return out_dir
    for sub, suffix in (("color", "jpg"), ("depth", "png"), ("pose", "txt")):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
        for index in range(frames):
            link = out_dir / sub / f"{index}.{suffix}"
            if not link.is_symlink():
                link.symlink_to(os.path.relpath(room_dir / sub / f"{index % room_frames}.{suffix}", link.parent))
    for name in ("intrinsic", "mesh.ply"):
        if not (out_dir / name).is_symlink():
            (out_dir / name).symlink_to(os.path.relpath(room_dir / name, out_dir))
    return out_dir


def run(context: BenchContext) -> tuple[list[Table], dict]:
    room_dir = ensure_room(ROOM, SEQUENCES_DIR)
    sequence_dir = link_looped_room(room_dir, Path(context.work_dir) / "memory" / f"room0_loop{FRAMES}", FRAMES)
    print(f"  {sequence_dir}: {FRAMES} frames circling {room_dir}", flush=True)
    table = Table(
        f"Peak resident memory of `python -m mvs.run` on a {FRAMES}-frame synthetic sequence (640x480)",
        [],
        ["poses, depth", "frames", "wall (whole command)", "frames/s", "peak RSS", f"under {LIMIT_MB / 1024:.0f} GB"],
        "lrrrrl",
        notes=f"The sequence is `{ROOM}`'s closed 300-frame camera loop traversed {FRAMES / ROOM_FRAMES:.1f} times "
              f"(frame i is the room's frame i mod {ROOM_FRAMES}, linked, not copied), made by this suite in "
              f"{sequence_dir}. Peak RSS from wait4 of each child (the largest resident set of the run process).",
    )
    data = {"frames": FRAMES, "sequence": str(sequence_dir), "runs": {}}
    for poses, poses_args in POSES.items():
        for count, frames in SELECTIONS.items():
            name = f"{poses.split()[0]}_{count}"
            m = run_and_evaluate(["--sequence", str(sequence_dir), "--frames", frames, "--config", "configs/synthetic.yaml",
                                  *poses_args], Path(context.work_dir) / "memory" / name, evaluate=False)
            table.commands.append(m.run.command)
            selected = m.report["frames_selected"]
            table.add_row(poses, f"{count} ({m.report['frames_fused']} fused)", fmt(m.run.seconds, 0, " s"),
                          fmt(selected / m.run.seconds, 0), f"{m.run.peak_rss_mb:.0f} MB",
                          "yes" if m.run.peak_rss_mb < LIMIT_MB else "**no**")
            data["runs"][f"{poses} / {count} frames"] = {"command": m.run.command, "seconds": m.run.seconds,
                                                      "peak_rss_mb": m.run.peak_rss_mb, "report": m.report}
    return [table], data
