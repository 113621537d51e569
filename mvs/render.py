"""Headless rendering of meshes, point clouds and camera frustums with Open3D's offscreen renderer.

Open3D's offscreen renderer (Filament) draws through Vulkan; on a machine without a GPU,
Mesa's software driver (lavapipe) draws on the CPU. It needs the Vulkan loader
`libvulkan.so.1` and a Vulkan driver (Debian/Ubuntu: `apt-get install libvulkan1
mesa-vulkan-drivers`). Filament aborts the whole process when the loader finds no driver,
so `check_headless_rendering` looks for both first, and one process renders one image:
callers that must survive a failed render run `python -m mvs.view --screenshot` in a
child process.

Views use the project's pinhole convention (pixel centres at integers, camera x right,
y down, z forward, metres).
"""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import open3d as o3d

from mvs.geometry import backproject_n3, transform_n3
from mvs.types import Camera

VULKAN_PACKAGES = "libvulkan1 mesa-vulkan-drivers"
# Where the Vulkan loader looks for driver manifests (besides VK_ICD_FILENAMES / VK_DRIVER_FILES).
VULKAN_ICD_DIRS = ("/usr/share/vulkan/icd.d", "/usr/local/share/vulkan/icd.d", "/etc/vulkan/icd.d")
BACKGROUND_RGB = (1.0, 1.0, 1.0)
FRUSTUM_RGB = (0.85, 0.1, 0.1)


class RenderingUnavailable(RuntimeError):
    """Headless rendering cannot work on this machine; the message says what to install."""


@dataclass(frozen=True)
class View:
    """A pinhole camera looking at the scene: intrinsics and its camera-to-world pose."""

    camera: Camera
    world_T_cam_44: np.ndarray


def check_headless_rendering() -> None:
    """Raise RenderingUnavailable naming the missing system library, or return when the
    Vulkan loader and at least one Vulkan driver manifest are present."""
    try:
        ctypes.CDLL("libvulkan.so.1")
    except OSError as error:
        raise RenderingUnavailable(
            f"headless rendering needs the Vulkan loader libvulkan.so.1, which is not installed ({error}); "
            f"install it with: sudo apt-get install {VULKAN_PACKAGES}"
        ) from error
    listed = os.environ.get("VK_ICD_FILENAMES") or os.environ.get("VK_DRIVER_FILES")
    if listed:
        manifests = [Path(p) for p in listed.split(os.pathsep) if Path(p).is_file()]
    else:
        manifests = [p for d in VULKAN_ICD_DIRS if Path(d).is_dir() for p in Path(d).glob("*.json")]
    if not manifests:
        where = f"VK_ICD_FILENAMES={listed}" if listed else ", ".join(VULKAN_ICD_DIRS)
        raise RenderingUnavailable(
            f"headless rendering needs a Vulkan driver and none is listed in {where}; "
            "install Mesa's software driver with: sudo apt-get install mesa-vulkan-drivers"
        )


def look_at_pose_44(eye_3: np.ndarray, target_3: np.ndarray, up_3: np.ndarray) -> np.ndarray:
    """world_T_cam of a camera at `eye_3` whose z axis points at `target_3` and whose
    image y axis (down) points along `-up_3` as far as the viewing direction allows."""
    z_3 = target_3 - eye_3
    z_3 = z_3 / np.linalg.norm(z_3)
    x_3 = np.cross(-up_3, z_3)
    if np.linalg.norm(x_3) < 1e-9:
        raise ValueError(f"look-at: the viewing direction {z_3} is parallel to up {up_3}")
    x_3 = x_3 / np.linalg.norm(x_3)
    world_T_cam_44 = np.eye(4)
    world_T_cam_44[:3, :3] = np.stack([x_3, np.cross(z_3, x_3), z_3], axis=1)
    world_T_cam_44[:3, 3] = eye_3
    return world_T_cam_44


def pinhole_camera(width: int, height: int, horizontal_fov_deg: float) -> Camera:
    """A centred pinhole camera with square pixels and the given horizontal field of view."""
    focal = (width / 2) / np.tan(np.radians(horizontal_fov_deg) / 2)
    return Camera(np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]]), width, height)


def overview_view(
    points_n3: np.ndarray,
    world_T_cam_n44: np.ndarray | None,
    width: int,
    height: int,
    framed_n3: np.ndarray | None = None,
    elevation_deg: float = 55.0,
    horizontal_fov_deg: float = 50.0,
) -> View:
    """A view from above and behind the scene, centred on `points_n3` (world metres) and
    just far enough away to frame 99% of them and all of `framed_n3` (e.g. the cameras).

    With camera poses (N, 4, 4) world_T_cam, "up" is opposite the cameras' mean image-down
    axis and the view looks the way the cameras looked on average; without them, up is the
    axis along which the points spread least and the view looks along their widest axis.
    """
    if len(points_n3) == 0:
        raise ValueError("overview: no points to frame")
    low_3, high_3 = np.percentile(points_n3, [1, 99], axis=0)
    centre_3 = (low_3 + high_3) / 2
    if world_T_cam_n44 is not None and len(world_T_cam_n44) > 0:
        up_3 = -world_T_cam_n44[:, :3, 1].mean(axis=0)
        forward_3 = world_T_cam_n44[:, :3, 2].mean(axis=0)
    else:
        _, _, axes_33 = np.linalg.svd(points_n3 - points_n3.mean(axis=0), full_matrices=False)
        forward_3, up_3 = axes_33[0], axes_33[2] * np.sign(axes_33[2][np.argmax(np.abs(axes_33[2]))])
    up_3 = up_3 / np.linalg.norm(up_3)
    forward_3 = forward_3 - up_3 * (forward_3 @ up_3)
    if np.linalg.norm(forward_3) < 1e-6:
        forward_3 = np.cross(up_3, [1.0, 0.0, 0.0] if abs(up_3[0]) < 0.9 else [0.0, 1.0, 0.0])
    forward_3 = forward_3 / np.linalg.norm(forward_3)
    camera = pinhole_camera(width, height, horizontal_fov_deg)
    elevation = np.radians(elevation_deg)
    direction_3 = np.sin(elevation) * up_3 - np.cos(elevation) * forward_3
    axes_33 = look_at_pose_44(centre_3 + direction_3, centre_3, up_3)[:3, :3]

    def distances_n(world_n3: np.ndarray) -> np.ndarray:
        # A point at lateral offsets (x, y) and depth offset z from the centre is in the
        # frame when |x| / (distance + z) <= cx / fx (likewise y).
        local_n3 = (world_n3 - centre_3) @ axes_33
        return np.maximum(
            np.abs(local_n3[:, 0]) * camera.fx / camera.cx, np.abs(local_n3[:, 1]) * camera.fy / camera.cy
        ) - local_n3[:, 2]

    distance = float(np.percentile(distances_n(points_n3), 99))
    if framed_n3 is not None and len(framed_n3) > 0:
        distance = max(distance, float(distances_n(framed_n3).max()))
    distance = max(distance * 1.05, 1e-3)
    eye_3 = centre_3 + distance * direction_3
    return View(camera, look_at_pose_44(eye_3, centre_3, up_3))


def cull_back_faces(mesh: o3d.geometry.TriangleMesh, eye_3: np.ndarray) -> o3d.geometry.TriangleMesh:
    """The triangles of `mesh` whose normals face `eye_3`: seen from outside a room, the
    ceiling and the near walls (normals pointing into the room) disappear."""
    culled = o3d.geometry.TriangleMesh(mesh)
    culled.compute_triangle_normals()
    vertices_n3 = np.asarray(culled.vertices)
    triangles_m3 = np.asarray(culled.triangles)
    to_eye_m3 = eye_3 - vertices_n3[triangles_m3].mean(axis=1)
    facing_m = np.einsum("mi,mi->m", np.asarray(culled.triangle_normals), to_eye_m3) > 0
    culled.remove_triangles_by_mask(~facing_m)
    culled.remove_unreferenced_vertices()
    return culled


def frustum_lines(camera: Camera, world_T_cam_n44: np.ndarray, depth: float) -> o3d.geometry.LineSet:
    """Camera frustums (apex and image corners at `depth` metres) and the path through the
    camera centres, as one line set in world coordinates."""
    corners_uv_42 = np.array(
        [[-0.5, -0.5], [camera.width - 0.5, -0.5], [camera.width - 0.5, camera.height - 0.5], [-0.5, camera.height - 0.5]]
    )
    local_53 = np.concatenate([np.zeros((1, 3)), backproject_n3(corners_uv_42, np.full(4, depth), camera.K_33)])
    edges_82 = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])
    points, lines = [], []
    for i, world_T_cam_44 in enumerate(world_T_cam_n44):
        points.append(transform_n3(world_T_cam_44, local_53))
        lines.append(edges_82 + 5 * i)
    centres_n = 5 * np.arange(len(world_T_cam_n44))
    lines.append(np.stack([centres_n[:-1], centres_n[1:]], axis=1))
    line_set = o3d.geometry.LineSet(
        o3d.utility.Vector3dVector(np.concatenate(points)), o3d.utility.Vector2iVector(np.concatenate(lines))
    )
    line_set.paint_uniform_color(FRUSTUM_RGB)
    return line_set


def _material(geometry: o3d.geometry.Geometry3D) -> o3d.visualization.rendering.MaterialRecord:
    """Unlit for coloured geometry (the colours already carry the captured shading), lit
    grey otherwise; thick lines for line sets."""
    material = o3d.visualization.rendering.MaterialRecord()
    if isinstance(geometry, o3d.geometry.LineSet):
        material.shader, material.line_width = "unlitLine", 2.0
    elif isinstance(geometry, o3d.geometry.PointCloud):
        material.shader, material.point_size = "defaultUnlit", 2.0
    elif geometry.has_vertex_colors():
        material.shader = "defaultUnlit"
    else:
        material.shader, material.base_color = "defaultLit", (0.7, 0.7, 0.7, 1.0)
    return material


def render_image_hw3(geometries: list[o3d.geometry.Geometry3D], view: View) -> np.ndarray:
    """(H, W, 3) uint8 RGB image of `geometries` seen from `view`, on a white background.

    Colours are not tone-mapped: an unlit surface of colour c shows as round(255 c).
    Call once per process (see the module docstring).
    """
    check_headless_rendering()
    # Mesa's software rasteriser threads spin while they wait for each other; on a busy CPU
    # a 960x720 view then took minutes instead of seconds. One thread draws it in about the
    # same CPU time. Read when the renderer starts the driver; a value already set is kept.
    os.environ.setdefault("LP_NUM_THREADS", "0")
    camera = view.camera
    with _native_stdout_silenced(), o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        renderer = o3d.visualization.rendering.OffscreenRenderer(camera.width, camera.height)
        for i, geometry in enumerate(geometries):
            renderer.scene.add_geometry(f"geometry{i}", geometry, _material(geometry))
        renderer.scene.set_background([*BACKGROUND_RGB, 1.0])
        renderer.scene.view.set_post_processing(False)
        # Open3D places pixel centres at half-integers; ours sit at integers.
        open3d_K_33 = camera.K_33 + np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
        cam_T_world_44 = np.linalg.inv(view.world_T_cam_44)
        renderer.setup_camera(open3d_K_33, cam_T_world_44, camera.width, camera.height)
        return np.asarray(renderer.render_to_image()).copy()


@contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Send what native code prints to standard output (Filament's start-up banner) to
    /dev/null; standard error, where failures are reported, stays."""
    sys.stdout.flush()
    saved_fd = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved_fd, 1)
        os.close(saved_fd)
