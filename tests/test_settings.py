"""Settings chosen from the input: what the layout says of the recording and what a few
frames show choose them, each with its reason; the --config file and the flags win."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mvs.config import RunConfig, Setting, flat_keys, load_yaml
from mvs.io.layout import open_sequence
from mvs.io.settings import SCENE_KEYS, describe_capture, sample_depth, with_input_settings
from mvs.console import describe_settings
from mvs.pipeline import open_with_intrinsics, resolve_sources
from mvs.run import build_config, main, parse_args

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
KITCHEN = DATA / "7scenes-redkitchen"
TABLETOP = DATA / "tabletop-sample"
PRESET_7SCENES = Path(__file__).resolve().parents[1] / "configs" / "7scenes.yaml"
needs_kitchen = pytest.mark.skipif(not KITCHEN.is_dir(), reason=f"real 7-Scenes data not found at {KITCHEN}")
needs_tabletop = pytest.mark.skipif(not TABLETOP.is_dir(), reason=f"tabletop sample not found at {TABLETOP}")

KINECT_FOCAL_PX, KINECT_BASELINE_M, KINECT_SUBPIXELS = 585.0, 0.075, 8
"""Kinect v1: disparity in 1/8 pixel over a 7.5 cm baseline, so depth steps by z^2 / (8 f b)."""


@pytest.fixture
def odometry_config(tmp_path) -> Path:
    """A --config file choosing the dense RGB-D odometry, which the input's settings tune."""
    path = tmp_path / "odometry.yaml"
    path.write_text("tracking:\n  rgbd:\n    tracker: odometry\n")
    return path


def input_settings(*flags: str) -> tuple[RunConfig, dict[str, Setting]]:
    """The configuration a run with `flags` uses on its sequence, and its settings by key."""
    config = build_config(parse_args(["--device", "cpu", *flags]))
    sequence = open_sequence(config.sequence.name, frames=config.sequence.frames)
    config = with_input_settings(resolve_sources(config, sequence), sequence)
    return config, {setting.key: setting for setting in config.settings}


def chosen_by_input(settings: dict[str, Setting]) -> dict[str, object]:
    return {key: s.value for key, s in settings.items() if s.source == "input"}


def write_folder(root: Path, depth_mm_khw: np.ndarray | None) -> Path:
    """An image folder of len(depth_mm_khw) grey frames (3 without depth), K.txt, optional depth/."""
    count = 3 if depth_mm_khw is None else len(depth_mm_khw)
    height, width = (48, 64) if depth_mm_khw is None else depth_mm_khw.shape[1:]
    (root / "images").mkdir(parents=True)
    (root / "K.txt").write_text(f"100 100 {width / 2} {height / 2}\n")
    for k in range(count):
        cv2.imwrite(str(root / "images" / f"{k}.png"), np.full((height, width, 3), 40 * k, np.uint8))
    if depth_mm_khw is not None:
        (root / "depth").mkdir()
        for k, depth_mm_hw in enumerate(depth_mm_khw):
            cv2.imwrite(str(root / "depth" / f"{k}.png"), depth_mm_hw)
    return root


def kinect_depth_mm_khw(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Depth uniform in 0.8-4 m as a Kinect v1 stores it: z = 8 f b / n for the integer n
    nearest, in millimetres."""
    z_khw = np.random.default_rng(seed).uniform(0.8, 4.0, (count, height, width))
    scale = KINECT_SUBPIXELS * KINECT_FOCAL_PX * KINECT_BASELINE_M
    return np.rint(1000 * scale / np.rint(scale / z_khw)).astype(np.uint16)


def test_depth_steps_of_a_disparity_sensor_are_measured_against_the_closed_form(tmp_path):
    root = write_folder(tmp_path / "kinect", kinect_depth_mm_khw(2, 240, 320))
    sample = sample_depth(open_sequence(str(root)))
    expected = 1.0 / (KINECT_SUBPIXELS * KINECT_FOCAL_PX * KINECT_BASELINE_M)  # 0.00285 per metre
    assert sample.frames == 2
    assert sample.step_per_m2 == pytest.approx(expected, rel=0.05)
    assert sample.far_m == pytest.approx(4.0, abs=0.05)
    # Steps of 5 cm at sqrt(0.05 / c) = 4.19 m, of 3 cm at 3.24 m.
    assert sample.depth_for_step(0.05) == pytest.approx(np.sqrt(0.05 / expected), rel=0.03)

    fine_mm_khw = np.random.default_rng(1).integers(800, 4000, (2, 240, 320)).astype(np.uint16)
    fine = sample_depth(open_sequence(str(write_folder(tmp_path / "fine", fine_mm_khw))))
    assert fine.step_per_m2 is None and fine.depth_for_step(0.05) == np.inf


def test_an_image_folder_and_its_depth_choose_only_what_the_frames_show(tmp_path, odometry_config):
    plain = write_folder(tmp_path / "plain", None)
    config, settings = input_settings("--sequence", str(plain), "--poses", "track")
    assert chosen_by_input(settings) == {}
    assert config.fusion == RunConfig().fusion and config.tracking.rgbd == RunConfig().tracking.rgbd
    assert describe_settings(config) == "settings: the defaults; 3 from flags"

    kinect = write_folder(tmp_path / "kinect", kinect_depth_mm_khw(2, 240, 320))
    config, settings = input_settings("--sequence", str(kinect), "--poses", "rgbd", "--config", str(odometry_config))
    # Depth reaches 4.0 m; its steps pass 5 cm at 4.19 m and 3 cm at 3.24 m. The folder's depth
    # is stored in the colour camera: the odometry keeps its method and reference.
    assert chosen_by_input(settings) == {"fusion.depth_max": 4.0, "tracking.rgbd.depth_max": 3.0}
    assert "3 cm at 3.2" in settings["tracking.rgbd.depth_max"].reason
    assert config.tracking.rgbd.method == RunConfig().tracking.rgbd.method


@needs_kitchen
def test_the_kitchen_gets_what_its_preset_sets_each_with_a_reason(odometry_config):
    sequence = open_sequence(str(KITCHEN))
    assert describe_capture(sequence) == "yes (mm, not registered to colour, not synchronised)"
    sample = sample_depth(sequence)
    assert sample.step_per_m2 == pytest.approx(1.0 / (KINECT_SUBPIXELS * KINECT_FOCAL_PX * KINECT_BASELINE_M), rel=0.1)

    _, settings = input_settings("--sequence", str(KITCHEN), "--poses", "rgbd", "--depth", "sensor")
    assert chosen_by_input(settings) == {"fusion.depth_max": 4.0}  # the map tracker takes no odometry settings

    config, settings = input_settings("--sequence", str(KITCHEN), "--poses", "rgbd", "--depth", "sensor",
                                      "--config", str(odometry_config))
    assert chosen_by_input(settings) == {
        "fusion.depth_max": 4.0,
        "tracking.rgbd.depth_max": 3.0,
        "tracking.rgbd.method": "point_to_plane",
        "tracking.rgbd.reference": "model",
        "tracking.rgbd.max_width": 320,
        "tracking.rgbd.iterations": (6, 3, 1),
    }
    assert all(len(settings[key].reason) > 20 for key in chosen_by_input(settings))
    assert "not registered" in settings["tracking.rgbd.method"].reason
    assert config.tracking.rgbd.iterations == (6, 3, 1)

    _, settings = input_settings("--sequence", str(KITCHEN), "--poses", "gt", "--depth", "learned")
    assert chosen_by_input(settings) == {
        "fusion.depth_max": 4.0, "tracking.refine_gt": True, "tracking.refine.depth_sigma_relative": 0.0}
    assert "not synchronised" in settings["tracking.refine_gt"].reason
    assert "colour alone" in settings["tracking.refine.depth_sigma_relative"].reason

    # The preset keeps only the voxel size (the default): everything else it once set is chosen
    # above, and a plane sweep's depth range from the scene (tests/test_depth_range.py).
    preset = flat_keys(load_yaml(PRESET_7SCENES))
    assert set(preset) == {"fusion.voxel_size"}
    assert preset["fusion.voxel_size"] == RunConfig().fusion.voxel_size

    _, settings = input_settings("--sequence", str(KITCHEN), "--poses", "gt", "--depth", "sensor")
    assert chosen_by_input(settings) == {"fusion.depth_max": 4.0}  # sensor depth keeps the dataset's poses


@needs_kitchen
def test_nominal_intrinsics_are_measured_from_the_frames_before_monocular_tracking(capsys):
    """The kitchen's layout holds only 7-Scenes' nominal 525 px: tracked from colour, its focal
    length comes from its frames (COLMAP's self-calibration of 0:1000:10 gives 538.5 px); with
    the dataset's poses, sensor depth or given intrinsics, the frames are read as they are."""
    for poses, flags, fx in (("gt", (), 525.0), ("rgbd", (), 525.0), ("track", ("--intrinsics", "520,520,320,240"), 520.0)):
        config = build_config(parse_args(["--sequence", str(KITCHEN), "--frames", "0:200:2", "--poses", poses, *flags]))
        sequence, config = open_with_intrinsics(config)
        assert sequence.camera.fx == fx and chosen_by_input({s.key: s for s in config.settings}) == {}, poses

    config = build_config(parse_args(["--sequence", str(KITCHEN), "--frames", "0:200:2", "--poses", "track"]))
    sequence, config = open_with_intrinsics(config)
    assert sequence.camera.fx == pytest.approx(538.5, rel=0.02)  # measured: 540.8
    assert sequence.capture.colour_calibrated is True  # read with the focal length measured
    setting = {s.key: s for s in config.settings}["sequence.intrinsics"]
    assert setting.source == "input" and "nominal colour intrinsics (fx 525 px)" in setting.reason
    assert "intrinsics: the 7scenes layout holds only" in capsys.readouterr().out


@needs_tabletop
def test_the_tabletop_is_read_with_its_own_camera_and_registered_depth(odometry_config):
    sequence = open_sequence(str(TABLETOP))
    assert sequence.camera.fx == pytest.approx(615.2, abs=0.1) and sequence.camera.cx == pytest.approx(298.4, abs=0.1)
    assert describe_capture(sequence) == "yes (mm, registered to colour)"
    frame = sequence[0]
    raw_hw = cv2.imread(str(TABLETOP / f"frame-{frame.index:06d}.depth.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(frame.depth_hw, raw_hw / 1000.0, atol=1e-6)  # no pixel moved

    _, settings = input_settings("--sequence", str(TABLETOP), "--poses", "rgbd", "--depth", "sensor",
                                 "--config", str(odometry_config))
    # Close range (1.18 m at the 99.9th percentile) in millimetre steps: only the fusion range.
    assert chosen_by_input(settings) == {"fusion.depth_max": 1.5}
    assert "1.18 m" in settings["fusion.depth_max"].reason
    # Monocular tracking with no scale runs in tracking units (the scene's median depth 2 units,
    # 5.4 of them to the metre here): a reach in metres would cut the fusion at 0.28 m.
    for scale, chosen in (("none", {}), ("sensor", {"fusion.depth_max": 1.5})):
        _, settings = input_settings("--sequence", str(TABLETOP), "--poses", "track", "--scale", scale,
                                     "--depth", "learned")
        assert chosen_by_input(settings) == chosen, scale


@needs_kitchen
def test_the_config_file_and_the_flags_win_over_the_input(tmp_path, odometry_config):
    preset = tmp_path / "preset.yaml"
    preset.write_text("fusion:\n  depth_max: 4.5\n  voxel_size: 0.05\n"
                      "tracking:\n  rgbd:\n    tracker: odometry\n    method: hybrid\n")
    config, settings = input_settings("--sequence", str(KITCHEN), "--poses", "rgbd", "--depth", "sensor",
                                      "--config", str(preset), "--voxel-size", "0.03")
    assert config.fusion.depth_max == 4.5 and settings["fusion.depth_max"].source == "config"
    assert config.tracking.rgbd.method == "hybrid" and settings["tracking.rgbd.method"].reason == str(preset)
    assert config.fusion.voxel_size == 0.03 and settings["fusion.voxel_size"].source == "flag"
    assert settings["tracking.rgbd.reference"].source == "input"  # keys neither set are still chosen
    # A flag's key is never chosen by the input either: as if a flag had set the method.
    flagged = build_config(parse_args(["--device", "cpu", "--sequence", str(KITCHEN), "--poses", "rgbd",
                                       "--config", str(odometry_config)]))
    flagged.settings.append(Setting("tracking.rgbd.method", "hybrid", "flag", "command line"))
    flagged.tracking.rgbd.method = "hybrid"
    sequence = open_sequence(str(KITCHEN), frames="0:100:10")
    kept = with_input_settings(resolve_sources(flagged, sequence), sequence)
    assert kept.tracking.rgbd.method == "hybrid"
    assert [s.source for s in kept.settings if s.key == "tracking.rgbd.method"] == ["flag"]


def test_config_yaml_and_report_json_say_what_was_chosen_and_why(small_room, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--device", "cpu", "--no-render", "--sequence", str(small_room), "--out", str(out),
                 "--frames", "0:10", "--voxel-size", "0.05", "--depth", "classic"]) == 0
    console = capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())["settings"]
    reported = json.loads((out / "report.json").read_text())["settings"]
    assert saved == reported
    by_key = {s["key"]: s for s in saved}
    assert by_key["fusion.voxel_size"] == {"key": "fusion.voxel_size", "value": 0.05, "source": "flag",
                                           "reason": "command line"}
    depth_max = by_key["fusion.depth_max"]
    assert depth_max["source"] == "input" and "the sensor's depth reaches" in depth_max["reason"]
    line = next(line for line in console.splitlines() if line.startswith("settings:"))
    assert f"fusion.depth_max {depth_max['value']}" in line and "from flags" in line
    # The sweep's depth range and overlap depths, from the scene once the poses are known: corners
    # triangulated with the dataset's poses, never the sensor's depth; the voxel size stays the flag's.
    near, far, overlap = (by_key[key] for key in SCENE_KEYS if key != "fusion.voxel_size")
    assert {near["source"], far["source"], overlap["source"]} == {"input"}
    assert 0 < near["value"] < overlap["value"][0] < overlap["value"][2] < far["value"]
    assert "the scene's depth" in near["reason"] and "corners triangulated" in far["reason"]
    saved_depth = yaml.safe_load((out / "config.yaml").read_text())["depth"]
    assert (saved_depth["near"], saved_depth["far"]) == (near["value"], far["value"])
    line = next(line for line in console.splitlines() if line.startswith("depth range:"))
    assert f"{near['value']:.2f}-{far['value']:.2f} m" in line
    # A saved config.yaml reads back as a --config file, its settings replaced by the new record.
    rerun = build_config(parse_args(["--config", str(out / "config.yaml"), "--device", "cpu"]))
    assert rerun.fusion.depth_max == depth_max["value"] and rerun.depth.near == near["value"]
    assert {s.source for s in rerun.settings} == {"config", "flag"}
