"""`python -m mvs.view` and the CPU renderer: screenshots checked against closed forms, and errors."""

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import open3d as o3d
import pytest

from mvs.geometry import invert_pose_44, look_at_world_T_cam_44, project_n2, transform_n3
from mvs.render import (
    AMBIENT,
    FRUSTUM_RGB,
    NEAR,
    View,
    clip_segments,
    cull_back_faces,
    overview_view,
    render_image_hw3,
)
from mvs.run import main as run_main
from mvs.types import Camera
from mvs.view import Scene, load_scene, main, scene_frustums, screenshot, screenshot_view

BOX_RGB = np.array([0.8, 0.3, 0.1])
WIDTH, HEIGHT = 320, 240
CAMERA = Camera(np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]]), WIDTH, HEIGHT)
HEAD_ON = View(CAMERA, np.eye(4))  # the camera at the origin, looking along +z


@pytest.fixture(autouse=True)
def no_vulkan_driver(monkeypatch):
    """Rendering needs no graphics driver: point the Vulkan loader at none, here and in child processes."""
    monkeypatch.setenv("VK_ICD_FILENAMES", "/nonexistent")
    monkeypatch.setenv("VK_DRIVER_FILES", "/nonexistent")


def box_mesh(centre_3: np.ndarray, size: float) -> o3d.geometry.TriangleMesh:
    """A uniformly coloured cube of edge `size` metres centred at `centre_3`."""
    box = o3d.geometry.TriangleMesh.create_box(size, size, size)
    box.translate(centre_3 - size / 2)
    box.paint_uniform_color(BOX_RGB)
    box.compute_vertex_normals()
    return box


def mesh_of(vertices_n3, triangles_m3, colours_n3=None) -> o3d.geometry.TriangleMesh:
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(vertices_n3, float)),
                                     o3d.utility.Vector3iVector(np.asarray(triangles_m3)))
    if colours_n3 is not None:
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.asarray(colours_n3, float))
    return mesh


def headlight_shade_hw() -> np.ndarray:
    """(H, W) Lambert factor of a surface facing the head-on camera: cos = 1 / |ray| for rays of unit z."""
    v_hw, u_hw = np.mgrid[0:HEIGHT, 0:WIDTH]
    cos_hw = 1 / np.sqrt(((u_hw - CAMERA.cx) / CAMERA.fx) ** 2 + ((v_hw - CAMERA.cy) / CAMERA.fy) ** 2 + 1)
    return AMBIENT + (1 - AMBIENT) * cos_hw


def background_hw(image_hw3: np.ndarray) -> np.ndarray:
    return np.all(image_hw3 == 255, axis=2)


def test_look_at_points_the_camera_at_the_target_with_up_up():
    world_T_cam_44 = look_at_world_T_cam_44(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 8.0]),
                                            np.array([0.0, -1.0, 0.0]))
    np.testing.assert_allclose(world_T_cam_44[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(world_T_cam_44[:3, 3], [1, 2, 3])


def test_overview_frames_the_points_and_looks_down_on_them():
    rng = np.random.default_rng(0)
    points_n3 = rng.uniform([-2, -1.2, -1.5], [2, 1.2, 1.5], size=(5000, 3))
    # Cameras upright in a y-down world, looking along +z: up is -y, the view looks along +z.
    world_T_cam_n44 = np.stack([np.eye(4)] * 3)
    view = overview_view(points_n3, world_T_cam_n44, 400, 300, elevation_deg=55.0)
    eye_3 = view.world_T_cam_44[:3, 3]
    centre_3 = np.percentile(points_n3, [1, 99], axis=0).mean(axis=0)
    direction_3 = (eye_3 - centre_3) / np.linalg.norm(eye_3 - centre_3)
    np.testing.assert_allclose(direction_3, [0, -np.sin(np.radians(55)), -np.cos(np.radians(55))], atol=1e-9)
    uv_n2, z_n = project_n2(transform_n3(invert_pose_44(view.world_T_cam_44), points_n3), view.camera.K_33)
    inside_n = (z_n > 0) & np.all((uv_n2 >= -0.5) & (uv_n2 <= [399.5, 299.5]), axis=1)
    assert 0.99 <= inside_n.mean()
    # Framed tightly: the points reach at least 85% of the way to the nearer image border.
    assert np.max(np.abs(uv_n2[inside_n] - [199.5, 149.5]) / [199.5, 149.5]) > 0.85


def test_back_faces_are_culled_for_an_outside_eye():
    box = box_mesh(np.zeros(3), 1.0)
    culled = cull_back_faces(box, np.array([0.0, 0.0, -10.0]))
    # Only the face at z = -0.5 (two triangles) faces an eye straight in front of it.
    assert len(culled.triangles) == 2
    np.testing.assert_allclose(np.asarray(culled.vertices)[:, 2], -0.5)


@pytest.fixture
def box_screenshot(tmp_path):
    """A screenshot of a box in an output folder by the command, in a child process with no
    Vulkan driver listed, and the view it was rendered from."""
    out = tmp_path
    centre_3 = np.array([0.4, -0.2, 3.0])
    o3d.io.write_triangle_mesh(str(out / "mesh.ply"), box_mesh(centre_3, 0.6))
    command = [sys.executable, "-m", "mvs.view", str(out), "--screenshot", str(out / "shot.png"),
               "--size", f"{WIDTH}x{HEIGHT}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(out / "shot.png") in result.stdout
    image_hw3 = cv2.cvtColor(cv2.imread(str(out / "shot.png")), cv2.COLOR_BGR2RGB)
    return image_hw3, screenshot_view(load_scene(out), WIDTH, HEIGHT), centre_3


def test_screenshot_shows_the_box_where_the_camera_projects_it(box_screenshot):
    image_hw3, view, centre_3 = box_screenshot
    assert image_hw3.shape == (HEIGHT, WIDTH, 3)
    object_hw = ~background_hw(image_hw3)
    assert object_hw.mean() > 0.05, "blank image"
    # Expected silhouette: the convex hull of the projected corners of the box.
    corners_83 = centre_3 + 0.3 * np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    uv_82, _ = project_n2(transform_n3(invert_pose_44(view.world_T_cam_44), corners_83), view.camera.K_33)
    expected_hw = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.fillConvexPoly(expected_hw, cv2.convexHull(np.rint(uv_82 * 16).astype(np.int32)), 1, shift=4)
    expected_hw = expected_hw.astype(bool)
    ys, xs = np.nonzero(object_hw)
    centre_uv, _ = project_n2(transform_n3(invert_pose_44(view.world_T_cam_44), centre_3[None]), view.camera.K_33)
    expected_ys, expected_xs = np.nonzero(expected_hw)
    # Centroid of the silhouette within 1 pixel of the projection's; area within 3%.
    assert np.hypot(xs.mean() - expected_xs.mean(), ys.mean() - expected_ys.mean()) < 1.0
    assert abs(object_hw.sum() / expected_hw.sum() - 1) < 0.03
    assert (object_hw & expected_hw).sum() / (object_hw | expected_hw).sum() > 0.95
    assert object_hw[int(round(centre_uv[0, 1])), int(round(centre_uv[0, 0]))]
    # Every pixel of the box shows its colour between the ambient and the full headlight share.
    shown_k3 = image_hw3[object_hw & expected_hw].astype(float)
    assert np.all(shown_k3 >= np.floor(BOX_RGB * 255 * AMBIENT) - 1)
    assert np.all(shown_k3 <= np.ceil(BOX_RGB * 255) + 1)


def test_a_face_on_plane_covers_its_projection_with_the_lambert_shade():
    # A square 0.45 m wide at 2 m, off the optical axis by a fraction of a pixel so that
    # no pixel centre lies on its edges or its diagonal.
    left, top, half, depth = 0.0113, -0.0207, 0.225, 2.0
    corners_43 = [[left - half, top - half, depth], [left + half, top - half, depth],
                  [left + half, top + half, depth], [left - half, top + half, depth]]
    rgb_3 = np.array([0.2, 0.6, 0.9])
    image_hw3 = render_image_hw3([mesh_of(corners_43, [[0, 1, 2], [0, 2, 3]], [rgb_3] * 4)], HEAD_ON)
    v_hw, u_hw = np.mgrid[0:HEIGHT, 0:WIDTH]
    x_hw, y_hw = (u_hw - CAMERA.cx) / CAMERA.fx * depth, (v_hw - CAMERA.cy) / CAMERA.fy * depth
    expected_hw = (np.abs(x_hw - left) < half) & (np.abs(y_hw - top) < half)
    # 0.45 m at 2 m through a 300 px focal length: 67.5 px wide, 67 or 68 pixel centres a side.
    assert expected_hw.sum() in (67 * 67, 67 * 68, 68 * 68)
    np.testing.assert_array_equal(~background_hw(image_hw3), expected_hw)
    expected_k3 = np.rint(255 * rgb_3 * headlight_shade_hw()[expected_hw][:, None])
    np.testing.assert_allclose(image_hw3[expected_hw], expected_k3, atol=1)


def test_a_tilted_plane_is_shaded_by_the_cosine_to_the_headlight():
    # A plane through (0, 0, 3) m turned 45 degrees about the camera's y axis fills the image.
    normal_3 = np.array([np.sin(np.pi / 4), 0.0, -np.cos(np.pi / 4)])
    along_3 = np.array([np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4)])
    corners_43 = np.array([3.0 * np.array([0, 0, 1]) + 20 * (a * along_3 + b * np.array([0, 1, 0]))
                           for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    rgb_3 = np.array([0.9, 0.8, 0.5])
    image_hw3 = render_image_hw3([mesh_of(corners_43, [[0, 1, 2], [0, 2, 3]], [rgb_3] * 4)], HEAD_ON)
    v_hw, u_hw = np.mgrid[0:HEIGHT, 0:WIDTH]
    rays_hw3 = np.stack([(u_hw - CAMERA.cx) / CAMERA.fx, (v_hw - CAMERA.cy) / CAMERA.fy, np.ones(u_hw.shape)], -1)
    cos_hw = np.abs(rays_hw3 @ normal_3) / np.linalg.norm(rays_hw3, axis=-1)
    assert 0.25 < cos_hw.min() and cos_hw.max() < 0.97  # from grazing to nearly face-on
    expected_hw3 = np.rint(255 * rgb_3 * (AMBIENT + (1 - AMBIENT) * cos_hw)[..., None])
    np.testing.assert_allclose(image_hw3, expected_hw3, atol=1)


def test_a_unit_sphere_covers_the_disc_of_its_silhouette_cone():
    distance = 4.0
    sphere = o3d.geometry.TriangleMesh.create_sphere(1.0, resolution=100)
    sphere.translate([0.0, 0.0, distance])
    image_hw3 = render_image_hw3([sphere], HEAD_ON)
    covered_hw = ~background_hw(image_hw3)
    # The tangent rays make an angle asin(r / distance) with the axis: a disc of radius f tan(angle).
    radius = CAMERA.fx * np.tan(np.arcsin(1.0 / distance))
    assert abs(covered_hw.sum() / (np.pi * radius**2) - 1) < 0.01
    ys, xs = np.nonzero(covered_hw)
    assert np.hypot(xs.mean() - CAMERA.cx, ys.mean() - CAMERA.cy) < 0.1
    # Uncoloured grey, lit head-on at the centre: round(255 * 0.7).
    np.testing.assert_allclose(image_hw3[int(CAMERA.cy), int(CAMERA.cx)], 178, atol=1)


def test_vertex_colours_are_interpolated_barycentrically():
    corners_33 = np.array([[-0.5, -0.4, 1.5], [0.6, -0.3, 1.5], [0.0, 0.5, 1.5]])
    colours_33 = np.eye(3)  # red, green, blue corners
    image_hw3 = render_image_hw3([mesh_of(corners_33, [[0, 1, 2]], colours_33)], HEAD_ON)
    hit_hw = ~background_hw(image_hw3)
    v_k, u_k = np.nonzero(hit_hw)
    point_k2 = np.stack([(u_k - CAMERA.cx) / CAMERA.fx, (v_k - CAMERA.cy) / CAMERA.fy], axis=1) * 1.5
    # Barycentric coordinates (w0, w1, w2) of each hit in the triangle's plane.
    edges_22 = (corners_33[1:, :2] - corners_33[0, :2]).T
    w12_k2 = np.linalg.solve(edges_22, (point_k2 - corners_33[0, :2]).T).T
    weights_k3 = np.concatenate([1 - w12_k2.sum(axis=1, keepdims=True), w12_k2], axis=1)
    assert weights_k3.min() > -0.01 and hit_hw.sum() > 5000
    expected_k3 = np.rint(255 * (weights_k3 @ colours_33) * headlight_shade_hw()[hit_hw][:, None])
    np.testing.assert_allclose(image_hw3[hit_hw], expected_k3, atol=1)


def test_point_splats_are_squares_and_the_nearest_point_wins():
    # Points projecting to (100.3, 50.7): 2x2 pixels whose centres lie within 1 px, u 100-101, v 50-51.
    at_2m_3 = np.array([(100.3 - CAMERA.cx) / CAMERA.fx, (50.7 - CAMERA.cy) / CAMERA.fy, 1.0]) * 2.0
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.stack([at_2m_3, at_2m_3 * 1.5, at_2m_3 * 0.5])))
    cloud.colors = o3d.utility.Vector3dVector(np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]))
    image_hw3 = render_image_hw3([cloud], HEAD_ON)
    expected_hw3 = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    expected_hw3[50:52, 100:102] = [0, 0, 255]  # the nearest point, blue
    np.testing.assert_array_equal(image_hw3, expected_hw3)


def test_lines_are_clipped_at_the_near_plane_and_drawn_over_surfaces():
    wall = mesh_of([[-5, -5, 2.0], [5, -5, 2.0], [5, 5, 2.0], [-5, 5, 2.0]], [[0, 1, 2], [0, 2, 3]])
    # From 0.5 m right at 5 m depth (behind the wall) to 1 m behind the camera: seen from the
    # camera, a ray from u = cx + f / 10 out to the right border along the row v = cy.
    line = o3d.geometry.LineSet(o3d.utility.Vector3dVector([[0.5, 0.0, 5.0], [0.5, 0.0, -1.0]]),
                                o3d.utility.Vector2iVector([[0, 1]]))
    camera = Camera(np.array([[300.0, 0, 160.0], [0, 300.0, 120.0], [0, 0, 1]]), WIDTH, HEIGHT)
    image_hw3 = render_image_hw3([wall, line], View(camera, np.eye(4))).astype(int)
    drawn_hw = np.all(np.abs(image_hw3 - np.rint(np.array(FRUSTUM_RGB) * 255)) <= 2, axis=2)
    assert drawn_hw[120, 194:WIDTH].all()
    assert not drawn_hw[:, :186].any() and not drawn_hw[:110].any() and not drawn_hw[131:].any()


def test_segments_are_cut_where_they_leave_the_view():
    start_l3 = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, -1.0], [-10.0, 0.0, 1.0]])
    end_l3 = np.array([[0.0, 0.0, -2.0], [0.0, 1.0, -3.0], [0.0, 0.0, 1.0]])
    cut_start_l3, cut_end_l3, kept_l = clip_segments(start_l3, end_l3, CAMERA)
    np.testing.assert_array_equal(kept_l, [True, False, True])
    np.testing.assert_allclose(cut_start_l3[0], [0, 0, 2])
    np.testing.assert_allclose(cut_end_l3[0], [0, 0, NEAR])
    # The third enters the image 2 pixels left of its border: u = -2.
    u = CAMERA.fx * cut_start_l3[2, 0] / cut_start_l3[2, 2] + CAMERA.cx
    assert abs(u + 2) < 1e-9
    np.testing.assert_allclose(cut_end_l3[2], [0, 0, 1])


def test_rendering_is_deterministic(tmp_path):
    rng = np.random.default_rng(3)
    sphere = o3d.geometry.TriangleMesh.create_sphere(0.8, resolution=60)
    sphere.vertex_colors = o3d.utility.Vector3dVector(rng.uniform(0, 1, (len(sphere.vertices), 3)))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(rng.uniform(-1, 1, (3000, 3))))
    poses_n44 = np.stack([look_at_world_T_cam_44(np.array([3 * np.cos(a), -0.5, 3 * np.sin(a)]), np.zeros(3),
                                                 np.array([0.0, -1.0, 0.0])) for a in np.linspace(0, 3, 8)])
    scene = Scene(tmp_path, sphere, poses_n44, CAMERA)
    first = screenshot(scene, tmp_path / "first.png", WIDTH, HEIGHT)
    second = screenshot(scene, tmp_path / "second.png", WIDTH, HEIGHT)
    assert first.read_bytes() == second.read_bytes()
    image_hw3 = cv2.imread(str(first))
    assert 0.05 < (~background_hw(image_hw3)).mean() < 0.9
    view = overview_view(np.asarray(cloud.points), None, WIDTH, HEIGHT)
    np.testing.assert_array_equal(render_image_hw3([sphere, cloud], view), render_image_hw3([sphere, cloud], view))


def test_run_folder_frustums_are_drawn_at_the_cameras(tmp_path, capsys):
    o3d.io.write_triangle_mesh(str(tmp_path / "mesh.ply"), box_mesh(np.array([0.0, 0.0, 3.0]), 1.0))
    # Two cameras 1 m apart at the origin looking at the box; frustum lines are red.
    (tmp_path / "trajectory.txt").write_text("0 -0.5 0 0 0 0 0 1\n1 0.5 0 0 0 0 0 1\n")
    K_33 = [[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]]
    (tmp_path / "report.json").write_text(json.dumps({"camera": {"K_33": K_33, "width": 160, "height": 120}}))
    assert main([str(tmp_path), "--screenshot", str(tmp_path / "shot.png"), "--size", f"{WIDTH}x{HEIGHT}"]) == 0
    assert str(tmp_path / "shot.png") in capsys.readouterr().out
    image_hw3 = cv2.cvtColor(cv2.imread(str(tmp_path / "shot.png")), cv2.COLOR_BGR2RGB).astype(int)
    red_hw = np.all(np.abs(image_hw3 - np.rint(np.array(FRUSTUM_RGB) * 255)) <= 2, axis=2)
    view = screenshot_view(load_scene(tmp_path), WIDTH, HEIGHT)
    frustums = scene_frustums(load_scene(tmp_path))
    points_n3 = np.asarray(frustums[0].points)
    uv_n2, _ = project_n2(transform_n3(invert_pose_44(view.world_T_cam_44), points_n3), view.camera.K_33)
    # Apexes and image corners of both frustums, and the midpoints of every line, are drawn.
    lines_l2 = np.asarray(frustums[0].lines)
    for u, v in np.rint(np.concatenate([uv_n2, (uv_n2[lines_l2[:, 0]] + uv_n2[lines_l2[:, 1]]) / 2])).astype(int):
        assert red_hw[v - 1:v + 2, u - 1:u + 2].any(), f"no frustum line at ({u}, {v})"
    assert red_hw.sum() < 0.1 * red_hw.size


@pytest.mark.slow
def test_two_million_triangles_render_at_960x720_in_seconds(tmp_path):
    sphere = o3d.geometry.TriangleMesh.create_sphere(1.0, resolution=707)
    sphere.vertex_colors = o3d.utility.Vector3dVector(np.random.default_rng(0).uniform(0, 1, (len(sphere.vertices), 3)))
    assert len(sphere.triangles) > 1_990_000
    poses_n44 = np.stack([look_at_world_T_cam_44(np.array([3 * np.cos(a), -0.5, 3 * np.sin(a)]), np.zeros(3),
                                                 np.array([0.0, -1.0, 0.0])) for a in np.linspace(0, 3, 100)])
    start = time.perf_counter()
    screenshot(Scene(tmp_path, sphere, poses_n44, CAMERA), tmp_path / "shot.png", 960, 720)
    assert time.perf_counter() - start < 10.0
    assert (~background_hw(cv2.imread(str(tmp_path / "shot.png")))).mean() > 0.05


def test_bad_paths_name_the_file(tmp_path, capsys):
    assert main([str(tmp_path), "--screenshot", str(tmp_path / "x.png")]) == 2
    assert "no mesh.ply or cloud.ply" in capsys.readouterr().err
    (tmp_path / "broken.ply").write_text("not a ply")
    assert main([str(tmp_path / "broken.ply"), "--screenshot", str(tmp_path / "x.png")]) == 2
    assert "broken.ply" in capsys.readouterr().err
    (tmp_path / "mesh.txt").write_text("")
    assert main([str(tmp_path / "mesh.txt")]) == 2
    assert "expected a .ply" in capsys.readouterr().err


def test_window_without_display_says_how_to_screenshot(tmp_path, monkeypatch, capsys):
    o3d.io.write_triangle_mesh(str(tmp_path / "mesh.ply"), box_mesh(np.zeros(3), 1.0))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main([str(tmp_path)]) == 2
    assert "--screenshot" in capsys.readouterr().err


def test_run_with_view_and_no_display_finishes_and_says_so(small_room, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "out"
    assert run_main(["--sequence", str(small_room), "--out", str(out), "--frames", "0:10", "--voxel-size", "0.05",
                     "--device", "cpu", "--no-render", "--view"]) == 0
    captured = capsys.readouterr()
    assert "not opening the viewer" in captured.err and f"mvs.view {out} --screenshot" in captured.err
    assert str(out / "report.html") in captured.out
