"""ScanNet `.sens` files: written here in ScanNet's SensReader layout from a small export,
they must load to the same frames as the export itself."""

import json
import logging
import pickle
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from mvs.io import sens as sens_module
from mvs.io.layout import open_sequence
from mvs.run import main
from test_sequences import K_44_text, depth_mm_hw, world_T_cam_44

COLOUR_K = (100.0, 110.0, 63.5, 47.5)  # at 128x96
DEPTH_K = (60.0, 66.0, 32.0, 24.0)  # at 64x48
NUM_FRAMES = 6
INVALID_POSES = {2: -np.inf, 4: np.nan}  # ScanNet marks lost tracking with -inf
DEPTH_SHIFT = 1000.0


def timestamp_us(i: int) -> int:
    return 1_000_000 + 33_333 * i


def textured_bgr_hw3(i: int) -> np.ndarray:
    """128x96 smooth colour ramps that move with `i` (distinct per frame, no edges)."""
    v_hw, u_hw = np.mgrid[0:96, 0:128]
    return np.stack([1.5 * u_hw + 5 * i, 2 * v_hw + 9 * i, u_hw + v_hw], axis=-1).astype(np.uint8)


def write_export(root: Path) -> Path:
    """A ScanNet export as SensReader writes it: frames 0..5, poses exact in float32."""
    for name in ("color", "depth", "pose", "intrinsic"):
        (root / name).mkdir(parents=True)
    (root / "intrinsic" / "intrinsic_color.txt").write_text(K_44_text(*COLOUR_K))
    (root / "intrinsic" / "intrinsic_depth.txt").write_text(K_44_text(*DEPTH_K))
    for i in range(NUM_FRAMES):
        cv2.imwrite(str(root / "color" / f"{i}.jpg"), textured_bgr_hw3(i))
        raw_hw = depth_mm_hw(64, 48) + np.uint16(7 * i)
        raw_hw[:4, :4] = 0  # a hole
        cv2.imwrite(str(root / "depth" / f"{i}.png"), raw_hw)
        pose_44 = np.full((4, 4), INVALID_POSES[i]) if i in INVALID_POSES else world_T_cam_44(i)
        np.savetxt(root / "pose" / f"{i}.txt", pose_44.astype(np.float32).astype(np.float64))
    return root


def write_sens(path: Path, export: Path, jpeg_quality: int = 95) -> Path:
    """`export` as a .sens file, field by field in ScanNet's SensReader layout (little-endian):
    the colour JPEGs re-encoded from the exported images, depth zlib-compressed uint16."""
    def matrix(values_44: np.ndarray) -> bytes:
        return struct.pack("<16f", *np.asarray(values_44, dtype=np.float32).ravel())

    colour_K_44 = np.loadtxt(export / "intrinsic" / "intrinsic_color.txt")
    depth_K_44 = np.loadtxt(export / "intrinsic" / "intrinsic_depth.txt")
    name = b"StructureSensor"
    chunks = [
        struct.pack("<I", 4),  # version
        struct.pack("<Q", len(name)), name,
        matrix(colour_K_44), matrix(np.eye(4)), matrix(depth_K_44), matrix(np.eye(4)),
        struct.pack("<i", 2),  # colour compression: jpeg
        struct.pack("<i", 1),  # depth compression: zlib_ushort
        struct.pack("<I", 128), struct.pack("<I", 96),  # colour width, height
        struct.pack("<I", 64), struct.pack("<I", 48),  # depth width, height
        struct.pack("<f", DEPTH_SHIFT),
        struct.pack("<Q", NUM_FRAMES),
    ]
    for i in range(NUM_FRAMES):
        colour_bgr_hw3 = cv2.imread(str(export / "color" / f"{i}.jpg"))
        colour = cv2.imencode(".jpg", colour_bgr_hw3, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])[1].tobytes()
        raw_hw = cv2.imread(str(export / "depth" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        depth = zlib.compress(raw_hw.astype("<u2").tobytes())
        chunks += [
            matrix(np.loadtxt(export / "pose" / f"{i}.txt")),
            struct.pack("<Q", timestamp_us(i)), struct.pack("<Q", timestamp_us(i) + 100),
            struct.pack("<Q", len(colour)), struct.pack("<Q", len(depth)),
            colour, depth,
        ]
    path.write_bytes(b"".join(chunks))
    return path


@pytest.fixture
def export_and_sens(tmp_path) -> tuple[Path, Path]:
    export = write_export(tmp_path / "export")
    return export, write_sens(tmp_path / "scene0000_00.sens", export)


def frame_offsets(path: Path) -> list[int]:
    """Byte offset of every frame of a .sens file written by `write_sens`."""
    _, records, _ = sens_module.index_sens_frames(path)
    return [r.colour_offset - 96 for r in records]


def test_sens_loads_to_the_same_frames_as_the_export(export_and_sens, caplog):
    export, sens_path = export_and_sens
    expected = open_sequence(str(export))
    with caplog.at_level(logging.WARNING):
        sequence = open_sequence(str(sens_path))
    assert sequence.layout == "sens" and sequence.has_depth and sequence.has_poses
    assert sequence.indices == expected.indices == [0, 1, 3, 5]
    assert sequence.skipped.keys() == expected.skipped.keys() == INVALID_POSES.keys()
    assert sequence.skipped[2] == f"invalid pose in {sens_path} frame 2"
    assert "skipped 2 of 6 frames without a valid pose" in caplog.text
    np.testing.assert_array_equal(sequence.camera.K_33, expected.camera.K_33)
    assert (sequence.camera.width, sequence.camera.height) == (expected.camera.width, expected.camera.height) == (64, 48)
    for index in sequence.indices:
        np.testing.assert_array_equal(sequence.gt_world_T_cam_44[index], expected.gt_world_T_cam_44[index])
        assert sequence.timestamp(index) == pytest.approx(timestamp_us(index) * 1e-6, abs=1e-9)
    for got, want in zip(sequence, expected):
        assert got.index == want.index
        np.testing.assert_array_equal(got.world_T_cam_44, want.world_T_cam_44)
        np.testing.assert_array_equal(got.depth_hw, want.depth_hw)
        assert got.depth_hw.dtype == np.float32 and (got.depth_hw > 0).mean() > 0.5
        # The sensor's JPEG is the exported image re-encoded at quality 95 (measured after the
        # 2x shrink: 0.03 levels on average, 1 at worst).
        difference_hw3 = np.abs(got.image_hw3.astype(int) - want.image_hw3)
        assert difference_hw3.mean() < 0.2 and difference_hw3.max() <= 3
    restored = pickle.loads(pickle.dumps(sequence))
    np.testing.assert_array_equal(restored[1].image_hw3, sequence[1].image_hw3)


def test_scannet_download_folder_and_frame_selection(export_and_sens, tmp_path):
    _, sens_path = export_and_sens
    scene = tmp_path / "scannet" / "scene0000_00"
    scene.mkdir(parents=True)
    sens_path.rename(scene / "scene0000_00.sens")
    sequence = open_sequence("scannet/scene0000", tmp_path, frames="1:6:2", intrinsics=(120.0, 121.0, 60.0, 50.0))
    assert sequence.name == "scannet/scene0000_00" and sequence.layout == "sens"
    assert sequence.indices == [1, 3, 5] and sequence.skipped == {}
    # The override is in pixels of the 128x96 colour images; the working camera is 64x48.
    np.testing.assert_allclose([sequence.camera.fx, sequence.camera.fy], [60.0, 60.5])
    np.testing.assert_allclose([sequence.camera.cx, sequence.camera.cy], [29.75, 24.75])
    write_export(tmp_path / "both")
    (tmp_path / "both" / "both.sens").write_bytes((scene / "scene0000_00.sens").read_bytes())
    assert open_sequence("both", tmp_path).layout == "scannet"  # an export beside the .sens is preferred


def test_opening_reads_headers_only(export_and_sens, monkeypatch):
    _, sens_path = export_and_sens

    def no_decoding(*args: object) -> None:
        raise AssertionError("opening a .sens file must not decode images")

    monkeypatch.setattr(sens_module.cv2, "imdecode", no_decoding)
    monkeypatch.setattr(sens_module.zlib, "decompress", no_decoding)
    assert len(open_sequence(str(sens_path))) == 4


def test_truncated_and_damaged_frames_are_skipped_and_counted(export_and_sens):
    export, sens_path = export_and_sens
    offsets = frame_offsets(sens_path)
    data = bytearray(sens_path.read_bytes())
    data[offsets[1] + 96] ^= 0xFF  # frame 1: colour no longer starts like a JPEG
    sens_path.write_bytes(bytes(data[: offsets[5] + 200]))  # the file ends inside frame 5
    sequence = open_sequence(str(sens_path))
    assert sequence.indices == [0, 3]
    assert sequence.skipped[1] == f"damaged in {sens_path}: colour data is not a JPEG or PNG image as the header says"
    assert sequence.skipped[5] == f"truncated: {sens_path} ends at byte {offsets[5] + 200} inside frame 5 of 6"
    assert sequence.skipped[2].startswith("invalid pose") and sequence.skipped[4].startswith("invalid pose")
    np.testing.assert_array_equal(sequence[1].depth_hw, open_sequence(str(export))[2].depth_hw)


def test_bad_files_fail_naming_the_file(export_and_sens, tmp_path):
    _, sens_path = export_and_sens
    data = sens_path.read_bytes()
    old = tmp_path / "old.sens"
    old.write_bytes(struct.pack("<I", 3) + data[4:])
    with pytest.raises(ValueError, match=re.escape(f"{old}: unsupported .sens version 3 (expected 4)")):
        open_sequence(str(old))
    short = tmp_path / "short.sens"
    short.write_bytes(data[:100])
    with pytest.raises(ValueError, match=re.escape(f"{short}: not a ScanNet .sens file (the file ends inside the header)")):
        open_sequence(str(short))
    count_offset = 4 + 8 + len(b"StructureSensor") + 4 * 64 + 2 * 4 + 4 * 4 + 4
    assert struct.unpack("<Q", data[count_offset : count_offset + 8]) == (NUM_FRAMES,)
    damaged = tmp_path / "damaged.sens"
    damaged.write_bytes(data[:count_offset] + struct.pack("<Q", 2**40) + data[count_offset + 8 :])
    with pytest.raises(ValueError, match=re.escape(f"{damaged}: the header declares {2**40} frames; the file is damaged")):
        open_sequence(str(damaged))
    # Depth data that starts like zlib but is not: the frame fails on load, naming file and frame.
    _, records, _ = sens_module.index_sens_frames(sens_path)
    broken = bytearray(data)
    broken[records[0].depth_offset + 2 : records[0].depth_offset + 40] = bytes(38)
    sens_path.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=re.escape(f"{sens_path}: frame 0: cannot decompress the depth image")):
        open_sequence(str(sens_path))[0]


def test_run_reports_the_skipped_frames_of_a_sens_file(export_and_sens, tmp_path):
    _, sens_path = export_and_sens
    offsets = frame_offsets(sens_path)
    sens_path.write_bytes(sens_path.read_bytes()[: offsets[5] + 10])
    out = tmp_path / "out"
    assert main(["--sequence", str(sens_path), "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete" and report["layout"] == "sens"
    assert report["frames_selected"] == report["frames_fused"] == 3
    assert sorted(report["skipped"]) == ["2", "4", "5"]
    assert report["skipped"]["5"].startswith(f"truncated: {sens_path}")
    np.testing.assert_allclose(np.loadtxt(out / "trajectory.txt")[:, 0], [timestamp_us(i) * 1e-6 for i in (0, 1, 3)])
