"""`python -m mvs.batch` on a local Ray instance with 2 CPUs: tiny synthetic rooms, a broken
folder, a worker killed mid-scene, Ctrl-C; and the pieces that need no Ray."""

import _thread
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mvs.batch.__main__ import check_run_flags, main, parse_memory
from mvs.batch.driver import BatchSettings, run_batch
from mvs.batch.scenes import expand_entries, make_scenes
from mvs.batch.summary import TOTAL_LABEL, totals
from mvs.batch.task import SceneResult, eval_metrics, run_scene
from mvs.synth import RoomSpec, generate_room

ray = pytest.importorskip("ray", reason="Ray is the optional extra `pip install -e .[batch]`")

FRAMES = 12
RUN_FLAGS = ["--device", "cpu", "--no-render", "--voxel-size", "0.05"]


@pytest.fixture(scope="module")
def rooms(tmp_path_factory) -> Path:
    """rooms/room1 and rooms/room2 (12 frames, 128x96) and rooms/broken, a folder in no layout."""
    root = tmp_path_factory.mktemp("batch") / "rooms"
    for seed in (1, 2):
        generate_room(RoomSpec(seed=seed, num_frames=FRAMES, width=128, height=96), root / f"room{seed}", progress=False)
    (root / "broken").mkdir()
    (root / "broken" / "notes.md").write_text("not a capture\n")
    return root


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the module; the batches join it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def read_summary(outputs: Path) -> dict[str, dict[str, str]]:
    with open(outputs / "batch" / "summary.csv") as stream:
        return {row["scene"]: row for row in csv.DictReader(stream)}


def test_two_rooms_complete_the_broken_one_fails_after_a_retry_and_a_rerun_skips_the_finished(
        rooms, local_ray, tmp_path, capsys):
    outputs = tmp_path / "out"
    argv = [str(rooms / "*"), "--outputs", str(outputs), "--", *RUN_FLAGS]
    assert main(argv) == 1
    printed = capsys.readouterr()
    assert str(outputs / "batch" / "summary.csv") in printed.out and "2 complete, 1 failed" in printed.out
    rows = read_summary(outputs)
    # As with mvs.run, an absolute sequence path writes to outputs/<its folder name>.
    labels = {name: name for name in ("room1", "room2", "broken")}
    assert set(rows) == {*labels.values(), TOTAL_LABEL}
    for name in ("room1", "room2"):
        row, out_dir = rows[labels[name]], outputs / labels[name]
        report = json.loads((out_dir / "report.json").read_text())
        assert row["status"] == report["status"] == "complete" and row["attempts"] == "1"
        assert int(row["frames_fused"]) == report["frames_fused"] == FRAMES
        assert float(row["seconds_fusion"]) == pytest.approx(report["seconds"]["fusion"], abs=0.05)
        assert 100 < float(row["peak_rss_mb"]) < 4096
        assert (out_dir / "mesh.ply").is_file() and (out_dir / "batch.json").is_file()
    broken = rows[labels["broken"]]
    assert broken["status"] == "failed" and broken["attempts"] == "2"
    assert "unknown sequence layout" in broken["error"]
    assert (outputs / labels["broken"] / "batch.log").read_text().count("unknown sequence layout") >= 2
    total = rows[TOTAL_LABEL]
    assert total["status"] == "2 complete, 1 failed" and int(total["frames_fused"]) == 2 * FRAMES
    assert float(total["scenes_per_hour"]) == pytest.approx(2 / float(total["wall_seconds"]) * 3600, rel=0.02)
    assert "scenes/hour" in (outputs / "batch" / "summary.html").read_text()

    finished_at = {name: (outputs / labels[name] / "report.json").stat().st_mtime for name in ("room1", "room2")}
    assert main(argv) == 1
    rows = read_summary(outputs)
    for name in ("room1", "room2"):
        assert rows[labels[name]]["status"] == "skipped"
        assert rows[labels[name]]["frames_fused"] == str(FRAMES) and float(rows[labels[name]]["peak_rss_mb"]) > 100
        assert (outputs / labels[name] / "report.json").stat().st_mtime == finished_at[name]
    assert rows[labels["broken"]]["status"] == "failed" and rows[labels["broken"]]["attempts"] == "2"


def test_a_worker_killed_mid_scene_is_retried(rooms, local_ray, tmp_path):
    marker = tmp_path / "killed-once"

    def killed_mid_scene_on_first_attempt(scene, options, reconstruct):
        """The scene's task, whose first attempt kills its own worker once the scene has begun
        (its attempt header is in batch.log; the pipeline is still loading)."""
        if not marker.exists():
            marker.touch()
            log = Path(scene.out_dir) / "batch.log"

            def kill_once_begun():
                while not (log.is_file() and options.batch_id in log.read_text()):
                    time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGKILL)

            threading.Thread(target=kill_once_begun, daemon=True).start()
        return run_scene(scene, options, reconstruct)

    scenes = make_scenes([str(rooms / "room1")], tmp_path / "out")
    outcome = run_batch(scenes, BatchSettings(outputs_root=tmp_path / "out", run_flags=tuple(RUN_FLAGS)),
                        task=killed_mid_scene_on_first_attempt)
    assert marker.exists() and not outcome.interrupted
    [result] = outcome.results
    assert result.status == "complete" and result.attempts == 2 and result.frames_fused == FRAMES


def test_a_scene_runs_at_most_twice_whether_its_worker_dies_or_it_raises(rooms, local_ray, tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()

    def dies_then_raises(scene, options, reconstruct):
        """First call: the worker dies; second: the pipeline would raise; never a third."""
        (calls / str(len(list(calls.iterdir())))).touch()
        if len(list(calls.iterdir())) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("a bug outside the pipeline")

    scenes = make_scenes([str(rooms / "room1")], tmp_path / "out")
    outcome = run_batch(scenes, BatchSettings(outputs_root=tmp_path / "out"), task=dies_then_raises)
    [result] = outcome.results
    assert len(list(calls.iterdir())) == 2
    assert result.status == "failed" and result.attempts == 2
    assert result.error == "RuntimeError: a bug outside the pipeline"


def test_a_request_larger_than_the_local_instance_is_refused(rooms, local_ray, tmp_path):
    scenes = make_scenes([str(rooms / "room1")], tmp_path / "out")
    with pytest.raises(ValueError, match="CPU 3 > 2"):
        run_batch(scenes, BatchSettings(outputs_root=tmp_path / "out", cpus_per_scene=3))
    assert ray.is_initialized()


def test_sigterm_stops_a_batch_on_its_own_local_instance_cleanly(rooms, tmp_path):
    """The command as a user runs it (it starts its own Ray instance, beside the module's):
    SIGTERM while the scene runs cancels it, writes the summary and exits with 130."""
    outputs = tmp_path / "out"
    log = outputs / "room1" / "batch.log"
    process = subprocess.Popen([sys.executable, "-m", "mvs.batch", str(rooms / "room1"), "--outputs", str(outputs),
                                "--num-cpus", "1", "--", *RUN_FLAGS],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not log.is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    printed, _ = process.communicate(timeout=60)
    assert process.returncode == 130, printed
    assert "interrupted" in printed and read_summary(outputs)[TOTAL_LABEL]["status"] == "1 cancelled"
    assert not (outputs / "room1" / "report.json").exists()


def test_ctrl_c_cancels_the_running_scenes_and_writes_the_summary(rooms, local_ray, tmp_path):
    started = tmp_path / "started"

    def slow(scene, options, reconstruct):
        started.touch()
        time.sleep(120)
        return run_scene(scene, options, reconstruct)

    def interrupt_once_started():
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        _thread.interrupt_main()

    scenes = make_scenes([str(rooms / "room1"), str(rooms / "room2")], tmp_path / "out")
    threading.Thread(target=interrupt_once_started, daemon=True).start()
    begin = time.monotonic()
    outcome = run_batch(scenes, BatchSettings(outputs_root=tmp_path / "out"), task=slow)
    assert outcome.interrupted and time.monotonic() - begin < 60
    assert [r.status for r in outcome.results] == ["cancelled", "cancelled"]
    rows = read_summary(tmp_path / "out")
    assert rows[TOTAL_LABEL]["status"] == "2 cancelled"
    assert not any((Path(scene.out_dir) / "report.json").exists() for scene in scenes)


def test_list_files_globs_and_output_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("scene0000_00", "scene0000_01", "scene0001_00"):
        (tmp_path / "sequences" / "scannet" / name).mkdir(parents=True)
    split = tmp_path / "split.txt"
    split.write_text("scene0000_00\n\n# a comment\nscene0001_00  # trailing comment\n")
    sequences = expand_entries([str(split), "sequences/scannet/scene0000_*"], root=Path("sequences/scannet"))
    assert sequences == ["sequences/scannet/scene0000_00", "sequences/scannet/scene0001_00",
                         "sequences/scannet/scene0000_00", "sequences/scannet/scene0000_01"]
    scenes = make_scenes(sequences, Path("out"))
    assert [s.name for s in scenes] == ["scannet/scene0000_00", "scannet/scene0001_00", "scannet/scene0000_01"]
    assert scenes[0].out_dir == str(tmp_path / "out" / "scannet" / "scene0000_00")
    assert scenes[0].sequence == str(tmp_path / "sequences" / "scannet" / "scene0000_00")
    (tmp_path / "a" / "scene0000_00").mkdir(parents=True)
    (tmp_path / "b" / "scene0000_00").mkdir(parents=True)
    [outside] = make_scenes(["a/scene0000_00"], Path("out"))
    assert (outside.name, outside.sequence) == ("scene0000_00", str(tmp_path / "a" / "scene0000_00"))
    with pytest.raises(ValueError, match="would both write to"):
        make_scenes([str(tmp_path / "a" / "scene0000_00"), "b/scene0000_00"], Path("out"))
    with pytest.raises(ValueError, match="matches no file"):
        expand_entries(["sequences/tum/*"])


def test_flags_the_batch_owns_are_refused_and_sizes_parse():
    check_run_flags(["--poses", "track", "--depth", "learned"])
    with pytest.raises(ValueError, match="--out"):
        check_run_flags(["--out", "x"])
    assert parse_memory("4G") == 4 * 2**30 and parse_memory("512MiB") == 512 * 2**20
    assert parse_memory("1.5GB") == int(1.5 * 2**30)


def test_totals_and_metrics():
    def scene(status: str, frames: int | None, fusion_s: float | None) -> SceneResult:
        return SceneResult(status, "", "", status=status, frames_fused=frames,
                           seconds={} if fusion_s is None else {"fusion": fusion_s}, peak_rss_mb=frames)

    total = totals([scene("complete", 10, 1.5), scene("complete", 20, 2.0), scene("skipped", 30, 4.0),
                    scene("failed", None, None)], elapsed_seconds=1800.0)
    assert total.statuses == {"complete": 2, "skipped": 1, "failed": 1}
    assert total.frames_fused == 60 and total.seconds == {"fusion": pytest.approx(7.5)}
    assert total.scenes_per_hour == pytest.approx(4.0) and total.peak_rss_mb == 30
    evaluation = {"mesh": {"fscore": 0.9, "accuracy": 0.01, "completeness": 0.02}, "depth": None,
                  "trajectory_se3": {"ate_rmse": 0.05}, "trajectory_sim3": None}
    assert eval_metrics(evaluation) == {"mesh_fscore": 0.9, "mesh_accuracy_m": 0.01, "mesh_completeness_m": 0.02,
                                        "ate_se3_m": 0.05}


def test_the_batch_suite_reads_scenes_per_hour_and_worker_memory_from_the_summary(tmp_path):
    from mvs.bench.batch import read_summary as read_bench_figures
    from mvs.batch.summary import write_summary

    def scene(name: str, status: str, seconds: float, peak_mb: float) -> SceneResult:
        return SceneResult(name, "", "", status=status, wall_seconds=seconds, peak_rss_mb=peak_mb)

    results = [scene("a", "complete", 100.0, 900.0), scene("b", "complete", 140.0, 1100.0)]
    write_summary(results, tmp_path, elapsed_seconds=240.0)
    figures = read_bench_figures(tmp_path / "summary.csv")
    assert figures.complete == 2 and figures.batch_seconds == pytest.approx(240.0)
    assert figures.scenes_per_hour == pytest.approx(30.0, abs=0.05)
    assert figures.scene_seconds == [100.0, 140.0] and figures.peak_rss_mb == [900.0, 1100.0]
    write_summary([*results, scene("c", "failed", 5.0, 300.0)], tmp_path, elapsed_seconds=240.0)
    with pytest.raises(ValueError, match="expected every scene complete, got c"):
        read_bench_figures(tmp_path / "summary.csv")
