"""Video input: a rendered room encoded as MP4, read lazily and reconstructed end to end."""

import json
import pickle
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest

from mvs.io import video as video_module
from mvs.io.intrinsics import MissingIntrinsics, parse_intrinsics
from mvs.io.layout import open_sequence
from mvs.pipeline import open_with_intrinsics
from mvs.run import build_config, main, parse_args
from mvs.synth import RoomSpec, build_room
from mvs.synth_render import RoomRenderer
from slam.self_calibration import CalibrationFailed, FocalSearchConfig, estimate_focal, guessed_camera
from slam.trajectory import evaluate_trajectory, read_tum_trajectory

NUM_FRAMES = 60
FPS = 30.0
SMALL_IMAGE_CONFIG = """\
# Monocular tracking at 160x120 (as in tests/test_slam_frontend.py), depth at the input size.
tracking:
  vo:
    klt: {max_corners: 200, min_distance_px: 6, window_px: 15, levels: 2}
    init_min_flow_px: 8
    init_min_tracks: 40
    init_min_points: 30
    keyframe_min_tracked: 50
depth:
  working_width: 160
  working_height: 120
fusion:
  voxel_size: 0.05
"""


@pytest.fixture(scope="module")
def room_video(tmp_path_factory) -> tuple[Path, object]:
    """The first 60 of 300 frames of room 0 at 160x120 as an MP4 (MPEG-4 part 2, 30 fps)."""
    room = build_room(RoomSpec(seed=0, num_frames=300, width=160, height=120))
    renderer = RoomRenderer(room)
    path = tmp_path_factory.mktemp("video") / "room0.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (160, 120))
    assert writer.isOpened(), "OpenCV cannot write MPEG-4 video here"
    for index in range(NUM_FRAMES):
        image_hw3, _ = renderer.render(room.world_T_cam_n44[index])
        writer.write(np.ascontiguousarray(image_hw3[..., ::-1]))
    writer.release()
    return path, room


def intrinsics_flag(room) -> str:
    camera = room.camera
    return f"{camera.fx},{camera.fy},{camera.cx},{camera.cy}"


def test_video_frames_decode_lazily_in_order_and_by_seeking(room_video, monkeypatch):
    path, room = room_video
    sequence = open_sequence(str(path), intrinsics=(room.camera.fx, room.camera.fy, room.camera.cx, room.camera.cy))
    assert sequence.layout == "video" and len(sequence) == NUM_FRAMES and sequence.skipped == {}
    assert not sequence.has_depth and not sequence.has_poses and sequence.gt_world_T_cam_44 == {}
    np.testing.assert_allclose(sequence.camera.K_33, room.camera.K_33)
    frames = list(sequence)
    assert [f.index for f in frames] == list(range(NUM_FRAMES))
    assert frames[45].timestamp == pytest.approx(45 / FPS, abs=1e-12)
    assert frames[0].image_hw3.shape == (120, 160, 3) and frames[0].depth_hw is None
    # Frame 45 is the rendering of pose 45 up to the codec's loss (mean |error| measured 4.3),
    # and closer to it than to the renderings of the frames before and after (measured 10.3).
    renderer = RoomRenderer(room)
    errors = {i: np.mean(np.abs(frames[45].image_hw3.astype(int) - renderer.render(room.world_T_cam_n44[i])[0]))
              for i in (44, 45, 46)}
    assert errors[45] < 6 and errors[45] < min(errors[44], errors[46]) - 3

    seeks = []
    capture_class = cv2.VideoCapture
    reader = sequence.load_frame
    reader._capture = None  # a fresh capture that records its seeks
    monkeypatch.setattr(video_module.cv2, "VideoCapture", lambda *a: _SeekCounter(capture_class(*a), seeks))
    in_order = {i: reader(i).image_hw3 for i in (0, 1, 2, 4, 8)}  # forward steps grab, never seek
    assert seeks == []
    again = {i: reader(i).image_hw3 for i in (8, 1)}  # backwards: seeks
    assert seeks == [8, 1]
    for index, image_hw3 in [*in_order.items(), *again.items()]:
        np.testing.assert_array_equal(image_hw3, frames[index].image_hw3)

    restored = pickle.loads(pickle.dumps(sequence))
    np.testing.assert_array_equal(restored[30].image_hw3, frames[30].image_hw3)
    assert [f.index for f in open_sequence(str(path), frames="10:20:5", intrinsics=(100.0, 100.0, 80.0, 60.0))] == [10, 15]


class _SeekCounter:
    """A VideoCapture that records the frame positions it is asked to seek to."""

    def __init__(self, capture, seeks):
        self._capture, self._seeks = capture, seeks

    def set(self, prop, value):
        if prop == cv2.CAP_PROP_POS_FRAMES:
            self._seeks.append(int(value))
        return self._capture.set(prop, value)

    def __getattr__(self, name):
        return getattr(self._capture, name)


def test_truncated_video_skips_and_counts_the_frames_it_cannot_decode(tmp_path):
    path = tmp_path / "cut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    for index in range(20):
        image_hw3 = np.full((48, 64, 3), 10 * index, np.uint8)
        image_hw3[::2, ::2] = 255 - 10 * index  # detail, so that frames outweigh the AVI header
        writer.write(image_hw3)
    writer.release()
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    capture = cv2.VideoCapture(str(path))
    decodable = 0
    while capture.read()[0]:
        decodable += 1
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 20 and 5 < decodable < 20  # the AVI still declares 20

    sequence = open_sequence(str(path), intrinsics=(60.0, 60.0, 32.0, 24.0))
    assert sequence.indices == list(range(decodable))
    assert sorted(sequence.skipped) == list(range(decodable, 20))
    assert all(f"cannot be decoded from {path}" in reason for reason in sequence.skipped.values())
    last = sequence[decodable - 1]
    assert last.index == decodable - 1
    assert np.median(last.image_hw3[1::2]) == pytest.approx(10 * last.index, abs=3)  # odd rows keep the level


def test_video_without_intrinsics_gets_its_focal_length_from_its_frames(room_video, tmp_path):
    path, room = room_video
    with pytest.raises(MissingIntrinsics, match=re.escape(f"{path}: a 160x120 video has no camera intrinsics; give --intrinsics")):
        open_sequence(str(path))
    small = tmp_path / "small.yaml"
    small.write_text(SMALL_IMAGE_CONFIG)
    config = build_config(parse_args(["--sequence", str(path), "--poses", "track", "--config", str(small)]))
    sequence, config = open_with_intrinsics(config)
    # The rendered camera: fx = fy = 131.25 px, principal point at the centre; measured -0.3 %.
    assert sequence.camera.fx == pytest.approx(room.camera.fx, rel=0.02)
    assert sequence.camera.fy == sequence.camera.fx
    assert (sequence.camera.cx, sequence.camera.cy) == (79.5, 59.5)
    chosen = [s for s in config.settings if s.key == "sequence.intrinsics"]
    assert len(chosen) == 1 and chosen[0].source == "input" and "estimated from the first 60 frames" in chosen[0].reason
    assert config.sequence.intrinsics == chosen[0].value
    # The recorded values reopen the video with the same camera (as mvs.eval does).
    np.testing.assert_allclose(open_sequence(str(path), intrinsics=parse_intrinsics(config.sequence.intrinsics)).camera.K_33,
                               sequence.camera.K_33, atol=1e-3)
    # A range that leaves the true focal length out (0.5-0.8 times the guess of 125.6 px) ends at
    # its edge: no estimate, and the message says how to give the intrinsics.
    guessed = replace(open_sequence(str(path), intrinsics=parse_intrinsics(config.sequence.intrinsics)),
                      camera=guessed_camera(160, 120))
    with pytest.raises(CalibrationFailed, match="still falls at the end of the focal lengths searched.*give --intrinsics"):
        estimate_focal(guessed, FocalSearchConfig(low=0.5, high=0.8), config.tracking.vo, progress=False)
    not_video = tmp_path / "notes.txt"
    not_video.write_text("hello")
    with pytest.raises(ValueError, match=re.escape(f"{not_video}: cannot open as a video")):
        open_sequence(str(not_video), intrinsics=(1.0, 1.0, 0.0, 0.0))


def test_run_from_a_video_with_intrinsics_tracks_and_fuses(room_video, tmp_path):
    path, room = room_video
    config = tmp_path / "small.yaml"
    config.write_text(SMALL_IMAGE_CONFIG)
    out = tmp_path / "out"
    args = ["--sequence", str(path), "--intrinsics", intrinsics_flag(room), "--poses", "track",
            "--depth", "classic", "--config", str(config), "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "complete" and report["layout"] == "video"
    assert report["frames_selected"] == NUM_FRAMES and report["frames_posed"] >= 0.9 * NUM_FRAMES
    assert f"intrinsics: {intrinsics_flag(room)}" in (out / "config.yaml").read_text()
    assert len(o3d.io.read_triangle_mesh(str(out / "mesh.ply")).triangles) > 1000

    timestamps_n, world_T_cam_n44 = read_tum_trajectory(out / "trajectory.txt")
    indices_n = np.rint(timestamps_n * FPS).astype(int)
    np.testing.assert_allclose(indices_n / FPS, timestamps_n, atol=1e-6)  # timestamps from the frame rate
    assert len(indices_n) >= 0.9 * NUM_FRAMES
    metrics = evaluate_trajectory(
        dict(zip(indices_n.tolist(), world_T_cam_n44)),
        {i: room.world_T_cam_n44[i] for i in range(NUM_FRAMES)}, with_scale=True,
    )
    # Tracking from the decoded video: within 2 cm of the rendered path over ~0.9 m of travel.
    assert metrics.ate_rmse < 0.02
