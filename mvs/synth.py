"""Procedural furnished rooms rendered by ray casting, written in ScanNet export layout.

World frame: metres, +z up, the floor at z = 0 and the room centred on x = y = 0. Cameras
follow the project convention (x right, y down, z forward; `world_T_cam_44` maps camera
points to world points) and come from `look_at_world_T_cam_44` with world up +z, then a
small roll about the optical axis.

Appearance is a solid texture evaluated at the world hit point (view independent), lit
by an ambient term and one or two point lights with a Lambertian cosine and a mild
distance falloff, without shadows. Every view is therefore exactly photo-consistent up
to pixel sampling and JPEG compression.

    python -m mvs.synth --seed 3 --out sequences/synthetic/room3 [--frames 300]
        [--textureless-walls] [--width 640 --height 480]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import colorsys
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import open3d as o3d
from tqdm import tqdm

from mvs.geometry import invert_pose_44, look_at_world_T_cam_44, make_pose_44
from mvs.types import Camera

ROOM_NAME_PATTERN = re.compile(r"synthetic/room(\d+)(_textureless)?")
WORLD_UP_3 = np.array([0.0, 0.0, 1.0])
CAMERA_CLEARANCE_M = 0.75
MIN_EDGE_WIDTH_M = 0.003
NOISE_TERMS = 6

Pattern = Literal["plain", "stripes", "checker", "speckle", "blobs"]


@dataclass
class RoomSpec:
    """What to generate: the seed fixes the room, furniture, lights, textures and path.

    `num_frames` samples one closed loop of the camera path; `width` x `height` pixels.
    `textureless_walls` paints walls, floor and ceiling one flat colour (same geometry).
    """

    seed: int
    num_frames: int = 300
    width: int = 640
    height: int = 480
    textureless_walls: bool = False


@dataclass(frozen=True)
class Material:
    """A solid texture: albedo (RGB in [0, 1]) as a function of a world point.

    Coordinates are taken in the object's frame (`local_T_world_44`), so patterns follow
    the object. Noise is a sum of sinusoids with wave vectors `noise_wave_k3` (radians per
    metre), phases `noise_phase_k` and RGB amplitudes `noise_amplitude_k3`. The pattern
    mixes `base_rgb_3` towards `accent_rgb_3`; `pattern_frequency` is in cycles per metre,
    `pattern_offset_3` in cycles, `blob_wave_k3` / `blob_phase_k` shape the blobs.
    """

    base_rgb_3: np.ndarray
    accent_rgb_3: np.ndarray
    pattern: Pattern
    pattern_frequency: float
    pattern_axis_3: np.ndarray
    pattern_offset_3: np.ndarray
    noise_wave_k3: np.ndarray
    noise_phase_k: np.ndarray
    noise_amplitude_k3: np.ndarray
    blob_wave_k3: np.ndarray
    blob_phase_k: np.ndarray
    local_T_world_44: np.ndarray
    salt: int


@dataclass(frozen=True)
class Light:
    """A point light at `position_3` (world metres) with RGB intensity `rgb_3`."""

    position_3: np.ndarray
    rgb_3: np.ndarray


@dataclass
class Room:
    """A generated room: its triangle mesh, materials, lights, camera and camera path.

    size_3: room extents (x, y, z) in metres; the room spans [-x/2, x/2] x [-y/2, y/2] x [0, z].
    vertices_v3 (world metres), triangles_t3 (vertex indices), triangle_material_t (index
    into `materials`), world_T_cam_n44: the camera-to-world pose of every frame.
    """

    size_3: np.ndarray
    vertices_v3: np.ndarray
    triangles_t3: np.ndarray
    triangle_material_t: np.ndarray
    materials: list[Material]
    lights: list[Light]
    ambient_rgb_3: np.ndarray
    camera: Camera
    world_T_cam_n44: np.ndarray

    def vertex_albedo_v3(self) -> np.ndarray:
        """(V, 3) albedo in [0, 1] of every vertex, from its triangles' material."""
        material_v = np.zeros(len(self.vertices_v3), dtype=np.int64)
        material_v[self.triangles_t3.reshape(-1)] = np.repeat(self.triangle_material_t, 3)
        albedo_v3 = np.zeros((len(self.vertices_v3), 3))
        for material_id in np.unique(material_v):
            selected_v = material_v == material_id
            points_n3 = self.vertices_v3[selected_v]
            albedo_v3[selected_v] = albedo_n3(self.materials[material_id], points_n3, np.zeros(len(points_n3)))
        return albedo_v3

    def legacy_mesh(self) -> o3d.geometry.TriangleMesh:
        """The ground-truth mesh in world metres with vertex colours (albedo)."""
        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(self.vertices_v3), o3d.utility.Vector3iVector(self.triangles_t3)
        )
        mesh.vertex_colors = o3d.utility.Vector3dVector(self.vertex_albedo_v3())
        return mesh


@dataclass
class _Part:
    """One closed piece of geometry in world metres and the index of its material."""

    vertices_v3: np.ndarray
    triangles_t3: np.ndarray
    material_id: int


@dataclass
class _Wiggle:
    """A smooth periodic signal over the loop parameter s in [0, 1): sum of sines."""

    amplitude_k: np.ndarray
    cycles_k: np.ndarray
    phase_k: np.ndarray

    def __call__(self, s_n: np.ndarray) -> np.ndarray:
        angle_nk = 2 * np.pi * s_n[:, None] * self.cycles_k + self.phase_k
        return np.sin(angle_nk) @ self.amplitude_k


@dataclass
class _CameraPath:
    """A closed hand-held loop around the room centre, looking outward.

    The eye sits on an ellipse (semi-axes `semi_axes_2`, metres) at height `height`, moved
    by the x, y, z wiggles (metres); the view heads outward, turned by `heading` and tilted
    by `pitch` + `pitch_wiggle`, then rolled by `roll` about the optical axis (radians).
    """

    semi_axes_2: np.ndarray
    start_angle: float
    turn_sign: float
    height: float
    pitch: float
    x: _Wiggle
    y: _Wiggle
    z: _Wiggle
    heading: _Wiggle
    pitch_wiggle: _Wiggle
    roll: _Wiggle

    def eye_n3(self, s_n: np.ndarray) -> np.ndarray:
        """(N, 3) eye positions (world metres) at loop parameters `s_n`."""
        angle_n = self.start_angle + self.turn_sign * 2 * np.pi * s_n
        return np.stack(
            [
                self.semi_axes_2[0] * np.cos(angle_n) + self.x(s_n),
                self.semi_axes_2[1] * np.sin(angle_n) + self.y(s_n),
                self.height + self.z(s_n),
            ],
            axis=1,
        )

    def world_T_cam_n44(self, s_n: np.ndarray) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses at loop parameters `s_n`."""
        eye_n3 = self.eye_n3(s_n)
        heading_n = self.start_angle + self.turn_sign * 2 * np.pi * s_n + self.heading(s_n)
        pitch_n = self.pitch + self.pitch_wiggle(s_n)
        roll_n = self.roll(s_n)
        view_n3 = np.stack(
            [np.cos(heading_n) * np.cos(pitch_n), np.sin(heading_n) * np.cos(pitch_n), np.sin(pitch_n)], axis=1
        )
        poses = []
        for eye_3, view_3, roll in zip(eye_n3, view_n3, roll_n):
            c, s = np.cos(roll), np.sin(roll)
            cam_T_rolled_44 = make_pose_44(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), np.zeros(3))
            poses.append(look_at_world_T_cam_44(eye_3, eye_3 + view_3, WORLD_UP_3) @ cam_T_rolled_44)
        return np.stack(poses)


def camera_for_size(width: int, height: int) -> Camera:
    """A ~63 degree horizontal field of view: fx = fy = 525 * width / 640, centred principal point."""
    focal = 525.0 * width / 640.0
    K_33 = np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])
    return Camera(K_33, width, height)


# ---------------------------------------------------------------------------------------
# Solid textures


def _soft_square_n(phase_n: np.ndarray, edge_n: np.ndarray) -> np.ndarray:
    """Square wave in [-1, 1] of a phase in cycles, edges ramped over `edge_n` cycles.

    Once an edge spans a large part of a cycle the wave fades towards zero, which keeps
    patterns finer than a pixel from aliasing.
    """
    return np.clip(np.sin(2 * np.pi * phase_n) / (np.pi * edge_n), -1.0, 1.0)


def _smoothstep_n(edge0_n: np.ndarray, edge1_n: np.ndarray, x_n: np.ndarray) -> np.ndarray:
    t_n = np.clip((x_n - edge0_n) / (edge1_n - edge0_n), 0.0, 1.0)
    return t_n * t_n * (3 - 2 * t_n)


def _hash_uniform_n(cells_n3: np.ndarray, salt: int) -> np.ndarray:
    """A deterministic uniform value in [0, 1) per integer lattice cell (N, 3)."""
    cells_n3 = cells_n3.astype(np.int64).view(np.uint64)
    x_n = (
        cells_n3[:, 0] * np.uint64(0x9E3779B97F4A7C15)
        ^ cells_n3[:, 1] * np.uint64(0xC2B2AE3D27D4EB4F)
        ^ cells_n3[:, 2] * np.uint64(0x165667B19E3779F9)
        ^ np.uint64(salt)
    )
    x_n = (x_n ^ (x_n >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
    x_n = (x_n ^ (x_n >> np.uint64(33))) * np.uint64(0xC4CEB9FE1A85EC53)
    x_n = x_n ^ (x_n >> np.uint64(33))
    return (x_n >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _pattern_mix_n(material: Material, local_n3: np.ndarray, footprint_n: np.ndarray) -> np.ndarray:
    """(N,) weight of the accent colour in [0, 1] at object-frame points."""
    frequency = material.pattern_frequency
    edge_n = np.maximum(footprint_n, MIN_EDGE_WIDTH_M) * frequency
    cycles_n3 = local_n3 * frequency + material.pattern_offset_3
    if material.pattern == "stripes":
        return 0.5 + 0.5 * _soft_square_n(cycles_n3 @ material.pattern_axis_3, edge_n)
    if material.pattern == "checker":
        square_n = np.prod(_soft_square_n(cycles_n3, edge_n[:, None]), axis=1)
        return 0.5 + 0.5 * square_n
    if material.pattern == "speckle":
        cells_n3 = np.floor(cycles_n3)
        jitter_n3 = np.stack([_hash_uniform_n(cells_n3, material.salt + k) for k in range(3)], axis=1)
        radius_n = 0.15 + 0.2 * _hash_uniform_n(cells_n3, material.salt + 3)
        present_n = _hash_uniform_n(cells_n3, material.salt + 4) < 0.6
        centre_n3 = 0.35 + 0.3 * jitter_n3
        distance_n = np.linalg.norm(cycles_n3 - cells_n3 - centre_n3, axis=1)
        return present_n * (1.0 - _smoothstep_n(radius_n - edge_n / 2, radius_n + edge_n / 2, distance_n))
    if material.pattern == "blobs":
        field_n = np.sin(local_n3 @ material.blob_wave_k3.T + material.blob_phase_k).mean(axis=1)
        return _smoothstep_n(np.full_like(field_n, -0.06), np.full_like(field_n, 0.06), field_n)
    return np.zeros(len(local_n3))


def albedo_n3(material: Material, points_n3: np.ndarray, footprint_n: np.ndarray) -> np.ndarray:
    """(N, 3) albedo in [0, 1] at world points (N, 3) seen with pixel footprints (N,) metres.

    The footprint (the surface length one pixel covers) attenuates noise terms and softens
    pattern edges, a box-filter approximation against aliasing; 0 gives the full detail.
    """
    local_n3 = points_n3 @ material.local_T_world_44[:3, :3].T + material.local_T_world_44[:3, 3]
    mix_n = _pattern_mix_n(material, local_n3, footprint_n)
    rgb_n3 = material.base_rgb_3 + mix_n[:, None] * (material.accent_rgb_3 - material.base_rgb_3)
    if len(material.noise_phase_k):
        frequency_k = np.linalg.norm(material.noise_wave_k3, axis=1) / (2 * np.pi)
        attenuation_nk = np.exp(-((np.pi * footprint_n[:, None] * frequency_k) ** 2) / 3.0)
        wave_nk = np.sin(local_n3 @ material.noise_wave_k3.T + material.noise_phase_k) * attenuation_nk
        rgb_n3 = rgb_n3 + wave_nk @ material.noise_amplitude_k3
    return np.clip(rgb_n3, 0.0, 1.0)


def _hsv_rgb_3(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def _random_material(
    rng: np.random.Generator,
    base_rgb_3: np.ndarray,
    pattern: Pattern,
    pattern_frequency: float,
    noise_amplitude: float,
    local_T_world_44: np.ndarray,
    pattern_axis_3: np.ndarray | None = None,
) -> Material:
    """A material around `base_rgb_3` with noise of total amplitude `noise_amplitude`."""
    direction_k3 = rng.normal(size=(NOISE_TERMS, 3))
    direction_k3 /= np.linalg.norm(direction_k3, axis=1, keepdims=True)
    frequency_k = np.exp(rng.uniform(np.log(2.0), np.log(20.0), NOISE_TERMS))
    weight_k = rng.uniform(0.5, 1.0, NOISE_TERMS)
    tint_k3 = 1.0 + rng.uniform(-0.35, 0.35, (NOISE_TERMS, 3))
    blob_direction_k3 = rng.normal(size=(4, 3))
    blob_direction_k3 /= np.linalg.norm(blob_direction_k3, axis=1, keepdims=True)
    hue, saturation, value = colorsys.rgb_to_hsv(*base_rgb_3)
    accent_rgb_3 = _hsv_rgb_3(
        hue + rng.uniform(0.08, 0.5), min(1.0, saturation + rng.uniform(0.0, 0.4)), np.clip(value + rng.choice([-1, 1]) * rng.uniform(0.25, 0.45), 0.05, 0.95)
    )
    if pattern_axis_3 is None:
        pattern_axis_3 = np.eye(3)[rng.integers(3)]
    return Material(
        base_rgb_3=np.asarray(base_rgb_3, dtype=np.float64),
        accent_rgb_3=accent_rgb_3,
        pattern=pattern,
        pattern_frequency=pattern_frequency,
        pattern_axis_3=np.asarray(pattern_axis_3, dtype=np.float64),
        pattern_offset_3=rng.uniform(0.15, 0.35, 3),
        noise_wave_k3=direction_k3 * (2 * np.pi * frequency_k[:, None]),
        noise_phase_k=rng.uniform(0, 2 * np.pi, NOISE_TERMS),
        noise_amplitude_k3=(noise_amplitude * weight_k / weight_k.sum())[:, None] * tint_k3,
        blob_wave_k3=blob_direction_k3 * (2 * np.pi * rng.uniform(1.5, 4.0, (4, 1))),
        blob_phase_k=rng.uniform(0, 2 * np.pi, 4),
        local_T_world_44=local_T_world_44,
        salt=int(rng.integers(1 << 30)),
    )


def _flat_material(base_rgb_3: np.ndarray) -> Material:
    """One colour everywhere (textureless walls)."""
    return Material(
        base_rgb_3=base_rgb_3, accent_rgb_3=base_rgb_3, pattern="plain", pattern_frequency=1.0,
        pattern_axis_3=np.zeros(3), pattern_offset_3=np.zeros(3), noise_wave_k3=np.zeros((0, 3)),
        noise_phase_k=np.zeros(0), noise_amplitude_k3=np.zeros((0, 3)), blob_wave_k3=np.zeros((0, 3)),
        blob_phase_k=np.zeros(0), local_T_world_44=np.eye(4), salt=0,
    )


def _object_material(rng: np.random.Generator, local_T_world_44: np.ndarray) -> Material:
    """A furniture material: saturated base colour, noise, and one of the patterns."""
    base_rgb_3 = _hsv_rgb_3(rng.uniform(), rng.uniform(0.2, 0.75), rng.uniform(0.3, 0.85))
    pattern = rng.choice(["plain", "stripes", "checker", "speckle", "blobs"], p=[0.15, 0.2, 0.2, 0.25, 0.2])
    frequency = {"plain": 1.0, "stripes": rng.uniform(3, 9), "checker": rng.uniform(3, 8),
                 "speckle": rng.uniform(8, 16), "blobs": 1.0}[pattern]
    return _random_material(rng, base_rgb_3, pattern, frequency, rng.uniform(0.12, 0.25), local_T_world_44)


# ---------------------------------------------------------------------------------------
# Geometry


def _quad_part(corners_43: np.ndarray, material_id: int, subdivisions: int) -> _Part:
    """A planar quad (corners in order) split into a regular grid of 2^subdivisions cells a side."""
    steps = 2**subdivisions + 1
    a_g, b_g = np.meshgrid(np.linspace(0, 1, steps), np.linspace(0, 1, steps), indexing="ij")
    a_n, b_n = a_g.reshape(-1, 1), b_g.reshape(-1, 1)
    c0, c1, c2, c3 = corners_43
    vertices_v3 = (1 - a_n) * (1 - b_n) * c0 + a_n * (1 - b_n) * c1 + a_n * b_n * c2 + (1 - a_n) * b_n * c3
    index_g = np.arange(steps * steps).reshape(steps, steps)
    i00, i10 = index_g[:-1, :-1].reshape(-1), index_g[1:, :-1].reshape(-1)
    i11, i01 = index_g[1:, 1:].reshape(-1), index_g[:-1, 1:].reshape(-1)
    triangles_t3 = np.concatenate([np.stack([i00, i10, i11], 1), np.stack([i00, i11, i01], 1)])
    return _Part(vertices_v3, triangles_t3, material_id)


def _mesh_part(mesh: o3d.geometry.TriangleMesh, world_T_local_44: np.ndarray, material_id: int) -> _Part:
    vertices_v3 = np.asarray(mesh.vertices) @ world_T_local_44[:3, :3].T + world_T_local_44[:3, 3]
    return _Part(vertices_v3, np.asarray(mesh.triangles).copy(), material_id)


def _box_part(size_3, centre_3, world_T_object_44: np.ndarray, material_id: int) -> _Part:
    """A box of `size_3` metres centred at `centre_3` in the object frame."""
    mesh = o3d.geometry.TriangleMesh.create_box(*size_3).translate(np.asarray(centre_3) - np.asarray(size_3) / 2)
    return _mesh_part(mesh, world_T_object_44, material_id)


def _cylinder_part(radius: float, height: float, base_3, world_T_object_44: np.ndarray, material_id: int) -> _Part:
    """A closed upright cylinder standing on `base_3` in the object frame."""
    mesh = o3d.geometry.TriangleMesh.create_cylinder(radius, height, resolution=32, split=1)
    return _mesh_part(mesh.translate(np.asarray(base_3) + [0.0, 0.0, height / 2]), world_T_object_44, material_id)


def _yaw_pose_44(yaw: float, position_3: np.ndarray) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return make_pose_44(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), position_3)


def _room_shell(
    rng: np.random.Generator, size_3: np.ndarray, textureless: bool, materials: list[Material]
) -> list[_Part]:
    """Floor, ceiling and four walls (one maybe an accent wall) as a closed box."""
    hx, hy, height = size_3[0] / 2, size_3[1] / 2, size_3[2]
    wall_rgb_3 = _hsv_rgb_3(rng.uniform(), rng.uniform(0.05, 0.3), rng.uniform(0.6, 0.9))
    wall_pattern = rng.choice(["plain", "stripes", "blobs", "speckle"], p=[0.35, 0.25, 0.2, 0.2])
    vertical_3 = np.array([np.sqrt(0.5), np.sqrt(0.5), 0.0])
    wall = _random_material(
        rng, wall_rgb_3, wall_pattern, {"stripes": rng.uniform(2, 6), "speckle": rng.uniform(6, 12)}.get(wall_pattern, 1.0),
        rng.uniform(0.12, 0.22), np.eye(4), pattern_axis_3=vertical_3 if rng.uniform() < 0.6 else np.eye(3)[2],
    )
    accent = _random_material(
        rng, _hsv_rgb_3(rng.uniform(), rng.uniform(0.2, 0.6), rng.uniform(0.4, 0.8)), "stripes",
        rng.uniform(2, 6), rng.uniform(0.12, 0.22), np.eye(4), pattern_axis_3=vertical_3,
    )
    floor_pattern = rng.choice(["stripes", "checker", "speckle"])
    floor = _random_material(
        rng, _hsv_rgb_3(rng.uniform(0.03, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.65)), floor_pattern,
        {"stripes": rng.uniform(4, 8), "checker": rng.uniform(1.5, 4), "speckle": rng.uniform(10, 18)}[floor_pattern],
        rng.uniform(0.15, 0.3), np.eye(4), pattern_axis_3=np.eye(3)[rng.integers(2)],
    )
    ceiling = _random_material(rng, _hsv_rgb_3(rng.uniform(), 0.05, rng.uniform(0.8, 0.92)), "plain", 1.0,
                               rng.uniform(0.08, 0.14), np.eye(4))
    accent_wall = int(rng.integers(4)) if rng.uniform() < 0.5 else -1
    if textureless:
        wall, accent, floor, ceiling = (_flat_material(m.base_rgb_3) for m in (wall, accent, floor, ceiling))
    first = len(materials)
    materials.extend([wall, accent, floor, ceiling])
    c = np.array(
        [[-hx, -hy, 0], [hx, -hy, 0], [hx, hy, 0], [-hx, hy, 0], [-hx, -hy, height], [hx, -hy, height],
         [hx, hy, height], [-hx, hy, height]]
    )
    subdivisions = int(np.ceil(np.log2(max(size_3) / 0.2)))
    wall_corners = [c[[0, 1, 5, 4]], c[[1, 2, 6, 5]], c[[2, 3, 7, 6]], c[[3, 0, 4, 7]]]
    parts = [
        _quad_part(corners_43, first + (1 if k == accent_wall else 0), subdivisions)
        for k, corners_43 in enumerate(wall_corners)
    ]
    parts.append(_quad_part(c[[0, 3, 2, 1]], first + 2, subdivisions))
    parts.append(_quad_part(c[[4, 5, 6, 7]], first + 3, subdivisions))
    return parts


@dataclass
class _Footprint:
    """An oriented rectangle on the floor: centre (metres), half extents, yaw (radians)."""

    centre_2: np.ndarray
    half_2: np.ndarray
    yaw: float

    def corners_42(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        R_22 = np.array([[c, -s], [s, c]])
        signs_42 = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]])
        return self.centre_2 + (signs_42 * self.half_2) @ R_22.T

    def distance_n(self, points_n2: np.ndarray) -> np.ndarray:
        """Distance (metres) from points (N, 2) to the rectangle (0 inside)."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local_n2 = (points_n2 - self.centre_2) @ np.array([[c, -s], [s, c]])
        return np.linalg.norm(np.maximum(np.abs(local_n2) - self.half_2, 0.0), axis=1)

    def overlaps(self, other: _Footprint, gap: float) -> bool:
        """Whether the rectangles come closer than `gap` (separating-axis test)."""
        corners_a, corners_b = self.corners_42(), other.corners_42()
        for yaw in (self.yaw, other.yaw):
            axes_22 = np.array([[np.cos(yaw), np.sin(yaw)], [-np.sin(yaw), np.cos(yaw)]])
            proj_a, proj_b = corners_a @ axes_22.T, corners_b @ axes_22.T
            if np.any((proj_a.max(0) + gap < proj_b.min(0)) | (proj_b.max(0) + gap < proj_a.min(0))):
                return False
        return True


def _furniture_parts(
    rng: np.random.Generator, kind: str, size_3: np.ndarray, world_T_object_44: np.ndarray, materials: list[Material]
) -> tuple[list[_Part], int]:
    """Parts of one piece of furniture (object frame: footprint centred at the origin,
    standing on z = 0, front towards +y) and how many objects it counts as."""
    object_T_world_44 = invert_pose_44(world_T_object_44)

    def new_material() -> int:
        materials.append(_object_material(rng, object_T_world_44))
        return len(materials) - 1

    width, depth, height = size_3
    main = new_material()
    if kind == "box":
        parts = [_box_part(size_3, [0, 0, height / 2], world_T_object_44, main)]
        if rng.uniform() < 0.45:
            top_3 = size_3 * rng.uniform([0.45, 0.45, 0.3], [0.85, 0.85, 0.8])
            offset_2 = (size_3[:2] - top_3[:2]) / 2 * rng.uniform(-1, 1, 2)
            top_pose_44 = world_T_object_44 @ _yaw_pose_44(rng.uniform(-0.15, 0.15), np.r_[offset_2, height])
            parts.append(_box_part(top_3, [0, 0, top_3[2] / 2], top_pose_44, new_material()))
            return parts, 2
        return parts, 1
    if kind == "cylinder":
        return [_cylinder_part(width / 2, height, [0, 0, 0], world_T_object_44, main)], 1
    if kind == "table":
        legs = new_material()
        parts = [_box_part([width, depth, 0.04], [0, 0, height - 0.02], world_T_object_44, main)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                leg_centre = [sx * (width / 2 - 0.06), sy * (depth / 2 - 0.06), (height - 0.04) / 2]
                parts.append(_box_part([0.05, 0.05, height - 0.04], leg_centre, world_T_object_44, legs))
        if rng.uniform() < 0.6:
            item_xy = rng.uniform(-1, 1, 2) * (np.array([width, depth]) / 2 - 0.2)
            if rng.uniform() < 0.5:
                item_3 = rng.uniform([0.15, 0.15, 0.08], [0.35, 0.3, 0.35])
                parts.append(_box_part(item_3, np.r_[item_xy, height + item_3[2] / 2], world_T_object_44, new_material()))
            else:
                parts.append(_cylinder_part(rng.uniform(0.04, 0.12), rng.uniform(0.1, 0.35), np.r_[item_xy, height],
                                            world_T_object_44, new_material()))
            return parts, 2
        return parts, 1
    # Shelf: two sides, a back panel, boards, and rows of books on some boards.
    board = 0.02
    parts = [
        _box_part([board, depth, height], [sx * (width - board) / 2, 0, height / 2], world_T_object_44, main)
        for sx in (-1, 1)
    ]
    parts.append(_box_part([width - 2 * board, 0.01, height], [0, -depth / 2 + 0.005, height / 2], world_T_object_44, main))
    levels_n = np.linspace(0.05, height - board / 2, int(rng.integers(3, 6)))
    for level in levels_n:
        parts.append(_box_part([width - 2 * board, depth - 0.01, board], [0, 0.005, level], world_T_object_44, main))
    for lower, upper in zip(levels_n[:-1], levels_n[1:]):
        if rng.uniform() < 0.35:
            continue
        x = -width / 2 + board + rng.uniform(0.0, 0.1)
        while True:
            book_3 = np.array([rng.uniform(0.03, 0.08), rng.uniform(0.15, min(0.25, depth - 0.05)),
                               rng.uniform(0.4, 0.85) * (upper - lower - board)])
            if x + book_3[0] > width / 2 - board or rng.uniform() < 0.08:
                break
            book_centre = [x + book_3[0] / 2, 0.0, lower + board / 2 + book_3[2] / 2]
            parts.append(_box_part(book_3, book_centre, world_T_object_44, new_material()))
            x += book_3[0] + rng.uniform(0.0, 0.02)
    return parts, 1


def _furnish(
    rng: np.random.Generator, size_3: np.ndarray, path_xy_n2: np.ndarray, materials: list[Material]
) -> list[_Part]:
    """6-12 objects along the walls, clear of the camera path by `CAMERA_CLEARANCE_M`."""
    hx, hy = size_3[0] / 2, size_3[1] / 2
    target = int(rng.integers(6, 13))
    kinds = ["box", "table", "cylinder", "shelf"]
    size_low = {"box": [0.3, 0.3, 0.25], "table": [0.8, 0.5, 0.68], "cylinder": [0.2, 0.2, 0.3], "shelf": [0.6, 0.28, 1.2]}
    size_high = {"box": [1.0, 0.7, 1.0], "table": [1.5, 0.8, 0.78], "cylinder": [0.6, 0.6, 1.1], "shelf": [1.2, 0.4, 2.0]}
    # Wall k: inward normal and wall direction in the floor plane, half length, offset.
    walls = [((0, 1), (1, 0), hx, hy), ((-1, 0), (0, 1), hy, hx), ((0, -1), (-1, 0), hx, hy), ((1, 0), (0, -1), hy, hx)]
    footprints: list[_Footprint] = []
    parts: list[_Part] = []
    placed = 0
    for _ in range(400):
        if placed >= target:
            break
        kind = str(rng.choice(kinds, p=[0.35, 0.2, 0.25, 0.2]))
        size_3 = rng.uniform(size_low[kind], size_high[kind])
        if kind == "cylinder":
            size_3[1] = size_3[0]
        inward, along, half_length, offset = walls[int(rng.integers(4))]
        inward_2, along_2 = np.array(inward, float), np.array(along, float)
        gap = rng.uniform(0.01, 0.05) if kind == "shelf" else rng.uniform(0.03, 0.4)
        centre_2 = (-inward_2 * offset + inward_2 * (gap + size_3[1] / 2)
                    + along_2 * rng.uniform(-half_length, half_length))
        jitter = 0.0 if kind == "shelf" else rng.uniform(-0.2, 0.2)
        yaw = float(np.arctan2(inward_2[1], inward_2[0]) - np.pi / 2 + jitter)
        footprint = _Footprint(centre_2, size_3[:2] / 2, yaw)
        corners_42 = footprint.corners_42()
        inside = np.all(np.abs(corners_42) < np.array([hx, hy]) - 0.01)
        if (
            not inside
            or footprint.distance_n(path_xy_n2).min() < CAMERA_CLEARANCE_M
            or any(footprint.overlaps(other, 0.08) for other in footprints)
        ):
            continue
        world_T_object_44 = _yaw_pose_44(yaw, np.r_[centre_2, 0.0])
        new_parts, count = _furniture_parts(rng, kind, size_3, world_T_object_44, materials)
        footprints.append(footprint)
        parts.extend(new_parts)
        placed += count
    return parts


def _random_wiggle(rng: np.random.Generator, amplitude: float, cycles_low: int, cycles_high: int, terms: int) -> _Wiggle:
    """Sum of `terms` sines (cycles per loop in [low, high]) with amplitudes summing to `amplitude`."""
    weight_k = rng.uniform(0.5, 1.0, terms)
    return _Wiggle(amplitude * weight_k / weight_k.sum(), rng.integers(cycles_low, cycles_high + 1, terms),
                   rng.uniform(0, 2 * np.pi, terms))


def _sum_wiggles(*wiggles: _Wiggle) -> _Wiggle:
    return _Wiggle(*(np.concatenate(arrays) for arrays in zip(*((w.amplitude_k, w.cycles_k, w.phase_k) for w in wiggles))))


def _random_path(rng: np.random.Generator, size_3: np.ndarray) -> _CameraPath:
    """A hand-held loop: slow sway (a few cycles per loop) plus small tremor."""
    semi_axes_2 = np.array([np.clip(size_3[0] / 2 - 1.5, 0.45, 1.0), np.clip(size_3[1] / 2 - 1.5, 0.35, 0.9)])
    return _CameraPath(
        semi_axes_2=semi_axes_2,
        start_angle=float(rng.uniform(0, 2 * np.pi)),
        turn_sign=float(rng.choice([-1.0, 1.0])),
        height=float(rng.uniform(1.35, 1.55)),
        pitch=float(rng.uniform(-0.25, -0.08)),
        x=_sum_wiggles(_random_wiggle(rng, 0.1, 2, 5, 2), _random_wiggle(rng, 0.003, 20, 40, 2)),
        y=_sum_wiggles(_random_wiggle(rng, 0.1, 2, 5, 2), _random_wiggle(rng, 0.003, 20, 40, 2)),
        z=_sum_wiggles(_random_wiggle(rng, 0.12, 1, 4, 2), _random_wiggle(rng, 0.003, 20, 40, 2)),
        heading=_sum_wiggles(_random_wiggle(rng, 0.3, 2, 3, 2), _random_wiggle(rng, 0.004, 20, 40, 2)),
        pitch_wiggle=_sum_wiggles(_random_wiggle(rng, 0.12, 2, 5, 2), _random_wiggle(rng, 0.004, 20, 40, 2)),
        roll=_random_wiggle(rng, 0.04, 1, 4, 2),
    )


def _random_lights(rng: np.random.Generator, size_3: np.ndarray) -> list[Light]:
    """One or two lights under the ceiling, slightly warm or cool."""
    count = int(rng.integers(1, 3))
    lights = []
    for _ in range(count):
        position_3 = np.array([rng.uniform(-0.3, 0.3) * size_3[0], rng.uniform(-0.3, 0.3) * size_3[1],
                               size_3[2] - rng.uniform(0.3, 0.6)])
        warmth = rng.uniform()
        colour_3 = warmth * np.array([1.0, 0.92, 0.8]) + (1 - warmth) * np.array([0.85, 0.93, 1.0])
        lights.append(Light(position_3, colour_3 * rng.uniform(0.7, 1.0) / np.sqrt(count)))
    return lights


def build_room(spec: RoomSpec) -> Room:
    """The room, furniture, materials, lights and camera path of `spec` (deterministic per seed).

    Geometry, lights and path do not depend on `num_frames`, the image size or
    `textureless_walls`: the frames sample one loop of the same path.
    """
    if spec.num_frames < 1 or spec.width < 8 or spec.height < 8:
        raise ValueError(
            f"expected num_frames >= 1 and an image of at least 8x8 pixels, got {spec.num_frames} frames "
            f"of {spec.width}x{spec.height}"
        )
    rng = np.random.default_rng(spec.seed)
    size_3 = rng.uniform([4.0, 3.5, 2.5], [7.0, 6.0, 3.0])
    path = _random_path(rng, size_3)
    lights = _random_lights(rng, size_3)
    ambient_rgb_3 = rng.uniform(0.3, 0.42) * (1.0 + rng.uniform(-0.04, 0.04, 3))
    materials: list[Material] = []
    parts = _room_shell(rng, size_3, spec.textureless_walls, materials)
    dense_s_n = np.linspace(0.0, 1.0, 2048, endpoint=False)
    parts += _furnish(rng, size_3, path.eye_n3(dense_s_n)[:, :2], materials)
    offsets_p = np.cumsum([0] + [len(p.vertices_v3) for p in parts[:-1]])
    return Room(
        size_3=size_3,
        vertices_v3=np.concatenate([p.vertices_v3 for p in parts]),
        triangles_t3=np.concatenate([p.triangles_t3 + offset for p, offset in zip(parts, offsets_p)]),
        triangle_material_t=np.concatenate([np.full(len(p.triangles_t3), p.material_id) for p in parts]),
        materials=materials,
        lights=lights,
        ambient_rgb_3=ambient_rgb_3,
        camera=camera_for_size(spec.width, spec.height),
        world_T_cam_n44=path.world_T_cam_n44(np.arange(spec.num_frames) / spec.num_frames),
    )


# ---------------------------------------------------------------------------------------
# Rendering


class RoomRenderer:
    """Ray casts a `Room` through its camera: colour and z-depth of any camera pose."""

    def __init__(self, room: Room) -> None:
        self.room = room
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(
            o3d.core.Tensor(room.vertices_v3.astype(np.float32)), o3d.core.Tensor(room.triangles_t3.astype(np.uint32))
        )
        camera = room.camera
        v_hw, u_hw = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float64)
        # Rays with unit z in the camera frame: the hit parameter is the z-depth.
        self.rays_cam_n3 = np.stack(
            [(u_hw - camera.cx) / camera.fx, (v_hw - camera.cy) / camera.fy, np.ones_like(u_hw)], axis=-1
        ).reshape(-1, 3).astype(np.float32)
        self.ray_length_n = np.linalg.norm(self.rays_cam_n3, axis=1)

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
        rgb_n3 = self._albedo_n3(points_n3, self.room.triangle_material_t[triangle_n], footprint_n)
        rgb_n3 *= self._irradiance_n3(points_n3, normal_n3)
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

    def _irradiance_n3(self, points_n3: np.ndarray, normal_n3: np.ndarray) -> np.ndarray:
        """Ambient plus Lambertian point lights with falloff 1 / (1 + (d / 3 m)^2)."""
        irradiance_n3 = np.broadcast_to(self.room.ambient_rgb_3, points_n3.shape).copy()
        for light in self.room.lights:
            to_light_n3 = light.position_3 - points_n3
            distance_n = np.linalg.norm(to_light_n3, axis=1)
            cos_n = np.maximum(np.sum(to_light_n3 * normal_n3, axis=1) / distance_n, 0.0)
            irradiance_n3 += (cos_n / (1.0 + (distance_n / 3.0) ** 2))[:, None] * light.rgb_3
        return irradiance_n3


# ---------------------------------------------------------------------------------------
# Writing


def _write_image(path: Path, image: np.ndarray, params: list[int]) -> None:
    if not cv2.imwrite(str(path), image, params):
        raise OSError(f"{path}: could not write the image")


def _write_matrix(path: Path, matrix_44: np.ndarray) -> None:
    np.savetxt(path, matrix_44, fmt="%.9f")


_renderer: RoomRenderer | None = None
"""The room renderer of a worker process (a ray-casting scene cannot be pickled)."""


def _start_renderer(room: Room) -> None:
    global _renderer
    _renderer = RoomRenderer(room)


def _render_frame(job: tuple[int, np.ndarray, Path]) -> int:
    """Render frame `index` at `world_T_cam_44` and write its colour, depth and pose files."""
    index, world_T_cam_44, folder = job
    image_hw3, depth_hw = _renderer.render(world_T_cam_44)
    _write_image(folder / "color" / f"{index}.jpg", image_hw3[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    depth_mm_hw = np.clip(np.rint(depth_hw * 1000.0), 0, 65535).astype(np.uint16)
    _write_image(folder / "depth" / f"{index}.png", depth_mm_hw, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    _write_matrix(folder / "pose" / f"{index}.txt", world_T_cam_44)
    return index


def generate_room(spec: RoomSpec, out_dir: Path, progress: bool = True) -> Path:
    """Render `spec` into `out_dir` in ScanNet export layout and return `out_dir`.

    Writes color/{i}.jpg (JPEG quality 95), depth/{i}.png (uint16 millimetres of z-depth),
    pose/{i}.txt (4x4 camera-to-world), intrinsic/intrinsic_{color,depth}.txt (4x4, same K)
    and mesh.ply (world metres, vertex colours). Everything goes into `<out_dir>.partial`
    first, renamed when complete; a stale `.partial` from an interrupted run is replaced.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ValueError(f"{out_dir}: already exists; remove it or choose another output folder")
    partial_dir = out_dir.with_name(out_dir.name + ".partial")
    if partial_dir.exists():
        shutil.rmtree(partial_dir)
    for sub in ("color", "depth", "pose", "intrinsic"):
        (partial_dir / sub).mkdir(parents=True)
    room = build_room(spec)
    intrinsic_44 = np.eye(4)
    intrinsic_44[:3, :3] = room.camera.K_33
    _write_matrix(partial_dir / "intrinsic" / "intrinsic_color.txt", intrinsic_44)
    _write_matrix(partial_dir / "intrinsic" / "intrinsic_depth.txt", intrinsic_44)
    o3d.io.write_triangle_mesh(str(partial_dir / "mesh.ply"), room.legacy_mesh())
    world_T_cam_n44 = list(room.world_T_cam_n44)
    jobs = [(index, world_T_cam_44, partial_dir) for index, world_T_cam_44 in enumerate(world_T_cam_n44)]
    workers = min(os.cpu_count() or 1, 4)
    with multiprocessing.get_context().Pool(workers, initializer=_start_renderer, initargs=(room,)) as pool:
        rendered = pool.imap_unordered(_render_frame, jobs, chunksize=4)
        for _ in tqdm(rendered, total=len(jobs), desc=f"rendering {out_dir.name}", disable=not progress, unit="frame"):
            pass
    partial_dir.rename(out_dir)
    return out_dir


def ensure_room(name: str, sequences_dir: Path) -> Path:
    """`sequences_dir / name` for `name` = "synthetic/roomN[_textureless]", generated with seed N
    (default size and frame count) unless the folder already exists."""
    match = ROOM_NAME_PATTERN.fullmatch(name)
    if match is None:
        raise ValueError(f"{name}: expected a synthetic room name 'synthetic/roomN' or 'synthetic/roomN_textureless'")
    out_dir = Path(sequences_dir) / name
    if not out_dir.exists():
        seed = int(match.group(1))
        print(f"generating synthetic room '{name}' (seed {seed}) into {out_dir}", flush=True)
        generate_room(RoomSpec(seed=seed, textureless_walls=match.group(2) is not None), out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render a procedural furnished room in ScanNet export layout.")
    parser.add_argument("--seed", type=int, required=True, help="room seed (fixes geometry, textures and path)")
    parser.add_argument("--out", type=Path, help="output folder (default sequences/synthetic/roomN[_textureless])")
    parser.add_argument("--frames", type=int, default=300, help="frames along one loop of the camera path")
    parser.add_argument("--textureless-walls", action="store_true", help="flat colour on walls, floor and ceiling")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)
    suffix = "_textureless" if args.textureless_walls else ""
    out_dir = args.out or Path("sequences") / "synthetic" / f"room{args.seed}{suffix}"
    spec = RoomSpec(args.seed, args.frames, args.width, args.height, args.textureless_walls)
    start = time.perf_counter()
    generate_room(spec, out_dir)
    print(f"wrote {spec.num_frames} frames of {spec.width}x{spec.height} (color, depth, pose, intrinsic) and "
          f"mesh.ply to {out_dir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
