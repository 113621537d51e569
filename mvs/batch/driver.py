"""The batch driver: one Ray task per scene, retries, Ctrl-C, and the summary as scenes finish.

Each scene runs `mvs.batch.task.run_scene` in a worker process of its own (`max_calls=1`:
a fresh process per scene, so a scene's peak memory is its own and nothing leaks into the
next). The driver counts a scene's attempts: a scene that fails with an exception, or whose
worker dies (Ray does not retry the task itself, `max_retries=0`), is submitted once more;
after its second attempt it is reported failed, and the others go on.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from fusion.export import write_json_atomic
from mvs.batch.scenes import RECORD_NAME, is_done, skipped_result
from mvs.batch.summary import write_summary
from mvs.batch.task import COMPLETE, Scene, SceneOptions, SceneResult, run_scene, run_status
from mvs.pipeline import OUTPUTS_DIR

MAX_ATTEMPTS = 2
WAIT_SECONDS = 1.0
SceneTask = Callable[[Scene, SceneOptions, bool], SceneResult]


@dataclass
class BatchSettings:
    """How a batch runs.

    outputs_root: where scenes write (`<outputs_root>/<scene>/`) and the summary goes
        (`<outputs_root>/batch/`). run_flags: `mvs.run` flags for every scene.
    evaluate: `mvs.eval` after each scene. force: rerun scenes that are complete.
    address: a Ray cluster to join; None starts a local Ray instance with `num_cpus` CPUs
        (None: all of this machine's).
    cpus_per_scene, gpus_per_scene, memory_per_scene (bytes; None: no request): each task's
        Ray resource request.
    """

    outputs_root: Path = OUTPUTS_DIR
    run_flags: tuple[str, ...] = ()
    evaluate: bool = False
    force: bool = False
    address: str | None = None
    num_cpus: int | None = None
    cpus_per_scene: float = 1.0
    gpus_per_scene: float = 0.0
    memory_per_scene: int | None = None

    @property
    def summary_dir(self) -> Path:
        return self.outputs_root / "batch"


@dataclass
class BatchOutcome:
    """A finished (or interrupted) batch: a result per scene in input order, the summary
    files, whether Ctrl-C stopped it, and its wall time (seconds)."""

    results: list[SceneResult]
    written: list[Path]
    interrupted: bool
    elapsed_seconds: float


def import_ray():
    """The `ray` module, or an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as error:
        raise ImportError("python -m mvs.batch needs Ray, an optional extra: pip install -e .[batch]") from error
    return ray


def connect(ray, settings: BatchSettings) -> bool:
    """Join Ray: this process's running instance if it has one, else the cluster at
    `settings.address`, else a new local instance (never a cluster found through RAY_ADDRESS
    or `ray start`); True when this call started it. This process keeps its SIGTERM handler
    (`ray.init` installs its own)."""
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    if settings.address:
        ray.init(address=settings.address, **quiet)
    else:
        ray.init(address="local", num_cpus=settings.num_cpus, include_dashboard=False, **quiet)
    if sigterm_handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm_handler)
    return True


def check_fits(ray, settings: BatchSettings) -> None:
    """Raise ValueError when a scene's resource request exceeds all of a local Ray instance
    (its tasks would wait forever); a cluster may add nodes, so it is not checked."""
    if settings.address:
        return
    available = ray.cluster_resources()
    requests = {"CPU": settings.cpus_per_scene, "GPU": settings.gpus_per_scene,
                "memory": settings.memory_per_scene or 0}
    short = [f"{name} {wanted:g} > {available.get(name, 0):g}" for name, wanted in requests.items()
             if wanted > available.get(name, 0)]
    if short:
        raise ValueError(f"each scene asks for more than this machine's Ray instance has ({', '.join(short)}); "
                         "lower --cpus-per-scene, --gpus-per-scene or --memory-per-scene")


def task_options(settings: BatchSettings) -> dict:
    """Ray options of a scene's task: its resource request, a fresh worker, and no retry by
    Ray (the driver retries, counting attempts)."""
    options = {"num_cpus": settings.cpus_per_scene, "num_gpus": settings.gpus_per_scene, "max_calls": 1,
               "max_retries": 0}
    if settings.memory_per_scene is not None:
        options["memory"] = settings.memory_per_scene
    return options


def lost_worker_result(scene: Scene, error: Exception) -> SceneResult:
    """A failed scene whose worker died or that Ray could not run; an exception raised in
    the task outside the pipeline is named by its cause."""
    error = getattr(error, "cause", None) or error
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return SceneResult(scene.name, scene.sequence, scene.out_dir, status="failed",
                       error=f"{type(error).__name__}: {message}")


def describe(result: SceneResult) -> str:
    """One line about a finished scene."""
    parts = [f"{result.frames_fused} frames fused" if result.frames_fused is not None else "",
             f"{result.wall_seconds:.0f} s" if result.wall_seconds is not None else "",
             f"peak {result.peak_rss_mb:.0f} MB" if result.peak_rss_mb is not None else "",
             f"attempt {result.attempts}" if result.attempts > 1 else "", result.error]
    return f"{result.status} {result.scene}: " + ", ".join(p for p in parts if p)


def catch_stop_signals(stop: threading.Event) -> dict[int, object]:
    """Make Ctrl-C (SIGINT) and SIGTERM set `stop` instead of raising in whatever Ray call
    the driver is in; the batch loop checks it between waits. Returns the handlers replaced
    (none off the main thread, where signals cannot be caught)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}


def restore_signals(handlers: dict[int, object]) -> None:
    """Put back the handlers `catch_stop_signals` replaced (those not set from Python stay)."""
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)


def run_batch(scenes: list[Scene], settings: BatchSettings, task: SceneTask = run_scene) -> BatchOutcome:
    """Run every scene that is not done yet as a Ray task of `task`, retrying as the module
    says; the summary is rewritten whenever a scene finishes, and once more at the end.
    Ctrl-C cancels the tasks still running or queued and ends the batch cleanly."""
    ray = import_ray()
    options = SceneOptions(uuid.uuid4().hex[:12], tuple(settings.run_flags), settings.evaluate,
                           str(Path.cwd()), max(1, int(settings.cpus_per_scene)))
    results = {scene.name: SceneResult(scene.name, scene.sequence, scene.out_dir) for scene in scenes}
    todo = []
    for scene in scenes:
        if not settings.force and is_done(scene, settings.evaluate):
            results[scene.name] = skipped_result(scene, settings.evaluate)
        else:
            todo.append(scene)
    if len(todo) < len(scenes):
        print(f"skipping {len(scenes) - len(todo)} scene(s) already complete (--force runs them again)", flush=True)
    started_ray = connect(ray, settings)
    try:
        check_fits(ray, settings)
    except ValueError:
        if started_ray:
            ray.shutdown()
        raise
    start = time.perf_counter()
    remote = ray.remote(**task_options(settings))(task)
    pending = {}
    attempts = {scene.name: 0 for scene in todo}

    def submit(scene: Scene) -> None:
        reconstruct = settings.force or run_status(Path(scene.out_dir)) != COMPLETE
        attempts[scene.name] += 1
        pending[remote.remote(scene, options, reconstruct)] = scene

    def summarise() -> list[Path]:
        return write_summary(list(results.values()), settings.summary_dir, time.perf_counter() - start)

    summarise()
    progress = tqdm(total=len(scenes), initial=len(scenes) - len(todo), desc="scenes", unit="scene")
    stop = threading.Event()
    handlers = catch_stop_signals(stop)
    try:
        for scene in todo:
            submit(scene)
        while pending and not stop.is_set():
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
            for ref in ready:
                scene = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:
                    result = lost_worker_result(scene, error)
                result.attempts = attempts[scene.name]
                if result.status != COMPLETE and result.attempts < MAX_ATTEMPTS:
                    progress.write(f"retrying {scene.name} after: {result.error}")
                    submit(scene)
                    continue
                results[scene.name] = result
                Path(scene.out_dir).mkdir(parents=True, exist_ok=True)
                write_json_atomic(Path(scene.out_dir) / RECORD_NAME, asdict(result))
                progress.write(describe(result))
                progress.update(1)
                summarise()
    finally:
        restore_signals(handlers)
        if stop.is_set():
            for ref in pending:
                ray.cancel(ref, force=True)
            for result in results.values():
                if result.status == "pending":
                    result.status = "cancelled"
        progress.close()
        written = summarise()
        if started_ray:
            ray.shutdown()
    return BatchOutcome(list(results.values()), written, stop.is_set(), time.perf_counter() - start)
