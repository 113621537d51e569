"""Synthetic rooms: determinism, file layout, depth on the true surface, photo-consistency."""

from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest

from mvs.geometry import backproject_depth_hw3, invert_pose_44, project_n2, transform_n3
from mvs.synth import RoomSpec, ensure_room, generate_room


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
