"""Sequence loaders on tiny synthetic sequences in every layout, and on real 7-Scenes data."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mvs.geometry import make_pose_44, matrix_to_quaternion_xyzw
from mvs.io import image_files as image_files_module
from mvs.io.layout import open_sequence, parse_frames, resolve_sequence_path

REDKITCHEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen"


def world_T_cam_44(i: int) -> np.ndarray:
    """A distinct rigid pose per frame: rotation of 0.1 i rad about (1, 2, 3), translation i/10."""
    axis_3 = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    R_33 = cv2.Rodrigues(axis_3 * 0.1 * i)[0]
    return make_pose_44(R_33, np.array([1.0, 2.0, 3.0]) * 0.1 * i)


def colour_rgb(i: int) -> tuple[int, int, int]:
    return (10 * i + 20, 100, 200)


def write_colour(path: Path, i: int, width: int, height: int) -> None:
    image_hw3 = np.empty((height, width, 3), np.uint8)
    image_hw3[:] = colour_rgb(i)
    cv2.imwrite(str(path), image_hw3[..., ::-1])


def depth_mm_hw(width: int, height: int) -> np.ndarray:
    """uint16 depth with a value unique to every pixel: 1000 + 10 u + v millimetres."""
    v_hw, u_hw = np.mgrid[0:height, 0:width]
    return (1000 + 10 * u_hw + v_hw).astype(np.uint16)


def expected_registered_hw(
    raw_hw: np.ndarray, scale: float, K_depth_33: np.ndarray, K_colour_33: np.ndarray, width: int, height: int
) -> np.ndarray:
    """Closed-form nearest-neighbour registration of axis-aligned pinhole cameras."""
    u_w = np.rint(K_depth_33[0, 0] / K_colour_33[0, 0] * (np.arange(width) - K_colour_33[0, 2]) + K_depth_33[0, 2])
    v_h = np.rint(K_depth_33[1, 1] / K_colour_33[1, 1] * (np.arange(height) - K_colour_33[1, 2]) + K_depth_33[1, 2])
    out_hw = np.zeros((height, width), np.float32)
    ok_w = (u_w >= 0) & (u_w < raw_hw.shape[1])
    ok_h = (v_h >= 0) & (v_h < raw_hw.shape[0])
    metres_hw = np.where((raw_hw > 0) & (raw_hw < 65535), raw_hw * np.float32(scale), 0).astype(np.float32)
    out_hw[np.ix_(ok_h, ok_w)] = metres_hw[np.ix_(v_h[ok_h].astype(int), u_w[ok_w].astype(int))]
    return out_hw


def K_44_text(fx: float, fy: float, cx: float, cy: float) -> str:
    K_44 = np.eye(4)
    K_44[0, 0], K_44[1, 1], K_44[0, 2], K_44[1, 2] = fx, fy, cx, cy
    return "\n".join(" ".join(f"{v:.6f}" for v in row) for row in K_44)


SCANNET_INDICES = [0, 1, 2, 3, 10]
SCANNET_COLOUR_K = (100.0, 110.0, 63.5, 47.5)  # at 128x96
SCANNET_DEPTH_K = (60.0, 66.0, 32.0, 24.0)  # at 64x48


def write_scannet(root: Path, invalid_pose_index: int | None = 2, with_depth: bool = True) -> Path:
    """ScanNet export: colour 128x96 jpg, depth 64x48 png (mm), one pose of -inf."""
    for name in ("color", "pose", "intrinsic"):
        (root / name).mkdir(parents=True)
    (root / "intrinsic" / "intrinsic_color.txt").write_text(K_44_text(*SCANNET_COLOUR_K))
    (root / "intrinsic" / "intrinsic_depth.txt").write_text(K_44_text(*SCANNET_DEPTH_K))
    if with_depth:
        (root / "depth").mkdir()
    for i in SCANNET_INDICES:
        write_colour(root / "color" / f"{i}.jpg", i, 128, 96)
        if with_depth:
            cv2.imwrite(str(root / "depth" / f"{i}.png"), depth_mm_hw(64, 48))
        pose_44 = np.full((4, 4), -np.inf) if i == invalid_pose_index else world_T_cam_44(i)
        np.savetxt(root / "pose" / f"{i}.txt", pose_44)
    return root


def write_7scenes(root: Path, count: int = 5, intrinsics_file: bool = False) -> Path:
    """7-Scenes: 64x48 colour png, depth png (mm) with a 65535 hole, poses."""
    root.mkdir(parents=True)
    raw_hw = depth_mm_hw(64, 48)
    raw_hw[30:40, 40:50] = 65535
    raw_hw[0:5, :] = 0
    for i in range(count):
        write_colour(root / f"frame-{i:06d}.color.png", i, 64, 48)
        cv2.imwrite(str(root / f"frame-{i:06d}.depth.png"), raw_hw)
        np.savetxt(root / f"frame-{i:06d}.pose.txt", world_T_cam_44(i))
    if intrinsics_file:
        np.savetxt(root / "camera-intrinsics.txt", [[60.0, 0, 30.0], [0, 61.0, 22.0], [0, 0, 1]])
    return root


TUM_T0 = 1305031102.0


def write_tum(root: Path) -> Path:
    """TUM RGB-D, 5 frames 0.1 s apart: depth 5 ms late (frame 4's 50 ms, unmatched),
    ground truth 3 ms early (none near frame 3)."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb_lines, depth_lines, gt_lines = ["# color images"], ["# depth maps"], ["# timestamp tx ty tz qx qy qz qw"]
    for i in range(5):
        t = TUM_T0 + 0.1 * i
        write_colour(root / "rgb" / f"{t:.6f}.png", i, 64, 48)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        t_depth = t + (0.05 if i == 4 else 0.005)
        cv2.imwrite(str(root / "depth" / f"{t_depth:.6f}.png"), np.full((48, 64), 7500, np.uint16))
        depth_lines.append(f"{t_depth:.6f} depth/{t_depth:.6f}.png")
        if i != 3:
            pose_44 = world_T_cam_44(i)
            q_xyzw = matrix_to_quaternion_xyzw(pose_44[:3, :3])
            gt_lines.append(" ".join(f"{v:.9f}" for v in [t - 0.003, *pose_44[:3, 3], *q_xyzw]))
    for name, lines in (("rgb.txt", rgb_lines), ("depth.txt", depth_lines), ("groundtruth.txt", gt_lines)):
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def write_folder(root: Path, stems: list[str], k_text: str | None = "50 51 31.5 23.5") -> Path:
    """Image folder: 64x48 images, depth in mm, poses.txt in the order of `stems`, K.txt."""
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    for k, stem in enumerate(stems):
        write_colour(root / "images" / f"{stem}.png", k, 64, 48)
        cv2.imwrite(str(root / "depth" / f"{stem}.png"), depth_mm_hw(64, 48))
    (root / "poses.txt").write_text("\n".join(" ".join(map(str, world_T_cam_44(k).ravel())) for k in range(len(stems))))
    if k_text is not None:
        (root / "K.txt").write_text(k_text)
    return root


# parse_frames and resolve_sequence_path


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("0:1000:2", [(0, 1000, 2)]),
        (":", [(None, None, None)]),
        ("10:", [(10, None, None)]),
        ("::5", [(None, None, 5)]),
        ("0:450,550:1000", [(0, 450, None), (550, 1000, None)]),
        ("0:1000:2, 1:600:2", [(0, 1000, 2), (1, 600, 2)]),
    ],
)
def test_parse_frames(spec: str, expected: list) -> None:
    assert parse_frames(spec) == expected


@pytest.mark.parametrize("spec", ["5", "a:b", "1:2:3:4", "::0", "-1:", "1.5:"])
def test_parse_frames_rejects_malformed(spec: str) -> None:
    message = f"frames '{spec}': " + ("STEP must be >= 1" if spec == "::0" else "expected START:STOP:STEP")
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_frames(spec)


@pytest.mark.parametrize("spec, bad", [("0:10,5", "5"), ("0:10,", ""), ("0:10,::0", "::0"), ("a:b,0:3", "a:b")])
def test_parse_frames_names_the_malformed_range(spec: str, bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"frames '{spec}': range '{bad}': ")):
        parse_frames(spec)


def test_several_ranges_play_in_the_order_listed(tmp_path: Path) -> None:
    write_7scenes(tmp_path / "kitchen", count=12)
    cut = open_sequence("kitchen", tmp_path, frames="0:4,7:")
    assert cut.indices == [0, 1, 2, 3, 7, 8, 9, 10, 11]
    revisit = open_sequence("kitchen", tmp_path, frames="0:12:2,1:6:2")
    assert revisit.indices == [0, 2, 4, 6, 8, 10, 1, 3, 5]
    assert [frame.index for frame in revisit] == revisit.indices
    np.testing.assert_array_equal(revisit[6].image_hw3[0, 0], colour_rgb(1))
    assert sorted(revisit.gt_world_T_cam_44) == sorted(revisit.indices)
    backwards = open_sequence("kitchen", tmp_path, frames="8:12,0:3")
    assert backwards.indices == [8, 9, 10, 11, 0, 1, 2]


def test_a_frame_selected_twice_is_an_error_naming_it(tmp_path: Path) -> None:
    root = write_7scenes(tmp_path / "kitchen", count=12)
    message = f"{root}: dataset index 4 is selected twice, by 0:12:2 and by 3:7:1 (2 indices are in both)"
    with pytest.raises(ValueError, match=re.escape(message)):
        open_sequence("kitchen", tmp_path, frames="0:12:2,3:7")
    with pytest.raises(ValueError, match=re.escape(f"{root}: dataset index 0 is selected twice, by 0:12:1 and by 0:1:1;")):
        open_sequence("kitchen", tmp_path, frames=":,0:1")
    # Ranges that interleave without sharing an index are fine.
    assert len(open_sequence("kitchen", tmp_path, frames="0:12:2,1:12:2")) == 12


def test_a_range_without_frames_is_an_error_naming_it(tmp_path: Path) -> None:
    root = write_7scenes(tmp_path / "kitchen", count=5)
    with pytest.raises(ValueError, match=re.escape(f"{root}: no frames in 20:30:1; the sequence has dataset indices 0..4")):
        open_sequence("kitchen", tmp_path, frames="0:3,20:30")
    with pytest.raises(ValueError, match=re.escape(f"{root}: no frames in 7:9:1; the sequence has dataset indices 0..4")):
        open_sequence("kitchen", tmp_path, frames="7:9")


def test_resolve_scannet_scan_suffix(tmp_path: Path) -> None:
    for name in ("scene0000_01", "scene0000_00", "scene0001_00"):
        (tmp_path / "scannet" / name).mkdir(parents=True)
    assert resolve_sequence_path("scannet/scene0000", tmp_path) == tmp_path / "scannet" / "scene0000_00"
    assert resolve_sequence_path("scannet/scene0000_01", tmp_path) == tmp_path / "scannet" / "scene0000_01"
    assert resolve_sequence_path(str(tmp_path / "scannet" / "scene0001"), Path("nowhere")) == (
        tmp_path / "scannet" / "scene0001_00"
    )


def test_resolve_missing_names_every_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        resolve_sequence_path("scannet/scene9999", tmp_path)
    for tried in (tmp_path / "scannet" / "scene9999", Path("scannet/scene9999")):
        assert str(tried) in str(error.value)
        assert f"{tried}_*" in str(error.value)


def test_unknown_layout(tmp_path: Path) -> None:
    (tmp_path / "odd" / "stuff").mkdir(parents=True)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'odd'}: unknown sequence layout; expected one of")):
        open_sequence("odd", tmp_path)


# ScanNet


def test_scannet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_scannet(tmp_path / "scannet" / "scene0000_00")
    (root / "mesh.ply").write_text("ply\n")
    with caplog.at_level(logging.WARNING, logger="mvs.io.frames"):
        sequence = open_sequence("scannet/scene0000", tmp_path)
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    assert sequence.layout == "scannet"
    assert sequence.name == "scannet/scene0000_00"
    assert sequence.has_depth and sequence.has_poses and sequence.has_mesh
    assert sequence.indices == [0, 1, 3, 10]
    assert sequence.skipped == {2: f"invalid pose in {root / 'pose' / '2.txt'}"}
    camera = sequence.camera
    assert (camera.width, camera.height) == (64, 48)
    # Colour K halved with pixel centres at integers: c' = (c + 0.5) / 2 - 0.5.
    np.testing.assert_allclose([camera.fx, camera.fy, camera.cx, camera.cy], [50.0, 55.0, 31.5, 23.5], atol=1e-6)

    frame = sequence[2]
    assert frame.index == 3 and frame.timestamp == 3.0
    assert frame.image_hw3.shape == (48, 64, 3) and frame.image_hw3.dtype == np.uint8
    np.testing.assert_allclose(frame.image_hw3[24, 32], colour_rgb(3), atol=3)
    assert frame.depth_hw.dtype == np.float32 and frame.depth_hw.shape == (48, 64)
    expected_hw = expected_registered_hw(
        depth_mm_hw(64, 48), 1e-3, np.array([[60.0, 0, 32.0], [0, 66.0, 24.0], [0, 0, 1]]), camera.K_33, 64, 48
    )
    np.testing.assert_allclose(frame.depth_hw, expected_hw, atol=1e-6)
    # Colour pixel (32, 24) sees depth pixel (rint(1.2 * 0.5 + 32), rint(1.2 * 0.5 + 24)) = (33, 25).
    assert frame.depth_hw[24, 32] == pytest.approx((1000 + 10 * 33 + 25) / 1000, abs=1e-6)
    assert frame.depth_hw[0, 0] == 0.0  # the wider colour view sees past the depth image
    np.testing.assert_allclose(frame.world_T_cam_44, world_T_cam_44(3), atol=1e-6)

    selected = open_sequence("scannet/scene0000", tmp_path, frames="1:4:2")
    assert selected.indices == [1, 3] and selected.skipped == {}
    assert [f.index for f in selected] == [1, 3]
    assert open_sequence("scannet/scene0000", tmp_path, frames="0:3").skipped.keys() == {2}

    restored = pickle.loads(pickle.dumps(sequence))
    np.testing.assert_array_equal(restored[0].depth_hw, sequence[0].depth_hw)


def test_scannet_without_depth_and_with_intrinsics(tmp_path: Path) -> None:
    write_scannet(tmp_path / "scene", invalid_pose_index=None, with_depth=False)
    sequence = open_sequence("scene", tmp_path, intrinsics=(120.0, 121.0, 60.0, 50.0))
    assert not sequence.has_depth and not sequence.has_mesh
    assert sequence.indices == SCANNET_INDICES and sequence.skipped == {}
    assert (sequence.camera.width, sequence.camera.height) == (128, 96)
    np.testing.assert_allclose(sequence.camera.K_33[:2], [[120, 0, 60], [0, 121, 50]])
    frame = sequence[4]
    assert frame.depth_hw is None and frame.image_hw3.shape == (96, 128, 3)


def test_scannet_bad_pose_file(tmp_path: Path) -> None:
    root = write_scannet(tmp_path / "scene")
    np.savetxt(root / "pose" / "1.txt", np.eye(4)[:3])
    message = f"{root / 'pose' / '1.txt'}: expected a 4x4 matrix, got shape (3, 4)"
    with pytest.raises(ValueError, match=re.escape(message)):
        open_sequence("scene", tmp_path)
    (root / "pose" / "1.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 one 0\n0 0 0 1\n")
    with pytest.raises(ValueError, match=re.escape(f"{root / 'pose' / '1.txt'}: line 3: expected numbers")):
        open_sequence("scene", tmp_path)


def test_scannet_bad_intrinsics_file(tmp_path: Path) -> None:
    root = write_scannet(tmp_path / "scene")
    np.savetxt(root / "intrinsic" / "intrinsic_depth.txt", np.eye(3))
    message = f"{root / 'intrinsic' / 'intrinsic_depth.txt'}: expected a 4x4 matrix, got shape (3, 3)"
    with pytest.raises(ValueError, match=re.escape(message)):
        open_sequence("scene", tmp_path)


def test_depth_of_another_format_fails_on_load_naming_the_file(tmp_path: Path) -> None:
    root = write_scannet(tmp_path / "scene")
    sequence = open_sequence("scene", tmp_path)
    assert sequence[0].depth_hw is not None
    cv2.imwrite(str(root / "depth" / "3.png"), np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=re.escape(f"{root / 'depth' / '3.png'}: expected a single-channel uint16")):
        sequence[2]


# 7-Scenes


def test_7scenes_default_intrinsics(tmp_path: Path) -> None:
    write_7scenes(tmp_path / "kitchen")
    sequence = open_sequence("kitchen", tmp_path)
    assert sequence.layout == "7scenes" and sequence.has_depth and sequence.has_poses
    assert sequence.indices == [0, 1, 2, 3, 4]
    camera = sequence.camera
    # 525 / 320 / 240 at 640x480 scaled by 1/10: c' = (c + 0.5) / 10 - 0.5.
    np.testing.assert_allclose([camera.fx, camera.fy, camera.cx, camera.cy], [52.5, 52.5, 31.55, 23.55], atol=1e-9)
    frame = sequence[3]
    assert frame.index == 3 and frame.timestamp == 3.0
    np.testing.assert_array_equal(frame.image_hw3[10, 10], colour_rgb(3))
    np.testing.assert_allclose(frame.world_T_cam_44, world_T_cam_44(3), atol=1e-12)
    raw_hw = cv2.imread(str(tmp_path / "kitchen" / "frame-000003.depth.png"), cv2.IMREAD_UNCHANGED)
    K_depth_33 = np.array([[58.5, 0, 31.55], [0, 58.5, 23.55], [0, 0, 1]])
    expected_hw = expected_registered_hw(raw_hw, 1e-3, K_depth_33, camera.K_33, 64, 48)
    np.testing.assert_allclose(frame.depth_hw, expected_hw, atol=1e-6)
    assert frame.depth_hw.max() < 2.0 and (frame.depth_hw == 0).sum() > 100  # 65535 and 0 are holes
    # Near the shared principal point both cameras see the same depth pixel.
    assert frame.depth_hw[23, 31] == pytest.approx((1000 + 10 * 31 + 23) / 1000, abs=1e-6)


def test_7scenes_intrinsics_file_and_override(tmp_path: Path) -> None:
    write_7scenes(tmp_path / "kitchen", intrinsics_file=True)
    sequence = open_sequence("kitchen", tmp_path, frames="1:4:2", intrinsics=(50.0, 50.0, 32.0, 24.0))
    assert sequence.indices == [1, 3]
    np.testing.assert_allclose(sequence.camera.K_33, [[50, 0, 32], [0, 50, 24], [0, 0, 1]])
    frame = sequence[0]
    raw_hw = cv2.imread(str(tmp_path / "kitchen" / "frame-000001.depth.png"), cv2.IMREAD_UNCHANGED)
    K_depth_33 = np.array([[60.0, 0, 30.0], [0, 61.0, 22.0], [0, 0, 1]])
    np.testing.assert_allclose(
        frame.depth_hw, expected_registered_hw(raw_hw, 1e-3, K_depth_33, sequence.camera.K_33, 64, 48), atol=1e-6
    )


def test_7scenes_naming_with_a_shared_camera_file_holds_registered_depth(tmp_path: Path) -> None:
    root = write_7scenes(tmp_path / "tabletop")
    np.savetxt(root / "intrinsics.K.txt", [[61.5, 0, 29.8], [0, 61.6, 24.7], [0, 0, 1]])
    sequence = open_sequence("tabletop", tmp_path)
    np.testing.assert_allclose(sequence.camera.K_33, [[61.5, 0, 29.8], [0, 61.6, 24.7], [0, 0, 1]])
    assert sequence.capture.depth_registered and sequence.capture.depth_synchronised is None
    raw_hw = cv2.imread(str(root / "frame-000002.depth.png"), cv2.IMREAD_UNCHANGED)
    expected_hw = np.where((raw_hw > 0) & (raw_hw < 65535), raw_hw / 1000.0, 0.0)
    np.testing.assert_allclose(sequence[2].depth_hw, expected_hw, atol=1e-6)  # no pixel moves

    kinect = open_sequence(str(write_7scenes(tmp_path / "kitchen")))
    assert not kinect.capture.depth_registered and kinect.capture.depth_synchronised is False
    assert kinect.capture.poses_of_colour is False and kinect.capture.depth_metres_per_unit == 1e-3
    # Its colour camera is the nominal one, unless intrinsics are given; the shared file calibrates.
    assert kinect.capture.colour_calibrated is False and sequence.capture.colour_calibrated is True
    given = open_sequence(str(tmp_path / "kitchen"), intrinsics=(50.0, 50.0, 32.0, 24.0))
    assert given.capture.colour_calibrated is True


def test_7scenes_damaged_images_are_found_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_7scenes(tmp_path / "kitchen")
    (root / "frame-000000.color.png").write_bytes(b"\x00" * 100)
    (root / "frame-000002.color.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)

    def no_decoding(*args: object) -> None:
        raise AssertionError("opening a sequence must not decode images")

    monkeypatch.setattr(image_files_module.cv2, "imread", no_decoding)
    # 2 of 5 frames (more than 10 %) cannot be read: the error names both files.
    with pytest.raises(ValueError, match="2 of 5 selected frames cannot be read") as error:
        open_sequence("kitchen", tmp_path)
    assert f"frame 0: cannot read {root / 'frame-000000.color.png'}: not a PNG or JPEG image" in str(error.value)
    assert f"frame 2: cannot read {root / 'frame-000002.color.png'}: damaged: no PNG chunk at byte 8" in str(error.value)


def test_7scenes_image_of_another_size(tmp_path: Path) -> None:
    root = write_7scenes(tmp_path / "kitchen")
    write_colour(root / "frame-000004.color.png", 4, 32, 24)
    with pytest.raises(ValueError, match=re.escape(f"{root / 'frame-000004.color.png'}: expected a 64x48 image")):
        open_sequence("kitchen", tmp_path)[4]


# TUM RGB-D


def test_tum(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_tum(tmp_path / "rgbd_dataset_freiburg2_desk")
    with caplog.at_level(logging.WARNING, logger="mvs.io.frames"):
        sequence = open_sequence(str(root), tmp_path / "elsewhere")
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    assert sequence.layout == "tum" and sequence.has_depth and sequence.has_poses
    assert sequence.indices == [0, 1, 2, 4]
    assert list(sequence.skipped) == [3] and sequence.skipped[3].startswith(f"no pose in {root / 'groundtruth.txt'}")
    camera = sequence.camera
    # freiburg2 (520.9, 521.0, 325.1, 249.7) at 640x480 scaled to 64x48.
    np.testing.assert_allclose(
        [camera.fx, camera.fy, camera.cx, camera.cy], [52.09, 52.10, 32.06, 24.52], atol=1e-9
    )
    frame = sequence[1]
    assert frame.index == 1 and frame.timestamp == pytest.approx(TUM_T0 + 0.1, abs=1e-6)
    np.testing.assert_array_equal(frame.image_hw3[0, 0], colour_rgb(1))
    np.testing.assert_allclose(frame.depth_hw, 7500 / 5000, atol=1e-6)
    np.testing.assert_allclose(frame.world_T_cam_44, world_T_cam_44(1), atol=1e-8)
    assert sequence[3].index == 4 and sequence[3].depth_hw is None  # depth 50 ms away: no match


def test_tum_k_file_and_default(tmp_path: Path) -> None:
    root = write_tum(tmp_path / "my_recording")
    nominal = open_sequence("my_recording", tmp_path)
    np.testing.assert_allclose(nominal.camera.fx, 52.5, atol=1e-9)
    assert nominal.capture.colour_calibrated is False  # the nominal 525 px at 640 wide
    (root / "K.txt").write_text("40 41 30 20\n")
    sequence = open_sequence("my_recording", tmp_path)
    np.testing.assert_allclose(sequence.camera.K_33, [[40, 0, 30], [0, 41, 20], [0, 0, 1]])
    assert sequence.capture.colour_calibrated is True


def test_tum_bad_trajectory_line(tmp_path: Path) -> None:
    root = write_tum(tmp_path / "tum")
    with open(root / "groundtruth.txt", "a") as file:
        file.write("1305031103.0 1 2 3\n")
    with pytest.raises(ValueError, match=re.escape(f"{root / 'groundtruth.txt'}: line 6: expected 'timestamp tx ty")):
        open_sequence("tum", tmp_path)


# Plain image folder


def test_folder_integer_stems(tmp_path: Path) -> None:
    write_folder(tmp_path / "walk", ["2", "7", "10"])
    sequence = open_sequence("walk", tmp_path)
    assert sequence.layout == "folder" and sequence.has_depth and sequence.has_poses
    assert sequence.indices == [2, 7, 10]  # numeric, not name order ("10" < "2")
    np.testing.assert_allclose(sequence.camera.K_33, [[50, 0, 31.5], [0, 51, 23.5], [0, 0, 1]])
    frame = sequence[2]
    assert frame.index == 10 and frame.timestamp == 10.0
    np.testing.assert_array_equal(frame.image_hw3[5, 5], colour_rgb(2))
    np.testing.assert_allclose(frame.world_T_cam_44, world_T_cam_44(2), atol=1e-12)
    assert frame.depth_hw[7, 3] == pytest.approx((1000 + 10 * 3 + 7) / 1000, abs=1e-6)


def test_folder_names_and_matrix_k(tmp_path: Path) -> None:
    write_folder(tmp_path / "walk", ["a", "b", "c", "d"], k_text="50 0 31.5\n0 51 23.5\n0 0 1\n")
    sequence = open_sequence("walk", tmp_path, frames="1:4:2")
    assert sequence.indices == [1, 3]
    np.testing.assert_allclose(sequence.camera.K_33, [[50, 0, 31.5], [0, 51, 23.5], [0, 0, 1]])
    np.testing.assert_array_equal(sequence[1].image_hw3[0, 0], colour_rgb(3))


def test_folder_needs_intrinsics(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "walk", ["0", "1"], k_text=None)
    with pytest.raises(ValueError, match=re.escape(f"{root}: no camera intrinsics; give --intrinsics fx,fy,cx,cy")):
        open_sequence("walk", tmp_path)
    assert open_sequence("walk", tmp_path, intrinsics=(40, 40, 32, 24)).camera.fx == 40.0
    (root / "K.txt").write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match=re.escape(f"{root / 'K.txt'}: expected a 3x3 intrinsic matrix")):
        open_sequence("walk", tmp_path)


def test_folder_poses_count(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "walk", ["0", "1", "2"])
    (root / "poses.txt").write_text(" ".join(map(str, np.eye(4).ravel())) + "\n")
    message = f"{root / 'poses.txt'}: expected 3 lines (one pose per image), got 1"
    with pytest.raises(ValueError, match=re.escape(message)):
        open_sequence("walk", tmp_path)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        open_sequence("absent", tmp_path)


# Real data


@pytest.mark.skipif(not REDKITCHEN.is_dir(), reason=f"real 7-Scenes data not found at {REDKITCHEN}")
def test_real_7scenes_redkitchen() -> None:
    sequence = open_sequence(str(REDKITCHEN))
    assert sequence.layout == "7scenes" and len(sequence) == 1000 and sequence.skipped == {}
    assert sequence.indices[:3] == [0, 1, 2] and sequence.indices[-1] == 999
    np.testing.assert_allclose([sequence.camera.fx, sequence.camera.fy], [525.0, 525.0])
    np.testing.assert_allclose([sequence.camera.cx, sequence.camera.cy], [320.0, 240.0])
    for position in (0, 500, 999):
        frame = sequence[position]
        assert frame.image_hw3.shape == (480, 640, 3) and frame.depth_hw.shape == (480, 640)
        assert 0.5 < frame.depth_hw[240, 320] < 5.0
        # The stored rotations are orthonormal to ~4e-4 (KinectFusion); the loader makes them
        # exactly rigid, moving them by no more than that.
        stored_44 = np.loadtxt(REDKITCHEN / f"frame-{frame.index:06d}.pose.txt")
        R_33 = frame.world_T_cam_44[:3, :3]
        np.testing.assert_allclose(R_33 @ R_33.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R_33) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(frame.world_T_cam_44, stored_44, atol=1e-3)
        raw_hw = cv2.imread(str(REDKITCHEN / f"frame-{frame.index:06d}.depth.png"), cv2.IMREAD_UNCHANGED)
        # Colour (525) and depth (585) cameras share the principal point (320, 240).
        assert frame.depth_hw[240, 320] == pytest.approx(raw_hw[240, 320] / 1000.0, abs=1e-6)


def test_ground_truth_poses_and_timestamps_are_read_without_loading_frames(tmp_path):
    root = write_tum(tmp_path / "rgbd_dataset_freiburg2_desk")
    sequence = open_sequence(str(root), tmp_path)
    for index in sequence.indices:
        frame = sequence[sequence.indices.index(index)]
        np.testing.assert_array_equal(sequence.gt_world_T_cam_44[index], frame.world_T_cam_44)
        assert sequence.timestamp(index) == frame.timestamp
