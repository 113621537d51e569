"""Frames whose image data cannot be read: found up front (image files cut short or damaged)
or when read (data that fails to decode), skipped and reported, and refused beyond 10 %."""

import json
import re
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest

from mvs.io.frames import image_file_damage
from mvs.io.layout import open_sequence
from mvs.run import main
from mvs.types import UnreadableFrame

WIDTH, HEIGHT = 64, 48
DEPTH_MM = 1500


def textured_bgr_hw3(k: int) -> np.ndarray:
    """A 64x48 image with detail, different for every `k`."""
    return np.random.default_rng(k).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def write_folder(root: Path, count: int) -> Path:
    """Image folder: `count` JPEG frames 0.jpg.., depth PNGs of a wall 1.5 m ahead, poses
    stepping 1 cm along x, K.txt."""
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    poses = []
    for k in range(count):
        cv2.imwrite(str(root / "images" / f"{k}.jpg"), textured_bgr_hw3(k))
        cv2.imwrite(str(root / "depth" / f"{k}.png"), np.full((HEIGHT, WIDTH), DEPTH_MM, np.uint16))
        world_T_cam_44 = np.eye(4)
        world_T_cam_44[0, 3] = 0.01 * k
        poses.append(" ".join(map(str, world_T_cam_44.ravel())))
    (root / "poses.txt").write_text("\n".join(poses) + "\n")
    (root / "K.txt").write_text("50 50 31.5 23.5\n")
    return root


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def undecodable_jpeg(path: Path) -> None:
    """Rewrite the JPEG at `path` whole in structure but with a frame height of 0, which
    decoders refuse (the file-structure check cannot see it)."""
    data = bytearray(path.read_bytes())
    start_of_frame = data.find(b"\xff\xc0")
    data[start_of_frame + 5 : start_of_frame + 7] = b"\x00\x00"
    path.write_bytes(bytes(data))


def undecodable_png(path: Path) -> None:
    """Rewrite the PNG at `path` with random IDAT data under a correct checksum: whole in
    structure, but not a zlib stream."""
    data = bytearray(path.read_bytes())
    kind = data.find(b"IDAT")
    length = int.from_bytes(data[kind - 4 : kind], "big")
    data[kind + 4 : kind + 4 + length] = np.random.default_rng(0).integers(0, 256, length, dtype=np.uint8).tobytes()
    data[kind + 4 + length : kind + 8 + length] = zlib.crc32(data[kind : kind + 4 + length]).to_bytes(4, "big")
    path.write_bytes(bytes(data))


def run_cli(*args: str) -> int:
    return main(["--device", "cpu", "--no-render", "--voxel-size", "0.05", *args])


def test_image_file_damage_finds_empty_cut_short_and_damaged_files(tmp_path):
    jpeg, png = tmp_path / "a.jpg", tmp_path / "a.png"
    cv2.imwrite(str(jpeg), textured_bgr_hw3(0))
    cv2.imwrite(str(png), np.full((HEIGHT, WIDTH), DEPTH_MM, np.uint16))
    assert image_file_damage(jpeg) == image_file_damage(png) == ""
    motion_photo = tmp_path / "motion.jpg"  # a phone's JPEG with a video after the image
    motion_photo.write_bytes(jpeg.read_bytes() + b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
    assert image_file_damage(motion_photo) == ""

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert image_file_damage(empty) == "the file is empty"
    text = tmp_path / "text.png"
    text.write_text("not an image")
    assert image_file_damage(text) == "not a PNG or JPEG image"
    truncate(jpeg)
    # A decoder fills a cut-short JPEG with grey and reports success: only the check sees it.
    assert cv2.imread(str(jpeg)).shape == (HEIGHT, WIDTH, 3)
    assert image_file_damage(jpeg) == "truncated: no end-of-image marker after the image data"
    truncate(jpeg, 0.05)
    assert image_file_damage(jpeg) == "truncated: the file ends inside its header"
    flipped = bytearray(png.read_bytes())
    flipped[flipped.find(b"IDAT") + 6] ^= 0xFF
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    assert image_file_damage(tmp_path / "flipped.png") == "damaged: the checksum of its IDAT chunk does not match"
    assert cv2.imread(str(tmp_path / "flipped.png"), cv2.IMREAD_UNCHANGED) is None
    truncate(png, 0.9)
    assert image_file_damage(png) == "truncated: the file ends inside its IDAT chunk"


def test_a_folder_with_one_truncated_jpeg_among_100_completes_listing_it_as_skipped(tmp_path, capsys):
    root = write_folder(tmp_path / "shots", 100)
    truncate(root / "images" / "37.jpg")
    out = tmp_path / "out"
    assert run_cli("--sequence", str(root), "--out", str(out)) == 0
    console = capsys.readouterr().out
    assert "skipped: 1 frame(s), 1 of them unreadable; report.json lists each with the reason" in console
    assert "skipped 1 frame(s); report.json lists each with the reason" in console
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete"
    assert report["frames_selected"] == report["frames_fused"] == 99
    assert report["skipped"] == {
        "37": f"cannot read {root / 'images' / '37.jpg'}: truncated: no end-of-image marker after the image data"
    }
    assert 37 not in np.loadtxt(out / "trajectory.txt")[:, 0]
    # The wall 1.5 m ahead of every camera.
    vertices_n3 = np.asarray(o3d.io.read_triangle_mesh(str(out / "mesh.ply")).vertices)
    assert len(vertices_n3) > 100
    assert np.median(vertices_n3[:, 2]) == pytest.approx(DEPTH_MM / 1000, abs=0.05)


def test_more_than_a_tenth_of_the_selected_frames_unreadable_stops_naming_them(tmp_path, capsys):
    root = write_folder(tmp_path / "shots", 100)
    bad_colour = [3, 9, 20, 21, 22, 30, 41, 44, 45]
    for index in bad_colour:
        truncate(root / "images" / f"{index}.jpg")
    (root / "images" / "47.jpg").write_bytes(b"")
    # Ten of 100 (not more than 10 %) are skipped.
    sequence = open_sequence(str(root))
    assert len(sequence) == 90
    assert sequence.skipped == sequence.unreadable and sorted(sequence.skipped) == [*bad_colour, 47]
    assert open_sequence(str(root), frames="48:").skipped == {}  # frames out of the selection are not read
    # Eleven of 100 stop the run before any work, naming the files.
    truncate(root / "depth" / "48.png", 0.9)
    out = tmp_path / "out"
    assert run_cli("--sequence", str(root), "--out", str(out)) == 2
    error = capsys.readouterr().err
    assert f"{root}: 11 of 100 selected frames cannot be read, more than the 10 % a run skips" in error
    for index in bad_colour:
        assert f"frame {index}: cannot read {root / 'images' / f'{index}.jpg'}: truncated" in error
    assert f"frame 47: cannot read {root / 'images' / '47.jpg'}: the file is empty" in error
    assert error.rstrip().endswith("; and 1 more") and "frame 48" not in error
    assert not (out / "report.json").exists()


def test_image_that_fails_to_decode_when_read_is_skipped(tmp_path):
    root = write_folder(tmp_path / "shots", 20)
    undecodable_png(root / "depth" / "5.png")
    undecodable_jpeg(root / "images" / "12.jpg")
    assert image_file_damage(root / "depth" / "5.png") == image_file_damage(root / "images" / "12.jpg") == ""
    sequence = open_sequence(str(root))
    assert len(sequence) == 20 and sequence.skipped == {}
    with pytest.raises(UnreadableFrame, match=re.escape(f"{root / 'depth' / '5.png'}: cannot read image")):
        sequence[5]
    assert [frame.index for frame in sequence] == [i for i in range(20) if i not in (5, 12)]
    assert sequence.skipped == sequence.unreadable == {
        5: f"{root / 'depth' / '5.png'}: cannot read image",
        12: f"{root / 'images' / '12.jpg'}: cannot read image",
    }
    # A third frame is more than 10 % of 20: iterating stops, naming all three.
    undecodable_jpeg(root / "images" / "17.jpg")
    with pytest.raises(ValueError, match=re.escape("3 of 20 selected frames cannot be read")) as error:
        list(open_sequence(str(root)))
    assert all(f"frame {i}: {root}" in str(error.value) for i in (5, 12, 17))


def test_frame_that_fails_to_decode_mid_run_is_skipped_and_the_run_completes(small_room, tmp_path):
    room = shutil.copytree(small_room, tmp_path / "room")
    undecodable_jpeg(room / "color" / "20.jpg")
    out = tmp_path / "out"
    assert run_cli("--sequence", str(room), "--out", str(out)) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete" and report["frames_fused"] == 39
    assert report["skipped"] == {"20": f"{room / 'color' / '20.jpg'}: cannot read image"}


def mjpeg_video(path: Path, count: int) -> list[int]:
    """Write a Motion-JPEG AVI of `count` frames, frame k at grey level 10 k on its odd rows;
    returns the byte offset of each frame's JPEG."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (WIDTH, HEIGHT))
    for k in range(count):
        image_hw3 = np.full((HEIGHT, WIDTH, 3), 10 * k, np.uint8)
        image_hw3[::2, ::2] = 255 - 10 * k  # detail, so that frames outweigh the AVI header
        writer.write(image_hw3)
    writer.release()
    starts = [match.start() for match in re.finditer(b"\xff\xd8\xff", path.read_bytes())]
    assert len(starts) == count
    return starts


def test_video_frame_that_fails_to_decode_is_skipped_when_read(tmp_path):
    path = tmp_path / "walk.avi"
    starts = mjpeg_video(path, 20)
    data = bytearray(path.read_bytes())
    data[starts[10] : starts[10] + 300] = bytes(300)  # frame 10's JPEG header is gone
    path.write_bytes(bytes(data))
    sequence = open_sequence(str(path), intrinsics=(50.0, 50.0, 31.5, 23.5))
    assert len(sequence) == 20 and sequence.skipped == {}
    frames = list(sequence)
    assert [frame.index for frame in frames] == [i for i in range(20) if i != 10]
    assert np.median(frames[10].image_hw3[1::2]) == pytest.approx(110, abs=3)  # frame 11, in step
    assert sequence.skipped == {10: f"{path}: cannot decode frame 10"}
    for index in (12, 14):
        data[starts[index] : starts[index] + 300] = bytes(300)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(f"{path}: 3 of 20 selected frames cannot be read")):
        list(open_sequence(str(path), intrinsics=(50.0, 50.0, 31.5, 23.5)))
