"""Headless rendering on the CPU: meshes ray cast, point clouds splatted, lines drawn on top.

No GPU, display or graphics driver is involved. A mesh is ray cast with Open3D's
`RaycastingScene` (one ray through every pixel centre): the colour is the vertex colours
interpolated at the hit (barycentric), or grey without them, lit by a headlight with some
ambient light (Lambert, two-sided: shade = colour * (AMBIENT + (1 - AMBIENT) |cos|), with
|cos| between the face normal and the ray). Point clouds are drawn unlit as squares of
POINT_SIZE pixels, the nearest point winning a pixel; meshes and clouds are combined by
z-depth. Line sets (camera frustums, paths) are clipped to the view, projected and drawn with
OpenCV on top of everything, not hidden by surfaces, so the cameras stay visible. The same
input gives the same image, bit for bit.

Views use the project's pinhole convention (pixel centres at integers, camera x right,
y down, z forward, metres).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d

from mvs.geometry import (
    backproject_n3,
    invert_pose_44,
    look_at_world_T_cam_44,
    pixel_grid_hw2,
    project_n2,
    transform_n3,
)
from mvs.types import Camera

BACKGROUND_RGB = (1.0, 1.0, 1.0)
FRUSTUM_RGB = (0.85, 0.1, 0.1)
UNCOLOURED_RGB = (0.7, 0.7, 0.7)
AMBIENT = 0.3  # share of a surface's colour it shows when the headlight grazes it
POINT_SIZE = 2  # pixels
LINE_WIDTH = 2  # pixels
NEAR = 1e-3  # metres: lines closer to the view's camera than this are cut off
SUBPIXEL_BITS = 4  # fractional bits of the line end points given to OpenCV


@dataclass(frozen=True)
class View:
    """A pinhole camera looking at the scene: intrinsics and its camera-to-world pose."""

    camera: Camera
    world_T_cam_44: np.ndarray


@dataclass(frozen=True)
class Layer:
    """What one surface contributes to the image: (H, W, 3) float32 RGB in [0, 1] and the
    (H, W) float32 z-depth in metres, inf where the surface does not cover the pixel."""

    rgb_hw3: np.ndarray
    depth_hw: np.ndarray


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
    axes_33 = look_at_world_T_cam_44(centre_3 + direction_3, centre_3, up_3)[:3, :3]

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
    return View(camera, look_at_world_T_cam_44(eye_3, centre_3, up_3))


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


def render_image_hw3(geometries: list[o3d.geometry.Geometry3D], view: View) -> np.ndarray:
    """(H, W, 3) uint8 RGB image of `geometries` (triangle meshes, point clouds, line sets;
    world metres) seen from `view`, on a white background. See the module docstring for
    the shading; a colour c shows as round(255 c)."""
    camera = view.camera
    rgb_hw3 = np.empty((camera.height, camera.width, 3), np.float32)
    rgb_hw3[:] = BACKGROUND_RGB
    depth_hw = np.full((camera.height, camera.width), np.inf, np.float32)
    line_sets = []
    for geometry in geometries:
        if isinstance(geometry, o3d.geometry.LineSet):
            line_sets.append(geometry)
            continue
        if isinstance(geometry, o3d.geometry.TriangleMesh):
            layer = raycast_mesh(geometry, view)
        elif isinstance(geometry, o3d.geometry.PointCloud):
            layer = splat_points(geometry, view)
        else:
            raise ValueError(f"cannot render a {type(geometry).__name__}; expected a mesh, point cloud or line set")
        nearer_hw = layer.depth_hw < depth_hw
        rgb_hw3[nearer_hw] = layer.rgb_hw3[nearer_hw]
        depth_hw[nearer_hw] = layer.depth_hw[nearer_hw]
    image_hw3 = np.clip(rgb_hw3 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    for line_set in line_sets:
        draw_lines(image_hw3, line_set, view)
    return image_hw3


def camera_rays_n3(camera: Camera) -> np.ndarray:
    """(H * W, 3) float32 camera-frame directions with unit z through every pixel centre, row by row."""
    uv_n2 = pixel_grid_hw2(camera.height, camera.width).reshape(-1, 2)
    return backproject_n3(uv_n2, np.ones(len(uv_n2)), camera.K_33).astype(np.float32)


def raycast_mesh(mesh: o3d.geometry.TriangleMesh, view: View) -> Layer:
    """The mesh's layer: one ray per pixel, vertex colours interpolated at the nearest hit and
    shaded by a headlight (see the module docstring)."""
    camera = view.camera
    rgb_n3 = np.zeros((camera.height * camera.width, 3), np.float32)
    depth_n = np.full(camera.height * camera.width, np.inf, np.float32)
    triangles_m3 = np.asarray(mesh.triangles)
    if len(triangles_m3) > 0:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                            o3d.core.Tensor(triangles_m3.astype(np.uint32)))
        directions_n3 = camera_rays_n3(camera) @ view.world_T_cam_44[:3, :3].T.astype(np.float32)
        rays_n6 = np.empty((len(directions_n3), 6), np.float32)
        rays_n6[:, :3] = view.world_T_cam_44[:3, 3]
        rays_n6[:, 3:] = directions_n3
        hits = scene.cast_rays(o3d.core.Tensor(rays_n6))
        # Directions have unit z in the view's camera frame, so the hit distance is the z-depth.
        t_hit_n = hits["t_hit"].numpy()
        hit_n = np.isfinite(t_hit_n)
        triangle_k = hits["primitive_ids"].numpy()[hit_n].astype(np.int64)
        if mesh.has_vertex_colors():
            u_k2 = hits["primitive_uvs"].numpy()[hit_n]
            barycentric_k3 = np.stack([1.0 - u_k2[:, 0] - u_k2[:, 1], u_k2[:, 0], u_k2[:, 1]], axis=1)
            corner_rgb_k33 = np.asarray(mesh.vertex_colors, np.float32)[triangles_m3[triangle_k]]
            albedo_k3 = np.einsum("kc,kcd->kd", barycentric_k3, corner_rgb_k33)
        else:
            albedo_k3 = np.broadcast_to(np.float32(UNCOLOURED_RGB), (len(triangle_k), 3))
        unit_k3 = directions_n3[hit_n] / np.linalg.norm(directions_n3[hit_n], axis=1, keepdims=True)
        cos_k = np.abs(np.einsum("kd,kd->k", hits["primitive_normals"].numpy()[hit_n], unit_k3))
        rgb_n3[hit_n] = albedo_k3 * (AMBIENT + (1.0 - AMBIENT) * cos_k)[:, None]
        depth_n[hit_n] = t_hit_n[hit_n]
    return Layer(rgb_n3.reshape(camera.height, camera.width, 3), depth_n.reshape(camera.height, camera.width))


def splat_points(cloud: o3d.geometry.PointCloud, view: View) -> Layer:
    """The cloud's layer: every point an unlit square of POINT_SIZE pixels (grey without
    colours); where squares overlap, the nearest point wins (ties: the first point)."""
    camera = view.camera
    rgb_n3 = np.zeros((camera.height * camera.width, 3), np.float32)
    depth_n = np.full(camera.height * camera.width, np.inf, np.float32)
    points_n3 = np.asarray(cloud.points)
    colours_n3 = np.asarray(cloud.colors) if cloud.has_colors() else np.broadcast_to(UNCOLOURED_RGB, points_n3.shape)
    uv_n2, z_n = project_n2(transform_n3(invert_pose_44(view.world_T_cam_44), points_n3), camera.K_33)
    size_2 = np.array([camera.width, camera.height])
    near_image_n = (z_n > 0) & np.all((uv_n2 > -POINT_SIZE) & (uv_n2 < size_2 + POINT_SIZE), axis=1)
    # The square's pixels are those whose centres lie within POINT_SIZE / 2 of the point (u and v).
    corner_uv_n2 = np.ceil(uv_n2[near_image_n] - POINT_SIZE / 2).astype(np.int64)
    offsets_s2 = np.stack(np.meshgrid(np.arange(POINT_SIZE), np.arange(POINT_SIZE), indexing="ij"), -1).reshape(-1, 2)
    uv_s2 = (corner_uv_n2[:, None, :] + offsets_s2[None]).reshape(-1, 2)
    point_s = np.repeat(np.flatnonzero(near_image_n), len(offsets_s2))
    inside_s = np.all((uv_s2 >= 0) & (uv_s2 < size_2), axis=1)
    pixel_s, point_s = uv_s2[inside_s, 1] * camera.width + uv_s2[inside_s, 0], point_s[inside_s]
    order_s = np.lexsort((point_s, z_n[point_s], pixel_s))
    pixels_p, first_p = np.unique(pixel_s[order_s], return_index=True)
    nearest_p = point_s[order_s[first_p]]
    rgb_n3[pixels_p] = colours_n3[nearest_p]
    depth_n[pixels_p] = z_n[nearest_p]
    return Layer(rgb_n3.reshape(camera.height, camera.width, 3), depth_n.reshape(camera.height, camera.width))


def draw_lines(image_hw3: np.ndarray, line_set: o3d.geometry.LineSet, view: View) -> None:
    """Draw the line set into the (H, W, 3) uint8 RGB image (in place), LINE_WIDTH pixels wide
    in its colours (FRUSTUM_RGB without), clipped to the view and never hidden by surfaces."""
    camera = view.camera
    points_n3 = transform_n3(invert_pose_44(view.world_T_cam_44), np.asarray(line_set.points))
    lines_l2 = np.asarray(line_set.lines)
    if line_set.has_colors():
        colours_l3 = np.asarray(line_set.colors)
    else:
        colours_l3 = np.broadcast_to(FRUSTUM_RGB, (len(lines_l2), 3))
    start_l3, end_l3, kept_l = clip_segments(points_n3[lines_l2[:, 0]], points_n3[lines_l2[:, 1]], camera)
    start_l2, _ = project_n2(start_l3[kept_l], camera.K_33)
    end_l2, _ = project_n2(end_l3[kept_l], camera.K_33)
    scale = 1 << SUBPIXEL_BITS
    for start_2, end_2, rgb_3 in zip(np.rint(start_l2 * scale).astype(int), np.rint(end_l2 * scale).astype(int),
                                     np.clip(np.rint(colours_l3[kept_l] * 255), 0, 255).astype(int)):
        cv2.line(image_hw3, tuple(map(int, start_2)), tuple(map(int, end_2)), tuple(map(int, rgb_3)),
                 thickness=LINE_WIDTH, lineType=cv2.LINE_AA, shift=SUBPIXEL_BITS)


def clip_segments(
    start_l3: np.ndarray, end_l3: np.ndarray, camera: Camera
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera-frame segments (L, 3) cut to the part in front of the near plane (NEAR metres)
    whose projection lies within the image and a margin of LINE_WIDTH pixels: the new start
    and end points, and which segments keep any part (L,)."""
    margin = LINE_WIDTH
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    # Half-spaces a . p + d >= 0 in the camera frame: z >= NEAR, and -margin <= u, v <= size - 1 + margin.
    planes_54 = np.array([
        [0.0, 0.0, 1.0, -NEAR],
        [fx, 0.0, cx + margin, 0.0],
        [-fx, 0.0, camera.width - 1 + margin - cx, 0.0],
        [0.0, fy, cy + margin, 0.0],
        [0.0, -fy, camera.height - 1 + margin - cy, 0.0],
    ])
    start_l3, end_l3 = start_l3.astype(np.float64), end_l3.astype(np.float64)
    kept_l = np.ones(len(start_l3), bool)
    for plane_4 in planes_54:
        start_l, end_l = start_l3 @ plane_4[:3] + plane_4[3], end_l3 @ plane_4[:3] + plane_4[3]
        kept_l &= (start_l >= 0) | (end_l >= 0)
        crossing_l = kept_l & ((start_l < 0) != (end_l < 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            share_l = np.where(crossing_l, start_l / (start_l - end_l), 0.0)
        cut_l3 = start_l3 + share_l[:, None] * (end_l3 - start_l3)
        start_l3 = np.where((crossing_l & (start_l < 0))[:, None], cut_l3, start_l3)
        end_l3 = np.where((crossing_l & (end_l < 0))[:, None], cut_l3, end_l3)
    return start_l3, end_l3, kept_l
