"""Synthetic rooms: determinism, file layout, depth on the true surface, photo-consistency,
and the hard cases for tracking: fast motion, motion blur, a blank-wall stretch."""

from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest

from mvs.geometry import backproject_depth_hw3, invert_pose_44, project_n2, rotation_angle, transform_n3
from mvs.synth import RoomSpec, build_room, ensure_room, generate_room, main, room_name, room_spec
from mvs.synth_paths import HOLD_DISTANCE_M
from mvs.synth_render import RoomRenderer


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    return generate_room(RoomSpec(seed=3, num_frames=8, width=160, height=120),
                         tmp_path_factory.mktemp("synth") / "room3", progress=False)


def read_frame(root: Path, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image_hw3 = cv2.imread(str(root / "color" / f"{i}.jpg"))[:, :, ::-1]
    depth_hw = cv2.imread(str(root / "depth" / f"{i}.png"), cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000.0
    return image_hw3, depth_hw, np.loadtxt(root / "pose" / f"{i}.txt")


def test_layout_and_types(room):
    K_44 = np.loadtxt(room / "intrinsic" / "intrinsic_color.txt")
    np.testing.assert_allclose(K_44, np.loadtxt(room / "intrinsic" / "intrinsic_depth.txt"))
    assert K_44[0, 0] == pytest.approx(525 * 160 / 640)
    depth_raw = cv2.imread(str(room / "depth" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert depth_raw.dtype == np.uint16 and depth_raw.shape == (120, 160)
    assert cv2.imread(str(room / "color" / "7.jpg")).shape == (120, 160, 3)
    assert (depth_raw > 0).mean() > 0.99
    assert not (room.parent / "room3.partial").exists()


def test_deterministic_per_seed(room, tmp_path):
    again = generate_room(RoomSpec(seed=3, num_frames=8, width=160, height=120), tmp_path / "again", progress=False)
    other = generate_room(RoomSpec(seed=4, num_frames=8, width=160, height=120), tmp_path / "other", progress=False)
    for name in ("depth/5.png", "pose/5.txt"):
        assert (room / name).read_bytes() == (again / name).read_bytes()
        assert (room / name).read_bytes() != (other / name).read_bytes()


def test_depth_lies_on_the_ground_truth_mesh(room):
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(o3d.io.read_triangle_mesh(str(room / "mesh.ply"))))
    K_33 = np.loadtxt(room / "intrinsic" / "intrinsic_color.txt")[:3, :3]
    _, depth_hw, world_T_cam_44 = read_frame(room, 4)
    points_n3 = transform_n3(world_T_cam_44, backproject_depth_hw3(depth_hw, K_33)[depth_hw > 0])
    distance_n = scene.compute_distance(o3d.core.Tensor(points_n3.astype(np.float32))).numpy()
    # Millimetre quantisation of depth, at up to ~6 m along oblique rays.
    assert np.percentile(distance_n, 99) < 0.01


def test_views_are_photo_consistent(room):
    K_33 = np.loadtxt(room / "intrinsic" / "intrinsic_color.txt")[:3, :3]
    image_a, depth_a, world_T_a = read_frame(room, 0)
    image_b, depth_b, world_T_b = read_frame(room, 1)
    valid_hw = depth_a > 0
    points_b_n3 = transform_n3(invert_pose_44(world_T_b) @ world_T_a, backproject_depth_hw3(depth_a, K_33)[valid_hw])
    uv_n2, z_n = project_n2(points_b_n3, K_33)
    u_n, v_n = np.rint(uv_n2[:, 0]).astype(int), np.rint(uv_n2[:, 1]).astype(int)
    inside_n = (u_n >= 0) & (u_n < 160) & (v_n >= 0) & (v_n < 120)
    u_n, v_n, z_n = u_n[inside_n], v_n[inside_n], z_n[inside_n]
    visible_n = np.abs(depth_b[v_n, u_n] - z_n) < 0.01
    colour_a_n3 = image_a[valid_hw][inside_n][visible_n].astype(float)
    colour_b_n3 = image_b[v_n[visible_n], u_n[visible_n]].astype(float)
    assert visible_n.sum() > 1000  # 8 frames span the whole loop: consecutive views overlap partly
    assert np.median(np.abs(colour_a_n3 - colour_b_n3)) < 8


def test_textureless_walls_are_flat(tmp_path):
    flat = generate_room(RoomSpec(seed=3, num_frames=2, width=160, height=120, textureless_walls=True),
                         tmp_path / "flat", progress=False)
    grey_hw = cv2.cvtColor(cv2.imread(str(flat / "color" / "0.jpg")), cv2.COLOR_BGR2GRAY).astype(float)
    gradient_hw = np.hypot(*np.gradient(cv2.GaussianBlur(grey_hw, (5, 5), 0)))
    # Most of the view is wall, floor or ceiling, whose only variation is smooth shading.
    assert np.median(gradient_hw) < 1.0


def test_ensure_room_reuses_a_generated_room(tmp_path):
    path = generate_room(RoomSpec(seed=2, num_frames=2, width=160, height=120), tmp_path / "synthetic" / "room2",
                         progress=False)
    stamp = (path / "pose" / "0.txt").stat().st_mtime_ns
    assert ensure_room("synthetic/room2", tmp_path) == path
    assert (path / "pose" / "0.txt").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="synthetic/kitchen"):
        ensure_room("synthetic/kitchen", tmp_path)


def test_room_names_carry_the_hard_case_options():
    for spec in (RoomSpec(0), RoomSpec(3, textureless_walls=True), RoomSpec(7, speed=4), RoomSpec(1, exposure=0.5),
                 RoomSpec(2, speed=2.5, exposure=1.0, blank_wall=True)):
        assert room_spec(room_name(spec)) == spec
    assert room_name(RoomSpec(2, speed=2.5, exposure=1.0, blank_wall=True)) == "synthetic/room2_fast2.5_blur1_blankwall"
    with pytest.raises(ValueError, match="synthetic/room0_blankwall_fast4: expected a synthetic room name"):
        room_spec("synthetic/room0_blankwall_fast4")


def steps_n(world_T_cam_n44: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (metres) and rotation angle (radians) between consecutive poses."""
    distance_n = np.linalg.norm(np.diff(world_T_cam_n44[:, :3, 3], axis=0), axis=1)
    angle_n = np.array([rotation_angle(a_44[:3, :3].T @ b_44[:3, :3])
                        for a_44, b_44 in zip(world_T_cam_n44[:-1], world_T_cam_n44[1:])])
    return distance_n, angle_n


def test_fast_motion_samples_the_same_path_k_times_farther_per_frame():
    slow = build_room(RoomSpec(seed=3, num_frames=120, width=160, height=120))
    fast = build_room(RoomSpec(seed=3, num_frames=120, width=160, height=120, speed=4))
    np.testing.assert_array_equal(fast.vertices_v3, slow.vertices_v3)
    # Frame i of the fast room is frame 4 i of the slow one, four loops in all.
    for lap in range(4):
        np.testing.assert_allclose(fast.world_T_cam_n44[30 * lap : 30 * (lap + 1)], slow.world_T_cam_n44[::4], atol=1e-9)
    slow_distance_n, slow_angle_n = steps_n(slow.world_T_cam_n44)
    fast_distance_n, fast_angle_n = steps_n(fast.world_T_cam_n44)
    # A chord over 4 steps of a smooth path is a little shorter than the 4 steps.
    assert 3.8 < fast_distance_n.mean() / slow_distance_n.mean() <= 4.0
    assert 3.8 < fast_angle_n.mean() / slow_angle_n.mean() <= 4.0


def test_motion_blur_matches_renders_averaged_over_the_exposure():
    room = build_room(RoomSpec(seed=3, num_frames=60, width=160, height=120, exposure=0.5))
    renderer = RoomRenderer(room)
    for position in (20, 41):
        blurred_hw3, depth_hw = renderer.render_frame(position)
        sharp_hw3, sharp_depth_hw = renderer.render(room.world_T_cam_n44[position])
        np.testing.assert_array_equal(depth_hw, sharp_depth_hw)  # depth and pose: the middle of the exposure
        offsets_m = ((np.arange(24) + 0.5) / 24 - 0.5) * room.exposure_time
        poses_m44 = room.trajectory.world_T_cam_n44(room.frame_times_n[position] + offsets_m)
        averaged_hw3 = np.mean([renderer.render(world_T_cam_44)[0].astype(float) for world_T_cam_44 in poses_m44], axis=0)
        blur_error_hw3 = np.abs(blurred_hw3 - averaged_hw3)
        sharp_error_hw3 = np.abs(sharp_hw3 - averaged_hw3)
        # 6 degrees per frame, half of it in the exposure: streaks of ~7 pixels.
        assert sharp_error_hw3.mean() > 4.0
        assert blur_error_hw3.mean() < 1.0 and np.percentile(blur_error_hw3, 95) < 4.0


@pytest.fixture(scope="module")
def blank_wall_room():
    room = build_room(RoomSpec(seed=3, num_frames=300, width=160, height=120, blank_wall=True))
    return room, RoomRenderer(room)


def grey_hw(image_hw3: np.ndarray) -> np.ndarray:
    """The image as the tracker sees it: JPEG-compressed like the written frames, then grey."""
    _, encoded = cv2.imencode(".jpg", image_hw3[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)


def corner_count(gray_hw: np.ndarray) -> int:
    corners = cv2.goodFeaturesToTrack(gray_hw, maxCorners=300, qualityLevel=0.005, minDistance=8)
    return 0 if corners is None else len(corners)


def test_blank_wall_frames_show_one_flat_colour_at_the_panel_distance(blank_wall_room):
    room, renderer = blank_wall_room
    facing_f = room.frames_facing_blank_wall()
    assert len(facing_f) >= 15 and np.all(np.diff(facing_f) == 1)  # one contiguous stretch
    assert 0.3 * len(room.frame_times_n) < facing_f[0] < 0.6 * len(room.frame_times_n)
    for position in (facing_f[0], facing_f[len(facing_f) // 2], facing_f[-1]):
        image_hw3, depth_hw = renderer.render_frame(position)
        assert grey_hw(image_hw3).std() < 1.0 and corner_count(grey_hw(image_hw3)) == 0
        # Facing the panel squarely: every pixel sees it at the hold distance.
        np.testing.assert_allclose(depth_hw, HOLD_DISTANCE_M, atol=1e-4)
    # The check can fail: frames on the loop are textured.
    assert corner_count(grey_hw(renderer.render_frame(facing_f[0] - 30)[0])) > 50


def test_after_the_blank_wall_the_camera_returns_to_places_seen_before(blank_wall_room):
    room, renderer = blank_wall_room
    trajectory = room.trajectory
    approach_start, _, _, loop_again = trajectory.phase_starts_4()
    time_n = np.mod(room.frame_times_n, trajectory.period)
    after = int(np.flatnonzero(time_n >= loop_again)[0])
    before_b = np.flatnonzero(time_n < approach_start)
    # On the loop again at loop parameter s, which the camera passed before it left.
    s_after = time_n[after] - loop_again + trajectory.detour.return_s
    assert s_after < trajectory.detour.leave_s
    nearest = int(before_b[np.argmin(np.abs(time_n[before_b] - s_after))])
    assert after - nearest > 50
    distance = np.linalg.norm(room.world_T_cam_n44[after, :3, 3] - room.world_T_cam_n44[nearest, :3, 3])
    angle = rotation_angle(room.world_T_cam_n44[after, :3, :3].T @ room.world_T_cam_n44[nearest, :3, :3])
    assert distance < 0.02 and np.degrees(angle) < 1.0
    # Closed-form overlap: the points the frame after sees project into the frame before, in
    # front of the surface that frame sees there.
    K_33 = room.camera.K_33
    _, depth_after_hw = renderer.render_frame(after)
    _, depth_before_hw = renderer.render_frame(nearest)
    before_T_after_44 = invert_pose_44(room.world_T_cam_n44[nearest]) @ room.world_T_cam_n44[after]
    points_n3 = transform_n3(before_T_after_44, backproject_depth_hw3(depth_after_hw, K_33)[depth_after_hw > 0])
    uv_n2, z_n = project_n2(points_n3, K_33)
    u_n, v_n = np.rint(uv_n2[:, 0]).astype(int), np.rint(uv_n2[:, 1]).astype(int)
    inside_n = (u_n >= 0) & (u_n < 160) & (v_n >= 0) & (v_n < 120) & (z_n > 0)
    seen_n = np.zeros(len(z_n), dtype=bool)
    seen_n[inside_n] = np.abs(depth_before_hw[v_n[inside_n], u_n[inside_n]] - z_n[inside_n]) < 0.02 * z_n[inside_n]
    assert seen_n.mean() > 0.9


def test_command_line_options_reach_the_written_frames(tmp_path, capsys):
    main(["--seed", "3", "--frames", "6", "--width", "32", "--height", "24", "--speed", "2", "--exposure", "0.5",
          "--blank-wall", "--out", str(tmp_path / "room")])
    room = build_room(RoomSpec(3, 6, 32, 24, speed=2, exposure=0.5, blank_wall=True))
    for position in range(6):
        np.testing.assert_allclose(np.loadtxt(tmp_path / "room" / "pose" / f"{position}.txt"),
                                   room.world_T_cam_n44[position], atol=1e-8)
    assert f"wrote 6 frames of 32x24 (color, depth, pose, intrinsic) and mesh.ply to {tmp_path / 'room'}" in (
        capsys.readouterr().out
    )


@pytest.fixture(scope="module")
def varied_room():
    room = build_room(RoomSpec(seed=1001, num_frames=80, width=160, height=120, variety=True))
    return room, RoomRenderer(room)


def test_varied_room_keeps_the_default_rooms_as_they_were():
    plain, varied = build_room(RoomSpec(seed=3)), build_room(RoomSpec(seed=3, variety=True))
    # The same seed's default room draws nothing from the variety's own random stream.
    again = build_room(RoomSpec(seed=3))
    np.testing.assert_array_equal(plain.vertices_v3, again.vertices_v3)
    np.testing.assert_array_equal(plain.world_T_cam_n44, again.world_T_cam_n44)
    assert not plain.shadows and varied.shadows
    assert all(material.specular == 0 for material in plain.materials)
    assert not np.array_equal(plain.size_3, varied.size_3)
    with pytest.raises(ValueError, match="own camera tour"):
        build_room(RoomSpec(seed=3, variety=True, blank_wall=True))


def test_varied_room_tour_keeps_clear_and_looks_near_and_far(varied_room):
    room, renderer = varied_room
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(room.vertices_v3.astype(np.float32)),
                        o3d.core.Tensor(room.triangles_t3.astype(np.uint32)))
    eyes_n3 = room.world_T_cam_n44[:, :3, 3]
    distance_n = scene.compute_distance(o3d.core.Tensor(eyes_n3.astype(np.float32))).numpy()
    # Every camera centre stays CLEARANCE_M (0.3 m) from all geometry, up to the 1 cm tremor.
    assert distance_n.min() > 0.29
    assert np.all(np.abs(eyes_n3[:, :2]) < room.size_3[:2] / 2)
    assert np.all((eyes_n3[:, 2] > 0) & (eyes_n3[:, 2] < room.size_3[2]))
    medians_n = []
    for position in range(0, len(eyes_n3), 4):
        _, depth_hw = renderer.render_frame(position)
        assert (depth_hw > 0).all() and depth_hw.min() > 0.2
        medians_n.append(np.median(depth_hw))
    # Close-ups and views across the room on one tour.
    assert min(medians_n) < 1.0 and max(medians_n) > 2.5


def test_shadows_only_darken_and_highlights_only_brighten(varied_room):
    room, renderer = varied_room
    world_T_cam_44 = room.world_T_cam_n44[10]
    lit_hw3, _ = renderer.render(world_T_cam_44)
    room.shadows = False
    try:
        unshadowed_hw3, _ = renderer.render(world_T_cam_44)
    finally:
        room.shadows = True
    difference_hw3 = unshadowed_hw3.astype(int) - lit_hw3.astype(int)
    assert difference_hw3.min() >= 0 and (difference_hw3.max(axis=2) > 10).mean() > 0.01
    specular_m = renderer.specular_m.copy()
    assert specular_m.max() > 0
    renderer.specular_m[:] = 0
    try:
        matte_hw3, _ = renderer.render(world_T_cam_44)
    finally:
        renderer.specular_m[:] = specular_m
    assert (lit_hw3.astype(int) - matte_hw3.astype(int)).min() >= 0
