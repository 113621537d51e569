"""Synthetic rooms: layout, determinism, depth on the true surface, photo-consistency,
textureless walls, camera path, caching."""

from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pytest

from mvs.geometry import (
    backproject_depth_hw3,
    invert_pose_44,
    is_valid_pose_44,
    make_pose_44,
    project_n2,
    rotation_angle,
    transform_n3,
)
from mvs.synth import RoomSpec, build_room, ensure_room, generate_room

WIDTH, HEIGHT, FRAMES = 160, 120, 24


@pytest.fixture(scope="module")
def room(tmp_path_factory) -> Path:
    spec = RoomSpec(seed=3, num_frames=FRAMES, width=WIDTH, height=HEIGHT)
    return generate_room(spec, tmp_path_factory.mktemp("synth") / "room3", progress=False)


def read_frame(root: Path, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3), depth in metres (H, W), world_T_cam (4, 4) of frame `index`."""
    image_hw3 = cv2.imread(str(root / "color" / f"{index}.jpg"))[:, :, ::-1]
    depth_hw = cv2.imread(str(root / "depth" / f"{index}.png"), cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000.0
    return image_hw3, depth_hw, np.loadtxt(root / "pose" / f"{index}.txt")


def read_K_33(root: Path) -> np.ndarray:
    return np.loadtxt(root / "intrinsic" / "intrinsic_color.txt")[:3, :3]


def world_points_hw3(depth_hw: np.ndarray, K_33: np.ndarray, world_T_cam_44: np.ndarray) -> np.ndarray:
    return transform_n3(world_T_cam_44, backproject_depth_hw3(depth_hw, K_33).reshape(-1, 3)).reshape(
        *depth_hw.shape, 3
    )


def test_layout_files_shapes_and_intrinsics(room):
    K_44 = np.loadtxt(room / "intrinsic" / "intrinsic_color.txt")
    np.testing.assert_array_equal(K_44, np.loadtxt(room / "intrinsic" / "intrinsic_depth.txt"))
    expected_K_44 = np.eye(4)
    focal = 525 * WIDTH / 640
    expected_K_44[:3, :3] = [[focal, 0, (WIDTH - 1) / 2], [0, focal, (HEIGHT - 1) / 2], [0, 0, 1]]
    np.testing.assert_allclose(K_44, expected_K_44, atol=1e-9)
    for sub, suffix in (("color", "jpg"), ("depth", "png"), ("pose", "txt")):
        assert sorted(int(p.stem) for p in (room / sub).glob(f"*.{suffix}")) == list(range(FRAMES))
    depth_raw_hw = cv2.imread(str(room / "depth" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert depth_raw_hw.dtype == np.uint16 and depth_raw_hw.shape == (HEIGHT, WIDTH)
    assert cv2.imread(str(room / "color" / f"{FRAMES - 1}.jpg")).shape == (HEIGHT, WIDTH, 3)
    for index in range(FRAMES):
        image_hw3, depth_hw, world_T_cam_44 = read_frame(room, index)
        assert is_valid_pose_44(world_T_cam_44, tolerance=1e-6)
        # Closed walls: every ray hits, at a depth between 0.5 and 8 m.
        assert depth_hw.min() > 0.5 and depth_hw.max() < 8.0
        assert 40 < image_hw3.mean() < 220
    mesh = o3d.io.read_triangle_mesh(str(room / "mesh.ply"))
    assert mesh.has_vertex_colors() and len(mesh.triangles) > 1000
    assert not (room.parent / "room3.partial").exists()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    def spec(seed: int) -> RoomSpec:
        return RoomSpec(seed=seed, num_frames=3, width=WIDTH, height=HEIGHT)

    first = generate_room(spec(5), tmp_path / "first", progress=False)
    again = generate_room(spec(5), tmp_path / "again", progress=False)
    other = generate_room(spec(6), tmp_path / "other", progress=False)
    for name in ("color/2.jpg", "depth/2.png", "pose/2.txt", "mesh.ply"):
        assert (first / name).read_bytes() == (again / name).read_bytes()
        assert (first / name).read_bytes() != (other / name).read_bytes()


def test_refuses_to_overwrite_an_existing_folder(room):
    with pytest.raises(ValueError, match="already exists"):
        generate_room(RoomSpec(seed=3, num_frames=2, width=WIDTH, height=HEIGHT), room, progress=False)


def test_depth_lies_on_the_ground_truth_mesh(room):
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(o3d.io.read_triangle_mesh(str(room / "mesh.ply"))))
    K_33 = read_K_33(room)
    for index in (0, 7, 15):
        _, depth_hw, world_T_cam_44 = read_frame(room, index)
        points_n3 = world_points_hw3(depth_hw, K_33, world_T_cam_44).reshape(-1, 3)
        distance_n = scene.compute_distance(o3d.core.Tensor(points_n3.astype(np.float32))).numpy()
        # z-depth stored in whole millimetres: at most 0.5 mm off along z, slightly more along oblique rays.
        assert distance_n.max() < 0.002


def warp_error(root: Path, index_a: int, index_b: int, b_T_b_wrong_44: np.ndarray) -> tuple[int, float, float]:
    """Pixels compared, median and 90th percentile of |colour a - colour b warped to a| (grey levels).

    Frame b is sampled bilinearly where frame a's depth reprojects into it; pixels near
    depth edges of frame a and pixels occluded in frame b are left out.
    """
    K_33 = read_K_33(root)
    image_a_hw3, depth_a_hw, world_T_a_44 = read_frame(root, index_a)
    image_b_hw3, depth_b_hw, world_T_b_44 = read_frame(root, index_b)
    b_T_a_44 = invert_pose_44(world_T_b_44 @ b_T_b_wrong_44) @ world_T_a_44
    points_b_n3 = transform_n3(b_T_a_44, backproject_depth_hw3(depth_a_hw, K_33).reshape(-1, 3))
    uv_n2, z_n = project_n2(points_b_n3, K_33)
    map_hw2 = uv_n2.reshape(HEIGHT, WIDTH, 2).astype(np.float32)
    warped_hw3 = cv2.remap(image_b_hw3, map_hw2[..., 0], map_hw2[..., 1], cv2.INTER_LINEAR).astype(float)
    depth_seen_hw = cv2.remap(depth_b_hw.astype(np.float32), map_hw2[..., 0], map_hw2[..., 1], cv2.INTER_NEAREST)
    depth_edge_hw = np.abs(cv2.Laplacian(depth_a_hw.astype(np.float32), cv2.CV_32F)) > 0.02
    near_edge_hw = cv2.dilate(depth_edge_hw.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    inside_hw = (map_hw2[..., 0] >= 0) & (map_hw2[..., 0] <= WIDTH - 1)
    inside_hw &= (map_hw2[..., 1] >= 0) & (map_hw2[..., 1] <= HEIGHT - 1)
    visible_hw = inside_hw & ~near_edge_hw & (np.abs(depth_seen_hw - z_n.reshape(HEIGHT, WIDTH)) < 0.02)
    error_n = np.abs(warped_hw3 - image_a_hw3)[visible_hw]
    return int(visible_hw.sum()), float(np.median(error_n)), float(np.percentile(error_n, 90))


def test_views_are_photo_consistent(room):
    angle = np.radians(2.0)
    turn_44 = make_pose_44(
        np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]), np.zeros(3)
    )
    for index in (0, 10):
        count, median, p90 = warp_error(room, index, index + 1, np.eye(4))
        assert count > 0.3 * WIDTH * HEIGHT
        # JPEG and bilinear resampling only.
        assert median <= 3 and p90 <= 8
        # A pose 2 degrees off misaligns the texture: the test can tell.
        _, wrong_median, _ = warp_error(room, index, index + 1, turn_44)
        assert wrong_median > 2 * median + 3


def test_textureless_walls_have_no_texture(room, tmp_path):
    flat = generate_room(
        RoomSpec(seed=3, num_frames=FRAMES, width=WIDTH, height=HEIGHT, textureless_walls=True), tmp_path / "flat",
        progress=False,
    )
    mesh = o3d.io.read_triangle_mesh(str(flat / "mesh.ply"))
    low_3, high_3 = mesh.get_min_bound(), mesh.get_max_bound()
    K_33 = read_K_33(flat)
    for index in (0, 12):
        _, depth_hw, world_T_cam_44 = read_frame(flat, index)
        points_hw3 = world_points_hw3(depth_hw, K_33, world_T_cam_44)
        # Wall, floor and ceiling pixels lie on the room's bounding box; keep them away from edges.
        shell_hw = np.min(np.minimum(np.abs(points_hw3 - low_3), np.abs(points_hw3 - high_3)), axis=2) < 0.01
        shell_hw = cv2.erode(shell_hw.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert shell_hw.mean() > 0.3
        gradients = []
        for root in (flat, room):
            grey_hw = cv2.cvtColor(np.ascontiguousarray(read_frame(root, index)[0]), cv2.COLOR_RGB2GRAY).astype(float)
            gradients.append(np.percentile(np.hypot(*np.gradient(grey_hw))[shell_hw], 95))
        flat_p95, textured_p95 = gradients
        # Smooth shading plus JPEG noise only, against real texture in the default room.
        assert flat_p95 < 2.5 and textured_p95 > 2 * flat_p95


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_camera_path_is_smooth_and_clear_of_surfaces(seed):
    room = build_room(RoomSpec(seed=seed))
    world_T_cam_n44 = room.world_T_cam_n44
    eye_n3 = world_T_cam_n44[:, :3, 3]
    assert np.all(np.abs(eye_n3[:, :2]) < room.size_3[:2] / 2) and np.all((eye_n3[:, 2] > 1.2) & (eye_n3[:, 2] < 1.7))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(room.vertices_v3.astype(np.float32)),
                        o3d.core.Tensor(room.triangles_t3.astype(np.uint32)))
    assert scene.compute_distance(o3d.core.Tensor(eye_n3.astype(np.float32))).numpy().min() > 0.6
    step_cm_n = 100 * np.linalg.norm(np.diff(eye_n3, axis=0), axis=1)
    turn_deg_n = np.degrees(
        [rotation_angle(a_44[:3, :3].T @ b_44[:3, :3]) for a_44, b_44 in zip(world_T_cam_n44[:-1], world_T_cam_n44[1:])]
    )
    # A hand-held 30 fps video: about 1-2 cm and 0.5-1.5 degrees per frame, never a jump.
    assert 1.0 < step_cm_n.mean() < 2.0 and step_cm_n.max() < 4.0
    assert 0.5 < turn_deg_n.mean() < 1.5 and turn_deg_n.max() < 3.0
    # The view sweeps the whole room: the heading covers every direction.
    heading_n = np.arctan2(world_T_cam_n44[:, 1, 2], world_T_cam_n44[:, 0, 2])
    assert np.all(np.histogram(heading_n, bins=8, range=(-np.pi, np.pi))[0] > 0)


def test_ensure_room_reuses_a_generated_room(tmp_path, capsys):
    path = generate_room(RoomSpec(seed=2, num_frames=2, width=WIDTH, height=HEIGHT), tmp_path / "synthetic" / "room2",
                         progress=False)
    stamp_ns = (path / "pose" / "0.txt").stat().st_mtime_ns
    assert ensure_room("synthetic/room2", tmp_path) == path
    assert (path / "pose" / "0.txt").stat().st_mtime_ns == stamp_ns
    assert "generating" not in capsys.readouterr().out
    for name in ("synthetic/kitchen", "synthetic/room2_flat", "scannet/scene0000_00"):
        with pytest.raises(ValueError, match="synthetic/roomN"):
            ensure_room(name, tmp_path)


@pytest.mark.slow
def test_ensure_room_generates_the_default_room(tmp_path, capsys):
    path = ensure_room("synthetic/room0", tmp_path)
    assert f"into {path}" in capsys.readouterr().out
    assert len(list((path / "color").glob("*.jpg"))) == 300
    _, depth_hw, _ = read_frame(path, 150)
    assert depth_hw.shape == (480, 640) and (depth_hw > 0).mean() == 1.0 and 1.0 < np.median(depth_hw) < 5.0
