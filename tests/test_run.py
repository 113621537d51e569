"""End to end: `python -m mvs.run` on a small synthetic room, and its behaviour on bad input."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import open3d as o3d

from fusion.export import read_confidence_hw
from fusion.metrics import cull_to_views, mesh_metrics
from fusion.reference import REFERENCE_FILE
from mvs.config import RunConfig
from mvs.io.layout import open_sequence
from mvs.io.settings import with_input_settings
from mvs.console import describe_run
from mvs.pipeline import default_out_dir, resolve_sources
from mvs.run import build_config, main, parse_args
from test_corrupt_frames import undecodable_jpeg


def run_cli(*args: str) -> int:
    return main(["--device", "cpu", "--no-render", *args])


def test_run_on_a_synthetic_room_writes_every_output_and_matches_the_truth(small_room, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--sequence", str(small_room), "--out", str(out), "--voxel-size", "0.04") == 0
    for name in ("mesh.ply", "cloud.ply", "trajectory.txt", "config.yaml", "report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete"
    assert report["frames_selected"] == report["frames_fused"] == 40
    trajectory_n8 = np.loadtxt(out / "trajectory.txt")
    assert trajectory_n8.shape == (40, 8)
    np.testing.assert_array_equal(trajectory_n8[:, 0], np.arange(40))

    sequence = open_sequence(str(small_room))
    reference = cull_to_views(o3d.io.read_triangle_mesh(str(sequence.mesh_path)), sequence.camera,
                              list(sequence.gt_world_T_cam_44.values()), depth_max=5.0)
    metrics = mesh_metrics(o3d.io.read_triangle_mesh(str(out / "mesh.ply")), reference, num_points=50_000)
    # 4 cm voxels on exact depth: the surface lies within a voxel of the truth.
    assert metrics.accuracy < 0.02
    assert metrics.fscore > 0.85


def test_frame_selection_keeps_dataset_indices(small_room, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--sequence", str(small_room), "--out", str(out), "--frames", "5:30:5",
                   "--voxel-size", "0.05") == 0
    np.testing.assert_array_equal(np.loadtxt(out / "trajectory.txt")[:, 0], [5, 10, 15, 20, 25])


def test_a_run_into_the_folder_of_an_earlier_one_leaves_only_its_own_depth_maps_and_no_stale_reference(
    small_room, tmp_path
):
    out = tmp_path / "out"
    for frames in ("0:40", "20:40"):
        assert run_cli("--sequence", str(small_room), "--out", str(out), "--frames", frames, "--voxel-size", "0.05",
                       "--depth", "classic", "--no-render") == 0
        assert not (out / REFERENCE_FILE).exists()
        # What mvs.eval caches for a run: a reference fused for that run's frames and settings.
        (out / REFERENCE_FILE).write_text("ply\n")
    report = json.loads((out / "report.json").read_text())
    maps = sorted(int(path.stem) for path in (out / "depth").glob("*.png"))
    assert len(maps) == report["depth_maps"] > 0 and all(20 <= index < 40 for index in maps)


def test_console_says_in_a_few_lines_what_was_found_and_chosen_and_the_full_configuration_with_verbose(
    small_room, tmp_path, capsys
):
    out = tmp_path / "out"
    assert run_cli("--sequence", str(small_room), "--out", str(out), "--frames", "0:10", "--voxel-size", "0.05") == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    before_progress = lines[: next(k for k, line in enumerate(lines) if line.startswith("fused "))]
    assert len(before_progress) < 15, captured.out
    assert before_progress[0].startswith(f"input:   {small_room} (scannet layout): 10 frames (--frames 0:10) of 160x120")
    assert "poses:   gt (auto: the sequence has poses); units: metres" in before_progress
    assert "depth:   sensor (auto: the sequence has sensor depth)" in before_progress
    assert f"outputs: {out} (the full configuration in config.yaml)" in before_progress
    assert lines[-2:] == [f"  {out / 'report.json'}", f"  {out / 'report.html'}"]
    assert "sdf_trunc_voxels" not in captured.out + captured.err
    assert "sdf_trunc_voxels: 4.0" in (out / "config.yaml").read_text()

    assert run_cli("--sequence", str(small_room), "--out", str(out), "--frames", "0:10", "--voxel-size", "0.05",
                   "--verbose") == 0
    verbose = capsys.readouterr().out
    assert "sdf_trunc_voxels: 4.0" in verbose and verbose.count("\n") > 100
    assert verbose.startswith((out / "config.yaml").read_text())


def test_missing_folder_and_unknown_layout_fail_with_the_path(tmp_path, capsys):
    assert run_cli("--sequence", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o1")) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_cli("--sequence", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "unknown sequence layout" in err


def test_bad_pose_file_names_the_file(small_room, tmp_path, capsys):
    room = shutil.copytree(small_room, tmp_path / "room")
    (room / "pose" / "3.txt").write_text("1 0 0\n0 1 0\n")
    assert run_cli("--sequence", str(room), "--out", str(tmp_path / "out")) == 2
    assert "3.txt" in capsys.readouterr().err


def test_too_many_unreadable_images_stop_the_run_keeping_what_was_fused_before_them(small_room, tmp_path, capsys):
    room = shutil.copytree(small_room, tmp_path / "room")
    for index in range(20, 25):  # whole files that fail to decode: found only when read
        undecodable_jpeg(room / "color" / f"{index}.jpg")
    out = tmp_path / "out"
    assert run_cli("--sequence", str(room), "--out", str(out), "--voxel-size", "0.05") == 2
    assert "5 of 40 selected frames cannot be read" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["status"].startswith("failed") and "24.jpg" in report["status"]
    assert sorted(report["skipped"]) == ["20", "21", "22", "23", "24"]
    assert report["frames_fused"] == 20
    assert len(o3d.io.read_triangle_mesh(str(out / "mesh.ply")).triangles) > 0


def test_poses_gt_without_ground_truth_says_so(small_room, tmp_path, capsys):
    room = shutil.copytree(small_room, tmp_path / "room")
    shutil.rmtree(room / "pose")
    (room / "pose").mkdir()
    assert run_cli("--sequence", str(room), "--out", str(tmp_path / "out"), "--poses", "gt") == 2
    assert "ground-truth poses" in capsys.readouterr().err


def test_classic_plane_sweep_writes_a_depth_map_per_planned_keyframe(small_room, tmp_path):
    out = tmp_path / "out"
    assert run_cli("--sequence", str(small_room), "--out", str(out), "--depth", "classic",
                   "--keyframes", "all", "--voxel-size", "0.05") == 0
    report = json.loads((out / "report.json").read_text())
    written = sorted(int(p.stem) for p in (out / "depth").glob("*.png"))
    assert report["depth_maps"] == len(written) > 0
    unplanned = [i for i, reason in report["skipped"].items() if reason == "no overlapping source frames"]
    assert report["keyframes"] == 40 == len(written) + len(unplanned)
    assert sorted(int(p.stem) for p in (out / "confidence").glob("*.png")) == written
    assert str(out / "depth") in report["outputs"] and str(out / "confidence") in report["outputs"]
    for index in written:
        depth_mm_hw = cv2.imread(str(out / "depth" / f"{index}.png"), cv2.IMREAD_UNCHANGED)
        confidence_hw = read_confidence_hw(out / "confidence" / f"{index}.png")
        # The classic regressor keeps depth only where it is confident (its minimum is 0.3; the
        # bilinear upsampling lowers that at the edges of the kept regions, never to 0).
        assert confidence_hw.shape == depth_mm_hw.shape and confidence_hw.max() <= 1.0
        assert np.all(confidence_hw[depth_mm_hw > 0] > 0) and np.median(confidence_hw[depth_mm_hw > 0]) >= 0.3
    sequence = open_sequence(str(small_room))
    position = sequence.indices.index(written[len(written) // 2])
    predicted_hw = cv2.imread(str(out / "depth" / f"{written[len(written) // 2]}.png"), cv2.IMREAD_UNCHANGED) / 1000.0
    truth_hw = sequence[position].depth_hw
    both_hw = (predicted_hw > 0) & (truth_hw > 0)
    # A winner-take-all sweep on exact poses and textured surfaces: most pixels within 10 %.
    assert np.mean(np.abs(predicted_hw[both_hw] / truth_hw[both_hw] - 1) < 0.1) > 0.6


def test_the_console_says_a_sweeps_voxels_follow_the_scene_unless_set(small_room, tmp_path):
    sequence = open_sequence(str(small_room))
    scaled = "TSDF voxels of 0.02 m for a room at 2.3 m, scaled to the scene's depth where it is measured,"
    for flags, voxels in (([], scaled),
                          (["--voxel-size", "0.05"], "TSDF voxels of 0.05 m,")):
        requested = build_config(parse_args(["--sequence", str(small_room), "--depth", "classic", *flags]))
        config = with_input_settings(resolve_sources(requested, sequence), sequence)
        lines = describe_run(requested, config, sequence, tmp_path).splitlines()
        assert next(line for line in lines if line.startswith("fusion:")).startswith(f"fusion:  {voxels}"), lines


def test_default_output_folder_is_named_after_the_sequence_without_a_file_extension():
    assert default_out_dir("synthetic/room0") == Path("outputs/synthetic/room0")
    assert default_out_dir("/data/captures/kitchen.mp4") == Path("outputs/kitchen")
    assert default_out_dir("../scans/scene0000_00.sens") == Path("outputs/scene0000_00")
    assert default_out_dir("/data/7scenes-redkitchen") == Path("outputs/7scenes-redkitchen")


def test_auto_sources_follow_what_the_sequence_has():
    def resolved(has_poses: bool, has_depth: bool) -> tuple[str, str]:
        config = resolve_sources(RunConfig(), SimpleNamespace(has_poses=has_poses, has_depth=has_depth))
        return config.tracking.poses, config.depth.source

    assert resolved(True, True) == ("gt", "sensor")
    assert resolved(False, True) == ("rgbd", "sensor")
    assert resolved(False, False) == ("track", "learned")
    assert resolved(True, False) == ("gt", "learned")
