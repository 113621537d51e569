"""Procedural furnished rooms rendered by ray casting, written in ScanNet export layout.

World frame: metres, +z up, the floor at z = 0 and the room centred on x = y = 0. Cameras
follow the project convention (x right, y down, z forward; `world_T_cam_44` maps camera
points to world points) and come from `look_at_world_T_cam_44` with world up +z, then a
small roll about the optical axis. Textures live in `mvs/synth_textures.py`, the room's
shell and furniture in `mvs/synth_geometry.py`, camera paths in `mvs/synth_paths.py`.

Appearance is a solid texture evaluated at the world hit point (view independent), lit
by an ambient term and one or two point lights with a Lambertian cosine and a mild
distance falloff, without shadows. Every view is therefore exactly photo-consistent up
to pixel sampling and JPEG compression (and to motion blur, when asked for).

Hard cases for tracking, on the same room and path:
- fast motion (`speed` k): the path is sampled k times farther apart, k loops per sequence;
- motion blur (`exposure`: the fraction of the frame interval the shutter is open): one render
  at mid-exposure is averaged along each pixel's image motion over the exposure (computed from
  its rendered depth and the poses at the exposure's start and end), the velocity-buffer method
  of real-time rendering. It costs one render and a few image resamplings per frame instead of
  a render per sample, and differs from averaging renders only where the streaks cross
  occlusion edges;
- a blank-wall stretch (`blank_wall`): half way round, the camera leaves the loop to face a
  uniform-colour panel on a wall from 0.35 m (evenly lit: one flat colour in the image), where
  nothing textured is in view, holds still, then comes back to the loop a stretch before where
  it left, to places seen before.

    python -m mvs.synth --seed 3 --out sequences/synthetic/room3 [--frames 300]
        [--textureless-walls] [--speed K] [--exposure F] [--blank-wall] [--width 640 --height 480]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
from tqdm import tqdm

from mvs.geometry import backproject_depth_hw3, invert_pose_44, project_n2, transform_n3
from mvs.synth_geometry import Part, furnish, quad_part, room_shell
from mvs.synth_paths import Trajectory, plan_blank_wall, random_path
from mvs.synth_textures import Material, albedo_n3, flat_material
from mvs.types import Camera

ROOM_NAME_PATTERN = re.compile(
    r"synthetic/room(\d+)(_textureless)?(?:_fast(\d+(?:\.\d+)?))?(?:_blur(\d+(?:\.\d+)?))?(_blankwall)?"
)
BLUR_SAMPLE_SPACING_PX = 0.75
"""Largest distance between the samples a motion streak is averaged from."""
MAX_BLUR_SAMPLES = 96


@dataclass
class RoomSpec:
    """What to generate: the seed fixes the room, furniture, lights, textures and path.

    `num_frames` samples one closed loop of the camera path (`speed` loops when `speed` > 1:
    the camera moves `speed` times farther per frame); `width` x `height` pixels.
    `textureless_walls` paints walls, floor and ceiling one flat colour (same geometry).
    `exposure` in [0, 1] is the fraction of the frame interval the shutter stays open
    (motion blur; 0 renders sharp frames). `blank_wall` adds the blank-wall detour.
    """

    seed: int
    num_frames: int = 300
    width: int = 640
    height: int = 480
    textureless_walls: bool = False
    speed: float = 1.0
    exposure: float = 0.0
    blank_wall: bool = False


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
    into `materials`), world_T_cam_n44: the camera-to-world pose of every frame (at the
    middle of its exposure), frame_times_n: the time of every frame on `trajectory` (loops),
    exposure_time: how long (loops) the shutter stays open, 0 for sharp frames.
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
    trajectory: Trajectory
    frame_times_n: np.ndarray
    exposure_time: float = 0.0

    def frames_facing_blank_wall(self) -> np.ndarray:
        """Positions of the frames taken while the camera holds still facing the blank panel."""
        return np.flatnonzero(self.trajectory.holding_n(self.frame_times_n))

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


def camera_for_size(width: int, height: int) -> Camera:
    """A ~63 degree horizontal field of view: fx = fy = 525 * width / 640, centred principal point."""
    focal = 525.0 * width / 640.0
    K_33 = np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])
    return Camera(K_33, width, height)


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

    Geometry, lights and path do not depend on `num_frames`, the image size, `speed`,
    `exposure` or `textureless_walls`: the frames sample the same path. `blank_wall` adds the
    panel and the detour, and keeps the furniture clear of the detour too.
    """
    if spec.num_frames < 1 or spec.width < 8 or spec.height < 8:
        raise ValueError(
            f"expected num_frames >= 1 and an image of at least 8x8 pixels, got {spec.num_frames} frames "
            f"of {spec.width}x{spec.height}"
        )
    if spec.speed <= 0 or not 0 <= spec.exposure <= 1:
        raise ValueError(f"expected speed > 0 and exposure in [0, 1], got speed {spec.speed} and exposure {spec.exposure}")
    rng = np.random.default_rng(spec.seed)
    size_3 = rng.uniform([4.0, 3.5, 2.5], [7.0, 6.0, 3.0])
    path = random_path(rng, size_3)
    trajectory = Trajectory(path, plan_blank_wall(path, size_3) if spec.blank_wall else None)
    lights = _random_lights(rng, size_3)
    ambient_rgb_3 = rng.uniform(0.3, 0.42) * (1.0 + rng.uniform(-0.04, 0.04, 3))
    materials: list[Material] = []
    parts = room_shell(rng, size_3, spec.textureless_walls, materials)
    wall = materials[0]
    dense_t_n = np.linspace(0.0, trajectory.period, int(round(2048 * trajectory.period)), endpoint=False)
    parts += furnish(rng, size_3, trajectory.eye_n3(dense_t_n)[:, :2], materials)
    if trajectory.detour is not None:
        materials.append(flat_material(wall.base_rgb_3, evenly_lit=True))
        parts.append(quad_part(trajectory.detour.panel_corners_43(), len(materials) - 1, 2))
    return _assemble_room(spec, size_3, parts, materials, lights, ambient_rgb_3, trajectory)


def _assemble_room(
    spec: RoomSpec, size_3: np.ndarray, parts: list[Part], materials: list[Material], lights: list[Light],
    ambient_rgb_3: np.ndarray, trajectory: Trajectory,
) -> Room:
    """The Room of `parts`, with `spec.num_frames` frames `spec.speed` loops along `trajectory`."""
    offsets_p = np.cumsum([0] + [len(p.vertices_v3) for p in parts[:-1]])
    frame_times_n = spec.speed * trajectory.period * np.arange(spec.num_frames) / spec.num_frames
    return Room(
        size_3=size_3,
        vertices_v3=np.concatenate([p.vertices_v3 for p in parts]),
        triangles_t3=np.concatenate([p.triangles_t3 + offset for p, offset in zip(parts, offsets_p)]),
        triangle_material_t=np.concatenate([np.full(len(p.triangles_t3), p.material_id) for p in parts]),
        materials=materials,
        lights=lights,
        ambient_rgb_3=ambient_rgb_3,
        camera=camera_for_size(spec.width, spec.height),
        world_T_cam_n44=trajectory.world_T_cam_n44(frame_times_n),
        trajectory=trajectory,
        frame_times_n=frame_times_n,
        exposure_time=spec.exposure * spec.speed * trajectory.period / spec.num_frames,
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
        self.evenly_lit_m = np.array([material.evenly_lit for material in room.materials])

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
        irradiance_n3 = self._irradiance_n3(points_n3, normal_n3)
        irradiance_n3[self.evenly_lit_m[material_n]] = 1.0
        rgb_n3 *= irradiance_n3
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


def _render_frame(job: tuple[int, Path]) -> int:
    """Render frame `index` of the worker's room and write its colour, depth and pose files."""
    index, folder = job
    image_hw3, depth_hw = _renderer.render_frame(index)
    _write_image(folder / "color" / f"{index}.jpg", image_hw3[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    depth_mm_hw = np.clip(np.rint(depth_hw * 1000.0), 0, 65535).astype(np.uint16)
    _write_image(folder / "depth" / f"{index}.png", depth_mm_hw, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    _write_matrix(folder / "pose" / f"{index}.txt", _renderer.room.world_T_cam_n44[index])
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
    jobs = [(index, partial_dir) for index in range(spec.num_frames)]
    workers = min(os.cpu_count() or 1, 4)
    with multiprocessing.get_context().Pool(workers, initializer=_start_renderer, initargs=(room,)) as pool:
        rendered = pool.imap_unordered(_render_frame, jobs, chunksize=4)
        for _ in tqdm(rendered, total=len(jobs), desc=f"rendering {out_dir.name}", disable=not progress, unit="frame"):
            pass
    partial_dir.rename(out_dir)
    return out_dir




def room_name(spec: RoomSpec) -> str:
    """"synthetic/roomN" with a suffix per option that changes the frames (size and count aside):
    "_textureless", "_fast<speed>", "_blur<exposure>", "_blankwall"; `room_spec` reads it back."""
    name = f"synthetic/room{spec.seed}" + ("_textureless" if spec.textureless_walls else "")
    name += f"_fast{spec.speed:g}" if spec.speed != 1 else ""
    name += f"_blur{spec.exposure:g}" if spec.exposure > 0 else ""
    return name + ("_blankwall" if spec.blank_wall else "")


def room_spec(name: str) -> RoomSpec:
    """The RoomSpec (default size and frame count) of a name written by `room_name`."""
    match = ROOM_NAME_PATTERN.fullmatch(name)
    if match is None:
        raise ValueError(
            f"{name}: expected a synthetic room name 'synthetic/roomN', optionally followed by _textureless, "
            "_fast<K>, _blur<F> and _blankwall in that order (e.g. 'synthetic/room0_fast4_blankwall')"
        )
    seed, textureless, speed, exposure, blank_wall = match.groups()
    return RoomSpec(seed=int(seed), textureless_walls=textureless is not None, speed=float(speed or 1.0),
                    exposure=float(exposure or 0.0), blank_wall=blank_wall is not None)


def ensure_room(name: str, sequences_dir: Path) -> Path:
    """`sequences_dir / name` for a room name of `room_name` ("synthetic/roomN[_textureless]...",
    seed N, default size and frame count), generated unless the folder already exists."""
    spec = room_spec(name)
    out_dir = Path(sequences_dir) / name
    if not out_dir.exists():
        print(f"generating synthetic room '{name}' (seed {spec.seed}) into {out_dir}", flush=True)
        generate_room(spec, out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render a procedural furnished room in ScanNet export layout.")
    parser.add_argument("--seed", type=int, required=True, help="room seed (fixes geometry, textures and path)")
    parser.add_argument("--out", type=Path, help="output folder (default sequences/synthetic/roomN plus the "
                                                 "options' suffixes, e.g. room0_fast4_blankwall)")
    parser.add_argument("--frames", type=int, default=300, help="frames along one loop of the camera path")
    parser.add_argument("--textureless-walls", action="store_true", help="flat colour on walls, floor and ceiling")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="fast motion: the camera moves K times farther per frame (K loops of the path)")
    parser.add_argument("--exposure", type=float, default=0.0,
                        help="motion blur: the shutter is open for this fraction of the frame interval (0 to 1)")
    parser.add_argument("--blank-wall", action="store_true",
                        help="half way round, face a blank panel from close up, then return to places seen before")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)
    spec = RoomSpec(args.seed, args.frames, args.width, args.height, args.textureless_walls, args.speed,
                    args.exposure, args.blank_wall)
    out_dir = args.out or Path("sequences") / room_name(spec)
    start = time.perf_counter()
    room = generate_room(spec, out_dir)
    blank = build_room(spec).frames_facing_blank_wall() if spec.blank_wall else []
    stretch = f"; frames {blank[0]}-{blank[-1]} face the blank panel" if len(blank) else ""
    print(f"wrote {spec.num_frames} frames of {spec.width}x{spec.height} (color, depth, pose, intrinsic) and "
          f"mesh.ply to {room} in {time.perf_counter() - start:.1f} s{stretch}")


if __name__ == "__main__":
    main()
