"""KLT against the optical flow a rendered room's depth and poses give in closed form."""

from __future__ import annotations

import cv2
import numpy as np

from mvs.geometry import backproject_n3, invert_pose_44, project_n2, transform_n3
from mvs.synth import RoomSpec, build_room
from mvs.synth_render import RoomRenderer
from slam.klt import KLTConfig, detect_corners_n2, track_points_n2


def test_klt_follows_a_fast_camera_without_a_motion_prior():
    """Frames 0 and 3 of room 0 at 640x480, 300 frames a loop: the corners move about 60 px,
    as a fast hand-held camera does from one frame to the next. With no prediction, the
    default pyramid must still find them (a three-level pyramid lost three quarters of them to
    positions 50 px off while its forward-backward check passed them)."""
    room = build_room(RoomSpec(seed=0, num_frames=300, width=640, height=480))
    renderer = RoomRenderer(room)
    image_a_hw3, depth_a_hw = renderer.render(room.world_T_cam_n44[0])
    image_b_hw3, _ = renderer.render(room.world_T_cam_n44[3])
    gray_a_hw = cv2.cvtColor(image_a_hw3, cv2.COLOR_RGB2GRAY)
    gray_b_hw = cv2.cvtColor(image_b_hw3, cv2.COLOR_RGB2GRAY)
    config = KLTConfig()
    uv_a_n2 = detect_corners_n2(gray_a_hw, np.zeros((0, 2)), config.max_corners, config)
    uv_b_n2, ok_n = track_points_n2(gray_a_hw, gray_b_hw, uv_a_n2, config)

    pixel_n2 = np.round(uv_a_n2).astype(int)
    points_a_n3 = backproject_n3(uv_a_n2, depth_a_hw[pixel_n2[:, 1], pixel_n2[:, 0]], room.camera.K_33)
    b_T_a_44 = invert_pose_44(room.world_T_cam_n44[3]) @ room.world_T_cam_n44[0]
    true_uv_b_n2, _ = project_n2(transform_n3(b_T_a_44, points_a_n3), room.camera.K_33)
    flow_n = np.linalg.norm(true_uv_b_n2 - uv_a_n2, axis=1)
    error_n = np.linalg.norm(uv_b_n2 - true_uv_b_n2, axis=1)[ok_n]

    assert np.median(flow_n) > 50.0
    # Measured: 219 of 300 corners tracked, 95 % of them within 1 px of the true flow.
    assert ok_n.sum() >= 0.6 * len(uv_a_n2)
    assert np.mean(error_n < 1.0) >= 0.9
