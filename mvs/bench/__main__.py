"""`python -m mvs.bench depth|track|fusion|memory|inputs|costvolume|all`: benchmark tables into BENCHMARKS.md.

Runs the product's own commands (`python -m mvs.run`, `python -m mvs.eval`) on synthetic
rooms and on ../shared/data/7scenes-redkitchen, with peers in the same run (COLMAP through
pycolmap for poses, a plain NumPy TSDF for fusion), and writes each suite's tables under
the commands that produced them into BENCHMARKS.md, and the raw figures into benchmarks.json.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mvs.bench import costvolume, depth, fusion, inputs, memory, track
from mvs.bench.report import SuiteResult, Table, machine_line, update_json, update_markdown
from mvs.bench.runs import BenchContext

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_KITCHEN = PROJECT_ROOT.parent / "shared" / "data" / "7scenes-redkitchen"


@dataclass(frozen=True)
class Suite:
    title: str
    run: Callable[[BenchContext], tuple[list[Table], dict]]


SUITES = {
    "depth": Suite("Depth: learned vs classic vs sensor", depth.run),
    "track": Suite("Poses: track vs rgbd vs COLMAP, against ground truth", track.run),
    "fusion": Suite("Fusion speed: Open3D TSDF vs a plain NumPy TSDF", fusion.run),
    "memory": Suite("Memory: a 5000-frame synthetic run", memory.run),
    "inputs": Suite("Input readers: folder, .sens file and video", inputs.run),
    "costvolume": Suite("Cost volume: grid_sample reference against the fused kernels", costvolume.run),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mvs.bench", description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--kitchen", type=Path, default=DEFAULT_KITCHEN,
                        help="the 7-Scenes redkitchen folder (default ../shared/data/7scenes-redkitchen)")
    parser.add_argument("--work", type=Path, default=Path("outputs/bench"), help="folder for the runs' outputs and logs")
    parser.add_argument("--markdown", type=Path, default=Path("BENCHMARKS.md"), help="Markdown file to update")
    parser.add_argument("--json", type=Path, default=Path("benchmarks.json"), help="JSON file to update")
    return parser.parse_args(argv)


def display_path(path: Path) -> str:
    """`path` relative to the working directory (as the printed commands use it)."""
    return os.path.relpath(path.resolve())


def suite_command(args: argparse.Namespace, suite: str) -> str:
    words = ["python", "-m", "mvs.bench", suite]
    if args.kitchen.resolve() != DEFAULT_KITCHEN.resolve():
        words += ["--kitchen", str(args.kitchen)]
    if args.work != Path("outputs/bench"):
        words += ["--work", str(args.work)]
    return shlex.join(words)


def load_average() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.kitchen / "frame-000000.color.jpg").is_file():
        print(f"error: {args.kitchen}: expected the 7-Scenes redkitchen frames (frame-000000.color.jpg ...); "
              "give their folder with --kitchen", file=sys.stderr)
        return 2
    context = BenchContext(display_path(args.kitchen), args.work)
    machine = machine_line()
    print(f"machine: {machine}")
    names = list(SUITES) if args.suite == "all" else [args.suite]
    written: list[str] = []
    failed: list[str] = []
    for number, name in enumerate(names, 1):
        suite = SUITES[name]
        print(f"[{number}/{len(names)}] {name}: {suite.title}", flush=True)
        started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        load_start, start = load_average(), time.perf_counter()
        try:
            tables, data = suite.run(context)
        except (ImportError, RuntimeError, ValueError, FileNotFoundError) as error:
            print(f"error: suite {name}: {error}", file=sys.stderr)
            failed.append(name)
            continue
        result = SuiteResult(name, suite.title, suite_command(args, name), machine, started,
                             time.perf_counter() - start, (load_start, load_average()), tables, data)
        for table in tables:
            print("\n" + table.markdown() + "\n", flush=True)
        update_markdown(args.markdown, result, list(SUITES))
        update_json(args.json, result)
        written.append(name)
    if written:
        print(f"wrote the {', '.join(written)} section(s) of {args.markdown} and {args.json}")
    if failed:
        print(f"failed: {', '.join(failed)} (their sections are unchanged)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
