"""RGB-D tracking (`--poses rgbd`) keeps one metric map: the keyframe map's points are lifted
by the sensor's depth, so a piece starts at one frame and a frame after a cut relocalises in
the map; on a room rendered at 160x120."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mvs.config import TrackingConfig
from mvs.poses import estimate_poses
from mvs.types import Frame
from slam.frontend import track_sequence
from slam.result import METRES
from slam.trajectory import evaluate_trajectory
from test_slam_frontend import SMALL_IMAGE_VO, in_memory_sequence
from test_slam_map import BLANK, RoomViews, blank

BEFORE = 60
"""Path frames tracked before the cut."""
RESUME = 20
"""Path position the camera shows after the cut: a place mapped 40 frames (60 cm) earlier."""
AFTER = 60


@pytest.fixture(scope="module")
def cut():
    """Path frames 0-59, three black frames without depth, then path frames 20-79."""
    room = RoomViews(seed=0)
    frames = {index: room.frame(index) for index in range(BEFORE)}
    frames.update({index: blank(index, frames[0]) for index in range(BEFORE, BEFORE + BLANK)})
    frames.update({BEFORE + BLANK + k: room.frame(BEFORE + BLANK + k, RESUME + k) for k in range(AFTER)})
    return frames, in_memory_sequence(room.room.camera, frames)


@pytest.fixture(scope="module")
def cut_result(cut):
    """The frames of the cut and the keyframe map's poses with the depths lifted (no scale fitted)."""
    frames, sequence = cut
    return frames, track_sequence(sequence, replace(SMALL_IMAGE_VO, lift_depth=True), progress=False, use_depth=True)


def test_rgbd_tracking_keeps_one_map_across_a_cut(cut_result):
    frames, result = cut_result
    assert result.lost == list(range(BEFORE, BEFORE + BLANK)) and result.unjoined == []
    assert len(result.world_T_cam_44) == BEFORE + AFTER
    assert [(piece.first, piece.joined) for piece in result.pieces] == [(0, "main"), (BEFORE + BLANK, "relocalised")]


def truth_of(frames: dict[int, Frame]) -> dict[int, np.ndarray]:
    return {index: frame.world_T_cam_44 for index, frame in frames.items() if frame.world_T_cam_44 is not None}


def test_rgbd_tracking_is_metric_without_a_scale_fit(cut_result):
    """The lifted map is in metres: with no scale fitted, the poses are within 1 cm of the
    truth over the 1.2 m of path (ATE after SE(3); measured 0.27 cm), and the Sim(3) scale
    is 1 within 1 % (measured 1.002)."""
    frames, result = cut_result
    truth = truth_of(frames)
    rigid = evaluate_trajectory(result.world_T_cam_44, truth, with_scale=False)
    similar = evaluate_trajectory(result.world_T_cam_44, truth, with_scale=True)
    assert rigid.ate_rmse < 0.01
    assert abs(similar.scale - 1.0) < 0.01


def test_poses_rgbd_tracks_with_the_map_in_metres(cut):
    """`--poses rgbd` runs the keyframe map with the depths (scaled to the sensor's depth)."""
    frames, sequence = cut
    result = estimate_poses(sequence, TrackingConfig(poses="rgbd", vo=SMALL_IMAGE_VO))
    assert result.scale == METRES and len(result.world_T_cam_44) == BEFORE + AFTER
    assert evaluate_trajectory(result.world_T_cam_44, truth_of(frames), with_scale=False).ate_rmse < 0.01
