"""Benchmark package: the NumPy TSDF peer, the COLMAP pose conversion, tables and child runs.

Synthetic ground truth: a sphere of radius 0.5 m seen by 8 cameras on a ring 1.5 m from
its centre, with exact z-depth maps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from fusion.tsdf import TSDFVolume
from mvs.bench.colmap import image_name, index_from_name, world_T_cam_from_cam_from_world_44
from mvs.bench.memory import link_looped_room
from mvs.bench.numpy_tsdf import NumpyTSDF, frustum_bounds_23
from mvs.bench.report import SuiteResult, Table, replace_section, update_json, update_markdown
from mvs.bench.runs import last_progress, run_module
from mvs.config import FusionConfig
from mvs.geometry import invert_pose_44, look_at_world_T_cam_44, make_pose_44, quaternion_to_matrix_33
from mvs.types import Camera

VOXEL = 0.02
CENTRE_3 = np.array([0.0, 0.0, 1.0])
RADIUS = 0.5
CAMERA = Camera(np.array([[80.0, 0.0, 39.5], [0.0, 80.0, 29.5], [0.0, 0.0, 1.0]]), 80, 60)


def sphere_depth_hw(cam_T_world_44: np.ndarray) -> np.ndarray:
    """Exact z-depth (metres) of the sphere at every pixel centre, 0 where the ray misses."""
    u_hw, v_hw = np.meshgrid(np.arange(CAMERA.width), np.arange(CAMERA.height))
    rays_hw3 = np.stack([u_hw, v_hw, np.ones_like(u_hw)], axis=-1) @ np.linalg.inv(CAMERA.K_33).T
    centre_3 = cam_T_world_44[:3, :3] @ CENTRE_3 + cam_T_world_44[:3, 3]
    a_hw = np.sum(rays_hw3**2, axis=-1)
    b_hw = -2.0 * rays_hw3 @ centre_3
    c = centre_3 @ centre_3 - RADIUS**2
    discriminant_hw = b_hw**2 - 4 * a_hw * c
    hit_hw = discriminant_hw > 0
    t_hw = (-b_hw - np.sqrt(np.where(hit_hw, discriminant_hw, 0.0))) / (2 * a_hw)
    return np.where(hit_hw, t_hw, 0.0).astype(np.float32)


def ring_world_T_cam_n44() -> np.ndarray:
    angles_n = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    eyes_n3 = CENTRE_3 + 1.5 * np.stack([np.cos(angles_n), np.sin(angles_n), 0.3 * np.ones(8)], axis=1)
    return np.stack([look_at_world_T_cam_44(eye_3, CENTRE_3, np.array([0.0, 0.0, 1.0])) for eye_3 in eyes_n3])


def test_numpy_tsdf_agrees_with_open3d_on_a_sphere_within_a_voxel() -> None:
    config = FusionConfig(voxel_size=VOXEL, depth_max=3.0)
    trunc_m = VOXEL * config.sdf_trunc_voxels
    bounds_23 = np.stack([CENTRE_3 - 0.7, CENTRE_3 + 0.7])
    numpy_volume = NumpyTSDF(bounds_23, VOXEL, trunc_m, config.depth_max)
    open3d_volume = TSDFVolume(config)
    image_hw3 = np.full((CAMERA.height, CAMERA.width, 3), 128, np.uint8)
    for world_T_cam_44 in ring_world_T_cam_n44():
        cam_T_world_44 = invert_pose_44(world_T_cam_44)
        depth_hw = sphere_depth_hw(cam_T_world_44)
        numpy_volume.integrate(depth_hw, image_hw3, CAMERA, cam_T_world_44)
        open3d_volume.integrate(depth_hw, image_hw3, CAMERA, cam_T_world_44)
    vertices_n3 = np.asarray(open3d_volume.mesh().vertices)
    assert len(vertices_n3) > 1000
    # Open3D's surface lies on the sphere within half a voxel ...
    sphere_distance_n = np.abs(np.linalg.norm(vertices_n3 - CENTRE_3, axis=1) - RADIUS)
    assert np.percentile(sphere_distance_n, 99) < 0.5 * VOXEL
    # ... and the NumPy TSDF puts its zero crossing there too: within a voxel where it saw the
    # surface (projective distances differ most at grazing silhouettes, within two voxels).
    numpy_distance_n = np.abs(numpy_volume.tsdf_at_n(vertices_n3)) * trunc_m
    observed_n = np.isfinite(numpy_distance_n)
    assert observed_n.mean() > 0.95
    assert np.percentile(numpy_distance_n[observed_n], 99) < VOXEL
    assert np.max(numpy_distance_n[observed_n]) < 2 * VOXEL
    assert np.median(numpy_distance_n[observed_n]) < 0.25 * VOXEL
    # Colour is the running average of a constant image.
    seen_xyz = numpy_volume.weight_xyz > 0
    np.testing.assert_allclose(numpy_volume.colour_xyz3[seen_xyz], 128.0, atol=1e-3)


def test_frustum_bounds_of_one_camera_are_its_pyramid() -> None:
    world_T_cam_44 = make_pose_44(np.eye(3), np.array([1.0, 2.0, 3.0]))
    bounds_23 = frustum_bounds_23(CAMERA, world_T_cam_44[None], np.array([2.0]))
    expected_min_3 = np.array([1.0 - 39.5 / 80 * 2, 2.0 - 29.5 / 80 * 2, 3.0])
    expected_max_3 = np.array([1.0 + 40.5 / 80 * 2, 2.0 + 30.5 / 80 * 2, 5.0])
    np.testing.assert_allclose(bounds_23, np.stack([expected_min_3, expected_max_3]), atol=1e-9)


def test_colmap_cam_from_world_becomes_our_world_T_cam() -> None:
    R_33 = quaternion_to_matrix_33(np.array([0.1, -0.3, 0.2, 0.9]) / np.linalg.norm([0.1, -0.3, 0.2, 0.9]))
    world_T_cam_44 = make_pose_44(R_33, np.array([0.5, -1.0, 2.0]))
    cam_from_world_34 = invert_pose_44(world_T_cam_44)[:3, :]
    converted_44 = world_T_cam_from_cam_from_world_44(cam_from_world_34)
    np.testing.assert_allclose(converted_44, world_T_cam_44, atol=1e-12)
    # The camera centre is where cam_from_world sends to the origin of the camera.
    np.testing.assert_allclose(cam_from_world_34 @ np.append(converted_44[:3, 3], 1.0), 0.0, atol=1e-12)
    assert index_from_name(image_name(396)) == 396


def test_colmap_conversion_matches_pycolmap_projection_centre() -> None:
    pycolmap = pytest.importorskip("pycolmap", reason="pycolmap is the optional 'bench' dependency")
    cam_from_world = pycolmap.Rigid3d(pycolmap.Rotation3d(np.array([0.2, 0.1, -0.3, 0.92]) / np.linalg.norm([0.2, 0.1, -0.3, 0.92])), np.array([0.3, -0.2, 1.5]))
    world_T_cam_44 = world_T_cam_from_cam_from_world_44(cam_from_world.matrix())
    np.testing.assert_allclose(world_T_cam_44[:3, 3], cam_from_world.inverse().translation, atol=1e-9)
    np.testing.assert_allclose(world_T_cam_44[:3, :3], cam_from_world.inverse().rotation.matrix(), atol=1e-9)


def sample_table() -> Table:
    table = Table("Speed", ["python -m mvs.run --poses track"], ["what", "frames/s"], "lr", notes="Two rows.")
    table.add_row("ours", "142")
    table.add_row("peer", "3")
    return table


def test_table_markdown_has_commands_notes_and_aligned_columns() -> None:
    assert sample_table().markdown().splitlines() == [
        "### Speed", "", "```", "python -m mvs.run --poses track", "```", "", "Two rows.", "",
        "| what | frames/s |", "| --- | ---: |", "| ours | 142 |", "| peer | 3 |",
    ]
    with pytest.raises(ValueError, match="expected 2 cells"):
        sample_table().add_row("only one")
    with pytest.raises(ValueError, match="one of l/r per column"):
        Table("Bad", [], ["a", "b"], "l")


def suite_result(suite: str, value: str) -> SuiteResult:
    table = sample_table()
    table.rows[0][1] = value
    return SuiteResult(suite, f"{suite} title", f"python -m mvs.bench {suite}", "test machine",
                       "2026-01-01 00:00 UTC", 90.0, (0.1, 0.2), [table], {"value": value})


def test_suites_replace_their_own_sections_in_suite_order(tmp_path: Path) -> None:
    markdown, results = tmp_path / "BENCHMARKS.md", tmp_path / "benchmarks.json"
    order = ["depth", "track", "fusion"]
    for suite, value in [("fusion", "1"), ("depth", "2"), ("fusion", "3")]:
        update_markdown(markdown, suite_result(suite, value), order)
        update_json(results, suite_result(suite, value))
    text = markdown.read_text()
    assert text.startswith("# Benchmarks")
    assert text.count("<!-- mvs.bench:fusion -->") == 1
    assert text.index("## depth title") < text.index("## fusion title")
    assert "| ours | 3 |" in text and "| ours | 1 |" not in text
    assert "1.5 min; 1-minute load average 0.1 at the start and 0.2 at the end." in text
    stored = json.loads(results.read_text())
    assert stored["fusion"]["data"] == {"value": "3"} and stored["depth"]["data"] == {"value": "2"}
    # Text outside the sections is kept; a new suite goes before a later one.
    edited = text.replace("# Benchmarks", "# Benchmarks\n\nKept note.")
    updated = replace_section(edited, "track", "<!-- mvs.bench:track -->T<!-- /mvs.bench:track -->", order)
    assert "Kept note." in updated
    assert updated.index("## depth title") < updated.index("-->T<!--") < updated.index("## fusion title")


def test_child_run_reports_its_peak_memory_and_names_the_log_when_it_fails(tmp_path: Path) -> None:
    # Linux carries a parent's resident high-water mark into a child through exec, so the child
    # is measured from a fresh interpreter, as the suites start theirs, not from this big one.
    measure = (
        "import sys; from pathlib import Path; from mvs.bench.runs import run_module; "
        "run = run_module('timeit', ['-n', '1', '-r', '1', \"b'x' * (300 * 2**20)\"], Path(sys.argv[1])); "
        "print(f'peak {run.peak_rss_mb}')"
    )
    printed = subprocess.run(
        [sys.executable, "-c", measure, str(tmp_path / "ok.log")], capture_output=True, text=True, check=True
    ).stdout
    peak_rss_mb = float(printed.rsplit("peak ", 1)[1])
    assert 300 <= peak_rss_mb < 400
    assert "loop" in (tmp_path / "ok.log").read_text()
    with pytest.raises(RuntimeError, match="failed.*fail.log"):
        run_module("timeit", ["-n", "1", "-r", "1", "raise SystemExit(3)"], tmp_path / "fail.log")


def test_last_progress_reads_the_last_redrawn_line(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("config\nfusion:  10%|#  | 1/10\rfusion:  50%|#####  | 5/10\r\n\n")
    assert last_progress(log) == "fusion:  50%|#####  | 5/10"


def test_looped_room_links_frame_i_to_frame_i_mod_n(tmp_path: Path) -> None:
    room_dir = tmp_path / "room"
    for sub, suffix in (("color", "jpg"), ("depth", "png"), ("pose", "txt")):
        (room_dir / sub).mkdir(parents=True)
        for index in range(3):
            (room_dir / sub / f"{index}.{suffix}").write_text(f"{sub} {index}")
    (room_dir / "intrinsic").mkdir()
    (room_dir / "mesh.ply").write_text("mesh")
    looped = link_looped_room(room_dir, tmp_path / "looped", 7)
    assert sorted(int(p.stem) for p in (looped / "pose").glob("*.txt")) == list(range(7))
    assert (looped / "color" / "5.jpg").read_text() == "color 2"
    assert (looped / "depth" / "6.png").read_text() == "depth 0"
    assert (looped / "mesh.ply").read_text() == "mesh" and (looped / "intrinsic").is_dir()
    assert link_looped_room(room_dir, looped, 7) == looped
    with pytest.raises(ValueError, match="found none"):
        link_looped_room(tmp_path / "looped" / "intrinsic", tmp_path / "other", 7)


def test_same_pixels_table_scores_learned_depth_where_classic_has_some(tmp_path: Path) -> None:
    """Learned maps are cut to the classic maps' pixels: exact learned depth scores 0, the
    classic map 10 % too far on its half of the image scores AbsRel 0.1."""
    import cv2

    from mvs.bench.depth import same_pixels_table
    from mvs.types import Frame, Sequence

    gt_hw = np.full((4, 6), 2.0, dtype=np.float32)
    classic_hw = np.zeros((4, 6))
    classic_hw[:, :3] = 2.2
    for name, depth_hw in (("learned", gt_hw), ("classic", classic_hw)):
        (tmp_path / name / "depth").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / name / "depth" / "7.png"), np.round(depth_hw * 1000).astype(np.uint16))
    sequence = Sequence(
        name="flat", root=tmp_path, layout="synthetic", camera=Camera(np.array([[5.0, 0, 3], [0, 5.0, 2], [0, 0, 1]]), 6, 4), indices=[7],
        load_frame=lambda index: Frame(index, 0.0, np.zeros((4, 6, 3), np.uint8), gt_hw), has_depth=True,
        has_poses=False,
    )
    table, data = same_pixels_table(sequence, tmp_path / "learned", tmp_path / "classic")
    assert data["classic"]["abs_rel"] == pytest.approx(0.1) and data["classic"]["completeness"] == pytest.approx(0.5)
    assert data["learned, on classic's pixels"]["abs_rel"] == pytest.approx(0.0)
    assert data["learned, on classic's pixels"]["completeness"] == pytest.approx(0.5)
    assert len(table.rows) == 2


def test_track_suite_hard_cases_run_default_settings_and_keep_rows_not_selected(tmp_path: Path) -> None:
    from mvs.bench.runs import BenchContext, ChildRun, Measured
    from mvs.bench.track import HARD_CASES, MeasuredRuns, hard_case_table

    tabletop = tmp_path / "tabletop"
    context = BenchContext("kitchen", tmp_path / "work", str(tabletop), only=("tabletop",))
    assert all("--config" not in case.run_args(context) for case in HARD_CASES)
    tabletop_case = next(case for case in HARD_CASES if case.key == "tabletop")
    assert tabletop_case.run_args(context) == ["--sequence", str(tabletop), "--poses", "track", "--scale", "gt"]

    class FakeRuns(MeasuredRuns):
        """Measured figures without running anything: 48 of 50 frames posed in 4 s, two pieces."""

        def get(self, run_args: list[str], out_dir: Path) -> Measured:
            self.done[out_dir] = Measured(
                ChildRun("python -m mvs.run " + " ".join(run_args), 9.0, 500.0, out_dir / "run.log"),
                {"frames_posed": 48, "frames_selected": 50, "seconds": {"poses": 4.0},
                 "tracking_pieces": [{"first": 15, "last": 99, "frames": 43, "joined": "main"},
                                     {"first": 101, "last": 111, "frames": 5, "joined": "merged"}]},
                {"trajectory_sim3": {"ate_rmse": 0.0042}},
            )
            return self.done[out_dir]

    kept_cells = ["redkitchen 0:1000:20", "track --scale gt", "42/50", "—", "36.00 cm", "20.0"]
    context.previous = {"hard_cases": {"kitchen-20": {"label": "redkitchen 0:1000:20", "cells": kept_cells}}}
    runs = FakeRuns()
    table, records = hard_case_table(context, runs)
    assert list(runs.done) == [tmp_path / "work" / "track" / "hard" / "tabletop"]  # the selected row only
    assert table.rows == [
        kept_cells,
        ["tabletop sample (50 frames, fx 615)", "track --scale gt", "48/50", "2: main 15-99 (43), merged 101-111 (5)",
         "0.42 cm", "12.5"],
    ]
    assert "Kept from an earlier run (not selected by `--only`): redkitchen 0:1000:20." in table.notes
    assert records["tabletop"]["ate_sim3"] == 0.0042 and set(records) == {"kitchen-20", "tabletop"}


def test_pieces_cell_shows_a_dash_until_the_tracker_reports_pieces() -> None:
    from mvs.bench.track import pieces_cell

    assert pieces_cell({"frames_posed": 10}) == "—"
    one = {"tracking_pieces": [{"first": 0, "last": 998, "frames": 500, "joined": "main"}]}
    assert pieces_cell(one) == "1: main 0-998 (500)"


def test_only_runs_groups_of_the_track_suite_and_keeps_the_other_tables(tmp_path: Path) -> None:
    from mvs.bench.__main__ import merged_with_previous, parse_args, suite_command

    args = parse_args(["track", "--only", "tabletop,blankwall", "--only", "colmap-decimated"])
    assert args.only == ("tabletop", "blankwall", "colmap-decimated")
    assert suite_command(args, "track").endswith("track --only tabletop --only blankwall --only colmap-decimated")
    for argv in (["track", "--only", "kitchens"], ["depth", "--only", "tabletop"], ["all", "--only", "tabletop"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
    stored = suite_result("track", "1")
    stored.tables.append(Table("Hard cases", [], ["sequence"], "l", [["old row"]]))
    previous = json.loads(json.dumps(asdict(stored)))
    previous["data"] = {"runs": "old runs", "hard_cases": "old hard"}
    new_hard = Table("Hard cases", [], ["sequence"], "l", [["new row"]])
    new_decimated = Table("Beside COLMAP, 0:1000:10", [], ["method"], "l", [["ours"]])
    tables, data = merged_with_previous([new_hard, new_decimated], {"hard_cases": "new hard"}, previous)
    assert [table.title for table in tables] == ["Speed", "Hard cases", "Beside COLMAP, 0:1000:10"]
    assert tables[0].rows == [["ours", "1"], ["peer", "3"]] and tables[1] is new_hard
    assert tables[0].notes == "Two rows. (Kept from the run of 2026-01-01 00:00 UTC, not re-run by `--only`.)"
    assert data == {"runs": "old runs", "hard_cases": "new hard"}
    # A table kept twice says so once.
    again, _ = merged_with_previous([], {}, {**previous, "tables": [asdict(tables[0])]})
    assert again[0].notes == tables[0].notes


def test_two_view_pairs_are_distinct_within_the_gap_and_the_same_for_a_seed() -> None:
    from mvs.bench.twoview import Pair, choose_pairs

    indices = list(range(0, 1000))
    pairs = choose_pairs(indices, 100, (15, 60), seed=0)
    assert len(set(pairs)) == 100 and pairs == sorted(pairs, key=lambda p: (p.first, p.second))
    assert all(15 <= pair.gap <= 60 and pair.second <= 999 for pair in pairs)
    assert choose_pairs(indices, 100, (15, 60), seed=0) == pairs
    assert choose_pairs(indices, 100, (15, 60), seed=1) != pairs
    # Odd frames only: both frames of every pair are in the sequence.
    odd_pairs = choose_pairs(list(range(1, 200, 2)), 20, (15, 60), seed=0)
    assert all(pair.first % 2 == 1 and pair.second % 2 == 1 for pair in odd_pairs)
    assert Pair(141, 195).frames == "141:196:54"
    with pytest.raises(ValueError, match="at least 100 frame pairs"):
        choose_pairs(list(range(20)), 100, (15, 60), seed=0)  # 15 pairs 15-19 frames apart


def test_two_view_image_score_counts_only_sensor_depth_in_range() -> None:
    from mvs.bench.twoview import image_score

    gt_hw = np.full((4, 5), 2.0)
    gt_hw[0, :] = 0.3  # nearer than 0.5 m: left out
    gt_hw[1, 0] = 12.0  # farther than 10 m: left out
    depth_hw = np.full((4, 5), 2.2)  # 10 % too far everywhere it counts
    depth_hw[3, :4] = 1.0  # half the depth on 4 of the 14 counted pixels ...
    depth_hw[3, 4] = 0.0  # ... and no estimate on one more
    score = image_score(7, depth_hw, gt_hw, (0.5, 10.0))
    assert score.abs_rel == pytest.approx((9 * 0.1 + 4 * 0.5) / 13)
    assert score.delta1 == pytest.approx(9 / 13)
    assert image_score(7, None, gt_hw, (0.5, 10.0)).abs_rel is None
    assert image_score(7, np.zeros((4, 5)), gt_hw, (0.5, 10.0)).abs_rel is None
    assert score.confirmed_abs_rel is None and score.confirmed_share is None  # no confidence map
    confidence_hw = np.where(depth_hw == 2.2, 0.7, 0.0)  # the halved depths unconfirmed
    confirmed = image_score(7, depth_hw, gt_hw, (0.5, 10.0), confidence_hw)
    assert confirmed.abs_rel == pytest.approx(score.abs_rel)
    assert confirmed.confirmed_abs_rel == pytest.approx(0.1) and confirmed.confirmed_share == pytest.approx(9 / 14)


def test_two_view_rows_count_pairs_with_no_depth_and_take_median_and_mean_per_image() -> None:
    from mvs.bench.twoview import ImageScore, Pair, summary_row

    scores = {
        Pair(0, 20): [ImageScore(0, 0.1, 0.9, 0.05, 0.5), ImageScore(20, 0.2, 0.8, 0.07, 0.7)],
        Pair(5, 40): [ImageScore(5, 0.6, 0.5, None, 0.0), ImageScore(40, None, None)],
        Pair(9, 60): [ImageScore(9, None, None), ImageScore(60, None, None)],
    }
    cells, figures = summary_row("all", scores)
    assert figures["images_with_depth"] == 3 and figures["pairs_without_depth"] == 1
    assert figures["median_abs_rel"] == pytest.approx(0.2)
    assert figures["mean_abs_rel"] == pytest.approx(0.3)
    assert figures["mean_delta1"] == pytest.approx(0.2 / 3 * 11)
    assert figures["median_confirmed_abs_rel"] == pytest.approx(0.06)
    assert figures["mean_confirmed_share"] == pytest.approx(0.4)
    assert cells == ["all", "3", "3 of 6", "1", "0.200", "0.300", "0.733", "0.060", "0.400"]


def test_depth_suite_runs_default_settings_and_shares_the_kitchen_learned_run(tmp_path: Path) -> None:
    from mvs.bench.depth import adapt_runs, kitchen_runs
    from mvs.bench.runs import BenchContext

    context = BenchContext("kitchen", tmp_path, "tabletop")
    kitchen, adapt = kitchen_runs(context), adapt_runs(context)
    assert all("--config" not in args for args, _ in kitchen.values())
    assert all("--config" not in args for _, _, args, _ in adapt)
    assert [("--adapt" in args, args[1]) for _, _, args, _ in adapt] == [
        (False, "kitchen"), (True, "kitchen"), (False, "tabletop"), (True, "tabletop")]
    # The kitchen's unadapted row is the learned row of the kitchen table: one run for both.
    assert (adapt[0][2], adapt[0][3]) == kitchen["learned"]
