"""The product's own commands run as child processes, with wall time and peak memory.

A child's peak resident memory comes from `os.wait4` (Linux `ru_maxrss`: the largest
resident set of the child or of any process it waited for, not their sum). Linux carries the
parent's resident high-water mark into the child through exec, so the figure is only the
child's own when the parent is small at the spawn: suites start their children before they
load anything large themselves.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HEARTBEAT_SECONDS = 30.0


@dataclass
class BenchContext:
    """Where a suite reads data and writes its runs, and which of its rows to run.

    kitchen, tabletop: the 7-Scenes redkitchen and the tabletop sample folders, as paths
    relative to the working directory when they can be (they appear in the printed commands).
    work_dir: run outputs and logs. only: the groups of rows to run (empty: all); previous:
    the suite's figures from an earlier run (benchmarks.json), for the rows `only` leaves out.
    """

    kitchen: str
    work_dir: Path
    tabletop: str = ""
    only: tuple[str, ...] = ()
    previous: dict = field(default_factory=dict)


@dataclass
class ChildRun:
    """A finished child: its command line, wall seconds, peak resident MB and log file."""

    command: str
    seconds: float
    peak_rss_mb: float
    log: Path


@dataclass
class Measured:
    """An `mvs.run` child, its report.json and (when evaluated) its eval.json."""

    run: ChildRun
    report: dict
    evaluation: dict | None

    def stage_seconds(self, stage: str) -> float:
        return float(self.report["seconds"].get(stage, 0.0))

    def metric(self, *keys: str) -> float | None:
        """A number from eval.json by its keys (e.g. "mesh", "fscore"); None where absent."""
        value = self.evaluation
        for key in keys:
            if value is None:
                return None
            value = value.get(key)
        return value


def command_line(module: str, args: list[str]) -> str:
    return shlex.join(["python", "-m", module, *args])


def last_progress(log: Path) -> str:
    """The last progress line (tqdm redraws with carriage returns) of a child's log."""
    with open(log, "rb") as stream:
        stream.seek(max(0, log.stat().st_size - 2048))
        tail = stream.read().decode(errors="replace")
    lines = [line.strip() for line in tail.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_module(module: str, args: list[str], log: Path) -> ChildRun:
    """Run `python -m module args` with this interpreter, its output in `log`.

    Prints the command, a progress line every HEARTBEAT_SECONDS and the result; raises
    RuntimeError naming the log when the child fails.
    """
    command = command_line(module, args)
    print(f"  $ {command}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    heartbeat = start
    with open(log, "w") as stream:
        process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=stream, stderr=subprocess.STDOUT)
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.2)
                if time.perf_counter() - heartbeat > HEARTBEAT_SECONDS:
                    heartbeat = time.perf_counter()
                    print(f"    {heartbeat - start:.0f} s: {last_progress(log)[:120]}", flush=True)
        except BaseException:
            process.kill()
            process.wait()
            raise
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"`{command}` failed with exit code {process.returncode}; see {log}")
    run = ChildRun(command, seconds, usage.ru_maxrss / 1024.0, log)
    print(f"    done in {seconds:.1f} s, peak resident memory {run.peak_rss_mb:.0f} MB", flush=True)
    return run


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected the run to have written it")
    return json.loads(path.read_text())


def run_and_evaluate(run_args: list[str], out_dir: Path, evaluate: bool = True) -> Measured:
    """`python -m mvs.run run_args --out out_dir`, then `python -m mvs.eval --out out_dir`."""
    out = str(out_dir)
    run = run_module("mvs.run", [*run_args, "--out", out], out_dir / "run.log")
    evaluation = None
    if evaluate:
        run_module("mvs.eval", ["--out", out], out_dir / "eval.log")
        evaluation = read_json(out_dir / "eval.json")
    return Measured(run, read_json(out_dir / "report.json"), evaluation)
