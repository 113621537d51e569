"""`python -m mvs.bench depth|track|fusion|memory|inputs|costvolume|batch|posegraph|all`: benchmark tables into BENCHMARKS.md.

Runs the product's own commands (`python -m mvs.run`, `python -m mvs.eval`) on synthetic
rooms, on ../shared/data/7scenes-redkitchen and ../shared/data/tabletop-sample, with peers in
the same run (COLMAP through pycolmap for poses, a plain NumPy TSDF for fusion), and writes
each suite's tables under the commands that produced them into BENCHMARKS.md, and the raw
figures into benchmarks.json. `--only NAME` runs one group of a suite's rows (`depth` and
`track` have groups); its other tables and rows keep their figures of the earlier run, marked
as kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mvs.bench import batch, costvolume, depth, fusion, inputs, memory, posegraph, track
from mvs.bench.report import SuiteResult, Table, machine_line, update_json, update_markdown
from mvs.bench.runs import BenchContext

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_KITCHEN = PROJECT_ROOT.parent / "shared" / "data" / "7scenes-redkitchen"
DEFAULT_TABLETOP = PROJECT_ROOT.parent / "shared" / "data" / "tabletop-sample"
KEPT_NOTE = "not re-run by `--only`"


@dataclass(frozen=True)
class Suite:
    """A suite's title, its run function and the names of its groups of rows (for `--only`)."""

    title: str
    run: Callable[[BenchContext], tuple[list[Table], dict]]
    groups: tuple[str, ...] = ()


SUITES = {
    "depth": Suite("Depth: learned vs classic vs sensor", depth.run, depth.GROUPS),
    "track": Suite("Poses: track vs rgbd vs COLMAP, against ground truth", track.run, track.ONLY_NAMES),
    "fusion": Suite("Fusion speed: Open3D TSDF vs a plain NumPy TSDF", fusion.run),
    "memory": Suite("Memory: a 5000-frame synthetic run", memory.run),
    "inputs": Suite("Input readers: folder, .sens file and video", inputs.run),
    "costvolume": Suite("Cost volume: grid_sample reference against the fused kernels", costvolume.run),
    "batch": Suite("Many scenes: `mvs.batch` with one and two workers", batch.run),
    "posegraph": Suite("Pose graph: the loop closure's Sim(3) solver by size", posegraph.run),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mvs.bench", description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=[*SUITES, "all"])
    parser.add_argument("--kitchen", type=Path, default=DEFAULT_KITCHEN,
                        help="the 7-Scenes redkitchen folder (default ../shared/data/7scenes-redkitchen)")
    parser.add_argument("--tabletop", type=Path, default=DEFAULT_TABLETOP,
                        help="the tabletop sample folder (default ../shared/data/tabletop-sample)")
    parser.add_argument("--work", type=Path, default=Path("outputs/bench"), help="folder for the runs' outputs and logs")
    parser.add_argument("--markdown", type=Path, default=Path("BENCHMARKS.md"), help="Markdown file to update")
    parser.add_argument("--json", type=Path, default=Path("benchmarks.json"), help="JSON file to update")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this group of the suite's rows (repeat or separate by commas); depth: "
                             + ", ".join(depth.GROUPS) + "; track: " + ", ".join(track.ONLY_NAMES))
    args = parser.parse_args(argv)
    args.only = tuple(name.strip() for value in args.only for name in value.split(",") if name.strip())
    if args.only:
        groups = () if args.suite == "all" else SUITES[args.suite].groups
        unknown = [name for name in args.only if name not in groups]
        if unknown:
            parser.error(f"--only {', '.join(unknown)}: the {args.suite} suite has "
                         + (f"the groups {', '.join(groups)}" if groups else "no groups to choose from"))
    return args


def display_path(path: Path) -> str:
    """`path` relative to the working directory (as the printed commands use it)."""
    return os.path.relpath(path.resolve())


def suite_command(args: argparse.Namespace, suite: str) -> str:
    words = ["python", "-m", "mvs.bench", suite]
    if args.kitchen.resolve() != DEFAULT_KITCHEN.resolve():
        words += ["--kitchen", str(args.kitchen)]
    if args.tabletop.resolve() != DEFAULT_TABLETOP.resolve():
        words += ["--tabletop", str(args.tabletop)]
    if args.work != Path("outputs/bench"):
        words += ["--work", str(args.work)]
    for name in args.only:
        words += ["--only", name]
    return shlex.join(words)


def previous_result(path: Path, suite: str) -> dict:
    """The suite's stored result in the JSON file at `path` (asdict of a SuiteResult), or {}."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get(suite, {})
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); remove it to start afresh") from error


def merged_with_previous(tables: list[Table], data: dict, previous: dict) -> tuple[list[Table], dict]:
    """`tables` and `data` of a run limited by `--only`, with the tables (by title) and figures
    (by key) of the `previous` result that it did not replace, in their places; a kept table
    says so in its notes."""
    new_by_title = {table.title: table for table in tables}
    merged = []
    for stored in previous.get("tables", []):
        table = new_by_title.pop(stored["title"], None)
        if table is None:
            table = Table(**stored)
            if KEPT_NOTE not in table.notes:
                table.notes = f"{table.notes} (Kept from the run of {previous['started_utc']}, {KEPT_NOTE}.)".strip()
        merged.append(table)
    return merged + list(new_by_title.values()), {**previous.get("data", {}), **data}


def load_average() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.kitchen / "frame-000000.color.jpg").is_file():
        print(f"error: {args.kitchen}: expected the 7-Scenes redkitchen frames (frame-000000.color.jpg ...); "
              "give their folder with --kitchen", file=sys.stderr)
        return 2
    context = BenchContext(display_path(args.kitchen), args.work, display_path(args.tabletop), args.only)
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
            previous = previous_result(args.json, name) if args.only else {}
            context.previous = previous.get("data", {})
            tables, data = suite.run(context)
        except (ImportError, RuntimeError, ValueError, FileNotFoundError) as error:
            print(f"error: suite {name}: {error}", file=sys.stderr)
            failed.append(name)
            continue
        if args.only:
            tables, data = merged_with_previous(tables, data, previous)
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
