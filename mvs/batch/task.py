"""What a Ray worker does for one scene: the `mvs.run` pipeline, then optionally `mvs.eval`.

This module imports nothing heavy at the top, so that a worker can cap its thread pools to
the CPUs Ray gave the task before torch, Open3D and numba start theirs. A task returns a
`SceneResult` for every Python exception; only the death of its process escapes it. The
driver retries both once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

COMPLETE = "complete"
"""The `status` of a finished run in report.json (mvs/pipeline.py), and of a finished scene."""
LOG_NAME = "batch.log"
ATTEMPT_HEADER = "=== mvs.batch attempt"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass(frozen=True)
class Scene:
    """One sequence of a batch.

    name: its label, the output folder relative to the outputs root ("scannet/scene0000_00").
    sequence: what `mvs.run --sequence` gets (a name under sequences/ or an absolute path).
    out_dir: the absolute output folder.
    """

    name: str
    sequence: str
    out_dir: str


@dataclass(frozen=True)
class SceneOptions:
    """What every task of a batch shares.

    batch_id: names this invocation in the header each attempt writes to the scene's batch.log.
    run_flags: `mvs.run` flags for every scene (not --sequence, --out or --view).
    evaluate: run `mvs.eval` after the reconstruction.
    workdir: the driver's working directory (where `sequences/` and relative paths resolve).
    threads: the CPUs a task was given, the size of its thread pools.
    """

    batch_id: str
    run_flags: tuple[str, ...] = ()
    evaluate: bool = False
    workdir: str = "."
    threads: int = 1


@dataclass
class SceneResult:
    """One row of the summary. `status`: complete, failed, skipped (complete before this
    batch), cancelled or pending; `attempts`: the tasks this batch ran for the scene (set by
    the driver). `seconds` is report.json's seconds per stage (plus `eval`), `wall_seconds`
    the task's own wall time; `peak_rss_mb` the worker's peak resident memory; `metrics` a
    few figures of eval.json (metres where lengths)."""

    scene: str
    sequence: str
    out_dir: str
    status: str = "pending"
    attempts: int = 0
    frames_selected: int | None = None
    frames_fused: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float | None = None
    peak_rss_mb: float | None = None
    host: str = ""
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def read_json(path: Path) -> dict | None:
    """The mapping in `path`; None when it is missing or not (yet) valid JSON."""
    try:
        value = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def run_status(out_dir: Path) -> str | None:
    """The `status` report.json in `out_dir` gives; None without one."""
    report = read_json(out_dir / "report.json")
    return None if report is None else str(report.get("status"))


def eval_metrics(evaluation: dict) -> dict[str, float]:
    """The summary's metrics from an eval.json mapping: mesh F-score, accuracy and
    completeness at its threshold, depth AbsRel and delta < 1.25, ATE RMSE (SE(3), Sim(3))."""
    picks = {
        "mesh_fscore": ("mesh", "fscore"),
        "mesh_accuracy_m": ("mesh", "accuracy"),
        "mesh_completeness_m": ("mesh", "completeness"),
        "depth_abs_rel": ("depth", "abs_rel"),
        "depth_delta1": ("depth", "delta1"),
        "ate_se3_m": ("trajectory_se3", "ate_rmse"),
        "ate_sim3_m": ("trajectory_sim3", "ate_rmse"),
    }
    metrics = {}
    for name, (group, key) in picks.items():
        value = (evaluation.get(group) or {}).get(key)
        if value is not None:
            metrics[name] = float(value)
    return metrics


def fill_from_outputs(result: SceneResult, evaluate: bool) -> SceneResult:
    """`result` with the frame counts and stage seconds of report.json and, when `evaluate`,
    the metrics of eval.json, from its output folder."""
    out_dir = Path(result.out_dir)
    report = read_json(out_dir / "report.json")
    if report is not None:
        result.frames_selected = report.get("frames_selected")
        result.frames_fused = report.get("frames_fused")
        result.seconds = {**{k: float(v) for k, v in report.get("seconds", {}).items()}, **result.seconds}
    evaluation = read_json(out_dir / "eval.json") if evaluate else None
    if evaluation is not None:
        result.metrics = eval_metrics(evaluation)
    return result


def limit_threads(threads: int) -> None:
    """Size the thread pools of OpenMP (Open3D), BLAS, numba, torch and OpenCV to `threads`;
    the environment variables only take effect before those libraries are imported."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def reconstruct(scene: Scene, run_flags: tuple[str, ...]) -> None:
    """The `mvs.run` pipeline on `scene`, configured as `python -m mvs.run` would be by the
    same flags; raises what the pipeline raises."""
    from mvs.config import to_yaml
    from mvs.pipeline import run
    from mvs.run import build_config, parse_args

    config = build_config(parse_args([*run_flags, "--sequence", scene.sequence, "--out", scene.out_dir]))
    print(to_yaml(config), end="")
    run(config)


def evaluate_scene(out_dir: Path) -> None:
    """`mvs.eval` on the run in `out_dir` (with the config saved there): writes eval.json."""
    from mvs.config import RunConfig, load_yaml, update_dataclass
    from mvs.eval import evaluate, format_table

    config = RunConfig()
    saved = out_dir / "config.yaml"
    update_dataclass(config, load_yaml(saved), str(saved))
    print(format_table(evaluate(config, out_dir)))


def peak_rss_mb() -> float:
    """The largest resident set of this process so far (MB; Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_scene(scene: Scene, options: SceneOptions, reconstruct_scene: bool) -> SceneResult:
    """Reconstruct `scene` (unless `reconstruct_scene` is false: it is complete and only
    needs evaluating), evaluate it when `options.evaluate`, and report. Everything the
    pipeline prints goes to `<out_dir>/batch.log`."""
    start = time.perf_counter()
    if Path(options.workdir).is_dir():
        os.chdir(options.workdir)
    limit_threads(options.threads)
    out_dir = Path(scene.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = SceneResult(scene.name, scene.sequence, scene.out_dir, status="failed", host=socket.gethostname())
    with open(out_dir / LOG_NAME, "a") as log:
        print(f"{ATTEMPT_HEADER} {options.batch_id} on {result.host}, pid {os.getpid()}, "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')} ===", file=log, flush=True)
        handler = logging.StreamHandler(log)
        logging.getLogger().addHandler(handler)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                if reconstruct_scene:
                    reconstruct(scene, options.run_flags)
                if options.evaluate:
                    eval_start = time.perf_counter()
                    evaluate_scene(out_dir)
                    result.seconds["eval"] = time.perf_counter() - eval_start
            result.status = COMPLETE
        except Exception as error:  # noqa: BLE001 - any failure of a scene is reported, not raised
            result.error = f"{type(error).__name__}: {error}"
            traceback.print_exc(file=log)
        finally:
            logging.getLogger().removeHandler(handler)
    result.wall_seconds = time.perf_counter() - start
    result.peak_rss_mb = peak_rss_mb()
    return fill_from_outputs(result, options.evaluate)
