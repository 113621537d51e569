"""Rendering of a generated room (`mvs.synth.Room`): colour and z-depth by ray casting, and motion blur.

Appearance is a solid texture evaluated at the world hit point (view independent), lit
by an ambient term and one or two point lights with a Lambertian cosine and a mild
distance falloff, without shadows. Training rooms (`Room.shadows`, materials with a
`specular` term) add cast shadows and Blinn-Phong highlights that move with the viewpoint.

Motion blur (`render_frame` of a room with an exposure) averages one render at mid-exposure
along each pixel's image motion over the exposure, from its rendered depth and the poses at
the exposure's start and end (see `mvs/synth.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import open3d as o3d

from mvs.geometry import backproject_depth_hw3, invert_pose_44, project_n2, transform_n3
from mvs.synth_textures import albedo_n3
from mvs.types import Camera

if TYPE_CHECKING:
    from mvs.synth import Room

BLUR_SAMPLE_SPACING_PX = 0.75
"""Largest distance between the samples a motion streak is averaged from."""
MAX_BLUR_SAMPLES = 96


def raycasting_scene(vertices_v3: np.ndarray, triangles_t3: np.ndarray) -> o3d.t.geometry.RaycastingScene:
    """A ray-casting scene of triangles: vertices (V, 3) in world metres, vertex indices (T, 3)."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices_v3.astype(np.float32)), o3d.core.Tensor(triangles_t3.astype(np.uint32)))
    return scene


class RoomRenderer:
    """Ray casts a `Room` through its camera: colour and z-depth of any camera pose."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.scene = raycasting_scene(room.vertices_v3, room.triangles_t3)
        camera = room.camera
        v_hw, u_hw = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
        # Rays with unit z in the camera frame: the hit parameter is the z-depth.
        self.rays_cam_n3 = np.stack(
            [(u_hw - camera.cx) / camera.fx, (v_hw - camera.cy) / camera.fy, np.ones_like(u_hw)], axis=-1
        ).reshape(-1, 3).astype(np.float32)
        self.ray_length_n = np.linalg.norm(self.rays_cam_n3, axis=1)
        self.evenly_lit_m = np.array([material.evenly_lit for material in room.materials])
        self.specular_m = np.array([material.specular for material in room.materials], dtype=np.float32)
        self.shininess_m = np.array([material.shininess for material in room.materials], dtype=np.float32)

    def render(self, world_T_cam_44: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB and (H, W) float32 z-depth in metres (0 where nothing is hit)."""
        camera = self.room.camera
        # Single precision throughout: texture and shading need no more, and it halves the time.
        directions_n3 = self.rays_cam_n3 @ world_T_cam_44[:3, :3].T.astype(np.float32)
        origin_3 = world_T_cam_44[:3, 3].astype(np.float32)
        rays_n6 = np.concatenate([np.broadcast_to(origin_3, directions_n3.shape), directions_n3], axis=1)
        hits = self.scene.cast_rays(o3d.core.Tensor(rays_n6))
        depth_n = hits["t_hit"].numpy()
        hit_n = np.isfinite(depth_n)
        depth_n = np.where(hit_n, depth_n, 0.0).astype(np.float32)
        triangle_n = hits["primitive_ids"].numpy()[hit_n].astype(np.int64)
        unit_n3 = directions_n3[hit_n] / self.ray_length_n[hit_n, None]
        normal_n3 = hits["primitive_normals"].numpy()[hit_n]
        normal_n3 *= -np.sign(np.sum(normal_n3 * unit_n3, axis=1, keepdims=True) + 1e-12)
        points_n3 = origin_3 + directions_n3[hit_n] * depth_n[hit_n, None]
        cos_view_n = np.maximum(-np.sum(normal_n3 * unit_n3, axis=1), 0.25)
        footprint_n = depth_n[hit_n] * self.ray_length_n[hit_n] / (camera.fx * cos_view_n)
        material_n = self.room.triangle_material_t[triangle_n]
        rgb_n3 = self._albedo_n3(points_n3, material_n, footprint_n)
        visible_ln = self._light_visibility_ln(points_n3, normal_n3)
        irradiance_n3 = self._irradiance_n3(points_n3, normal_n3, visible_ln)
        irradiance_n3[self.evenly_lit_m[material_n]] = 1.0
        rgb_n3 *= irradiance_n3
        if np.any(self.specular_m[material_n] > 0):
            rgb_n3 += self._highlights_n3(points_n3, normal_n3, unit_n3, material_n, visible_ln)
        image_n3 = np.zeros((len(depth_n), 3), dtype=np.uint8)
        image_n3[hit_n] = np.clip(rgb_n3 * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return image_n3.reshape(camera.height, camera.width, 3), depth_n.reshape(camera.height, camera.width)

    def _albedo_n3(self, points_n3: np.ndarray, material_n: np.ndarray, footprint_n: np.ndarray) -> np.ndarray:
        order_n = np.argsort(material_n, kind="stable")
        ids_m, starts_m = np.unique(material_n[order_n], return_index=True)
        rgb_n3 = np.empty((len(points_n3), 3))
        for material_id, start, stop in zip(ids_m, starts_m, np.r_[starts_m[1:], len(order_n)]):
            selected_n = order_n[start:stop]
            rgb_n3[selected_n] = albedo_n3(self.room.materials[material_id], points_n3[selected_n], footprint_n[selected_n])
        return rgb_n3

    def _light_visibility_ln(self, points_n3: np.ndarray, normal_n3: np.ndarray) -> list[np.ndarray] | None:
        """Per light, (N,) bool: nothing lies between the point and the light (a shadow ray
        from just off the surface); None when the room casts no shadows."""
        if not self.room.shadows:
            return None
        origins_n3 = (points_n3 + 1e-3 * normal_n3).astype(np.float32)
        visible_ln = []
        for light in self.room.lights:
            # Unnormalised directions: the light is at ray parameter 1.
            rays_n6 = np.concatenate([origins_n3, light.position_3.astype(np.float32) - origins_n3], axis=1)
            visible_ln.append(self.scene.cast_rays(o3d.core.Tensor(rays_n6))["t_hit"].numpy() >= 1.0)
        return visible_ln

    def _irradiance_n3(
        self, points_n3: np.ndarray, normal_n3: np.ndarray, visible_ln: list[np.ndarray] | None
    ) -> np.ndarray:
        """Ambient plus Lambertian point lights with falloff 1 / (1 + (d / 3 m)^2), each light
        only where `visible_ln` says it is seen (None: everywhere)."""
        irradiance_n3 = np.broadcast_to(self.room.ambient_rgb_3, points_n3.shape).copy()
        for k, light in enumerate(self.room.lights):
            to_light_n3 = light.position_3 - points_n3
            distance_n = np.linalg.norm(to_light_n3, axis=1)
            cos_n = np.maximum(np.sum(to_light_n3 * normal_n3, axis=1) / distance_n, 0.0)
            if visible_ln is not None:
                cos_n = cos_n * visible_ln[k]
            irradiance_n3 += (cos_n / (1.0 + (distance_n / 3.0) ** 2))[:, None] * light.rgb_3
        return irradiance_n3

    def _highlights_n3(
        self, points_n3: np.ndarray, normal_n3: np.ndarray, unit_n3: np.ndarray, material_n: np.ndarray,
        visible_ln: list[np.ndarray] | None,
    ) -> np.ndarray:
        """Blinn-Phong highlights (view dependent): specular * (n . h)^shininess per light, with
        the lights' falloff and shadows; `unit_n3` are the unit viewing rays."""
        specular_n, shininess_n = self.specular_m[material_n], self.shininess_m[material_n]
        highlight_n3 = np.zeros_like(points_n3)
        for k, light in enumerate(self.room.lights):
            to_light_n3 = light.position_3 - points_n3
            distance_n = np.linalg.norm(to_light_n3, axis=1)
            half_n3 = to_light_n3 / distance_n[:, None] - unit_n3
            half_n3 /= np.maximum(np.linalg.norm(half_n3, axis=1, keepdims=True), 1e-9)
            facing_n = np.sum(to_light_n3 * normal_n3, axis=1) > 0
            strength_n = specular_n * np.maximum(np.sum(half_n3 * normal_n3, axis=1), 0.0) ** shininess_n * facing_n
            if visible_ln is not None:
                strength_n = strength_n * visible_ln[k]
            highlight_n3 += (strength_n / (1.0 + (distance_n / 3.0) ** 2))[:, None] * light.rgb_3
        return highlight_n3

    def render_frame(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame `position` of the room: (H, W, 3) uint8 RGB, motion-blurred over the exposure
        when the room has one, and (H, W) float32 z-depth (metres) at the frame's pose."""
        room = self.room
        world_T_cam_44 = room.world_T_cam_n44[position]
        image_hw3, depth_hw = self.render(world_T_cam_44)
        if room.exposure_time > 0:
            half = room.exposure_time / 2
            time = room.frame_times_n[position]
            start_44, end_44 = room.trajectory.world_T_cam_n44(np.array([time - half, time + half]))
            streak_hw2 = motion_streak_hw2(depth_hw, room.camera, world_T_cam_44, start_44, end_44)
            image_hw3 = motion_blurred_hw3(image_hw3, streak_hw2)
        return image_hw3, depth_hw


def motion_streak_hw2(
    depth_hw: np.ndarray, camera: Camera, world_T_cam_44: np.ndarray, world_T_start_44: np.ndarray,
    world_T_end_44: np.ndarray,
) -> np.ndarray:
    """(H, W, 2) image motion (pixels) over an exposure of the point each pixel sees: its
    projection at the end pose minus at the start pose, from its z-depth `depth_hw` (metres)
    at `world_T_cam_44`; 0 where there is no depth or the point is behind either camera."""
    points_cam_hw3 = backproject_depth_hw3(depth_hw, camera.K_33)
    points_n3 = points_cam_hw3.reshape(-1, 3)
    uv_start_n2, z_start_n = project_n2(transform_n3(invert_pose_44(world_T_start_44) @ world_T_cam_44, points_n3),
                                        camera.K_33)
    uv_end_n2, z_end_n = project_n2(transform_n3(invert_pose_44(world_T_end_44) @ world_T_cam_44, points_n3),
                                    camera.K_33)
    valid_n = (depth_hw.reshape(-1) > 0) & (z_start_n > 1e-6) & (z_end_n > 1e-6)
    streak_n2 = np.where(valid_n[:, None], uv_end_n2 - uv_start_n2, 0.0)
    return streak_n2.reshape(*depth_hw.shape, 2)


def motion_blurred_hw3(image_hw3: np.ndarray, streak_hw2: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: every pixel of `image_hw3` averaged along its motion streak
    `streak_hw2` (pixels), centred on it, from samples at most `BLUR_SAMPLE_SPACING_PX`
    apart (bilinear, edges replicated)."""
    length = float(np.max(np.linalg.norm(streak_hw2, axis=-1), initial=0.0))
    samples = int(min(MAX_BLUR_SAMPLES, np.ceil(length / BLUR_SAMPLE_SPACING_PX) + 1))
    if samples < 2:
        return image_hw3
    height, width = image_hw3.shape[:2]
    v_hw, u_hw = np.mgrid[0:height, 0:width].astype(np.float32)
    streak_hw2 = streak_hw2.astype(np.float32)
    source_hw3 = image_hw3.astype(np.float32)
    sum_hw3 = np.zeros_like(source_hw3)
    for fraction in ((np.arange(samples) + 0.5) / samples - 0.5).tolist():
        sum_hw3 += cv2.remap(source_hw3, u_hw + fraction * streak_hw2[..., 0], v_hw + fraction * streak_hw2[..., 1],
                             cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.clip(np.rint(sum_hw3 / samples), 0, 255).astype(np.uint8)
