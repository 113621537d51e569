"""`python -m mvs.view`: headless screenshots checked against the camera projection, and errors."""

import json
import subprocess
import sys

import cv2
import numpy as np
import open3d as o3d
import pytest

from mvs.geometry import invert_pose_44, project_n2, transform_n3
from mvs.render import (
    RenderingUnavailable,
    check_headless_rendering,
    cull_back_faces,
    look_at_pose_44,
    overview_view,
)
from mvs.run import main as run_main
from mvs.view import SCREENSHOT_ATTEMPTS, SCREENSHOT_SECONDS, load_scene, main, run_until_finished, screenshot_view

BOX_RGB = np.array([0.8, 0.3, 0.1])
WIDTH, HEIGHT = 320, 240


def box_mesh(centre_3: np.ndarray, size: float) -> o3d.geometry.TriangleMesh:
    """A uniformly coloured cube of edge `size` metres centred at `centre_3`."""
    box = o3d.geometry.TriangleMesh.create_box(size, size, size)
    box.translate(centre_3 - size / 2)
    box.paint_uniform_color(BOX_RGB)
    box.compute_vertex_normals()
    return box


def render_cli(path, png, size=f"{WIDTH}x{HEIGHT}") -> subprocess.CompletedProcess:
    """The screenshot command in a child process (one renderer per process), run again in a
    new process when the software renderer does not finish, as `screenshot_in_subprocess` does."""
    command = [sys.executable, "-m", "mvs.view", str(path), "--screenshot", str(png), "--size", size]
    result = run_until_finished(command, SCREENSHOT_SECONDS, SCREENSHOT_ATTEMPTS)
    assert result is not None, f"{command} did not finish in {SCREENSHOT_SECONDS} s, {SCREENSHOT_ATTEMPTS} times"
    return result


def test_look_at_points_the_camera_at_the_target_with_up_up():
    world_T_cam_44 = look_at_pose_44(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 8.0]), np.array([0.0, -1.0, 0.0]))
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


def test_missing_vulkan_driver_is_named(monkeypatch, tmp_path):
    try:
        check_headless_rendering()
    except RenderingUnavailable as error:
        assert "libvulkan" in str(error) and "apt-get install" in str(error)
        return
    monkeypatch.setenv("VK_ICD_FILENAMES", str(tmp_path / "none.json"))
    with pytest.raises(RenderingUnavailable, match="mesa-vulkan-drivers"):
        check_headless_rendering()


@pytest.fixture
def box_screenshot(headless_rendering, tmp_path):
    """A headless screenshot of a box in an output folder, and the view it was rendered from."""
    out = tmp_path
    centre_3 = np.array([0.4, -0.2, 3.0])
    o3d.io.write_triangle_mesh(str(out / "mesh.ply"), box_mesh(centre_3, 0.6))
    result = render_cli(out, out / "shot.png")
    assert result.returncode == 0, result.stderr
    assert str(out / "shot.png") in result.stdout
    image_hw3 = cv2.cvtColor(cv2.imread(str(out / "shot.png")), cv2.COLOR_BGR2RGB)
    return image_hw3, screenshot_view(load_scene(out), WIDTH, HEIGHT), centre_3


def test_screenshot_shows_the_box_where_the_camera_projects_it(box_screenshot):
    image_hw3, view, centre_3 = box_screenshot
    assert image_hw3.shape == (HEIGHT, WIDTH, 3)
    object_hw = np.any(image_hw3 < 250, axis=2)
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
    # The box's centre projects inside its silhouette, and unlit colours are not tone-mapped.
    assert object_hw[int(round(centre_uv[0, 1])), int(round(centre_uv[0, 0]))]
    interior_hw = cv2.erode(object_hw.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    np.testing.assert_allclose(image_hw3[interior_hw].mean(axis=0), BOX_RGB * 255, atol=3)


def test_run_folder_frustums_are_drawn_at_the_cameras(headless_rendering, tmp_path):
    o3d.io.write_triangle_mesh(str(tmp_path / "mesh.ply"), box_mesh(np.array([0.0, 0.0, 3.0]), 1.0))
    # Two cameras 1 m apart at the origin looking at the box; frustum lines are red.
    (tmp_path / "trajectory.txt").write_text("0 -0.5 0 0 0 0 0 1\n1 0.5 0 0 0 0 0 1\n")
    K_33 = [[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]]
    (tmp_path / "report.json").write_text(json.dumps({"camera": {"K_33": K_33, "width": 160, "height": 120}}))
    result = render_cli(tmp_path, tmp_path / "shot.png")
    assert result.returncode == 0, result.stderr
    image_hw3 = cv2.cvtColor(cv2.imread(str(tmp_path / "shot.png")), cv2.COLOR_BGR2RGB).astype(int)
    red_hw = (image_hw3[..., 0] > 150) & (image_hw3[..., 1] < 80) & (image_hw3[..., 2] < 80)
    view = screenshot_view(load_scene(tmp_path), WIDTH, HEIGHT)
    apex_uv_22, _ = project_n2(transform_n3(invert_pose_44(view.world_T_cam_44), np.array([[-0.5, 0, 0], [0.5, 0, 0]])),
                              view.camera.K_33)
    for u, v in np.rint(apex_uv_22).astype(int):
        assert red_hw[max(v - 3, 0):v + 4, max(u - 3, 0):u + 4].any(), f"no frustum line near the camera at ({u}, {v})"


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


def test_a_render_that_never_finishes_is_run_again_in_a_new_process(tmp_path):
    # The first run hangs (as Mesa's software renderer now and then does), the second finishes.
    marker = tmp_path / "tried"
    hang_once = ("import pathlib, sys, time; m = pathlib.Path(sys.argv[1]); first = not m.exists(); "
                 "m.touch(); time.sleep(30 if first else 0); print('finished')")
    result = run_until_finished([sys.executable, "-c", hang_once, str(marker)], 3.0, 2)
    assert result is not None and result.stdout.strip() == "finished"
    assert run_until_finished([sys.executable, "-c", "import time; time.sleep(30)"], 1.0, 2) is None
