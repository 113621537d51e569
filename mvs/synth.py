"""Procedural furnished rooms rendered by ray casting, written in ScanNet export layout.

World frame: metres, +z up, the floor at z = 0 and the room centred on x = y = 0. Cameras
follow the project convention (x right, y down, z forward; `world_T_cam_44` maps camera
points to world points) and come from `look_at_world_T_cam_44` with world up +z, then a
small roll about the optical axis. This module builds the room (`RoomSpec` -> `Room`) and
writes its frames; textures live in `mvs/synth_textures.py`, the room's shell, furniture and
clutter in `mvs/synth_geometry.py`, camera paths in `mvs/synth_paths.py`, the training rooms'
variety and camera tour in `mvs/synth_variety.py` and `mvs/synth_tour.py`, and the renderer
(ray casting, shading, motion blur) in `mvs/synth_render.py`.

The default rooms' shading is view independent and without shadows (see
`mvs/synth_render.py`), so every view is exactly photo-consistent up to pixel sampling and
JPEG compression (and to motion blur, when asked for).

Training rooms (`variety`, see `mvs/synth_variety.py`) are closer to real ones: sizes from
a box room to a hall, clutter on the floor, faded wall textures, cast shadows, specular
highlights that move with the viewpoint, and a camera tour (`mvs/synth_tour.py`) of
close-ups and views across the room instead of the loop.

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

from mvs.synth_geometry import Footprint, Part, furnish, quad_part, room_shell, scatter_clutter
from mvs.synth_paths import Trajectory, plan_blank_wall, random_path
from mvs.synth_render import RoomRenderer, raycasting_scene
from mvs.synth_textures import Material, albedo_n3, flat_material
from mvs.synth_tour import FreeSpace, SurfaceSampler, TourPath, plan_tour
from mvs.synth_variety import (
    clutter_count, lamp, variety_rng, varied_ambient_rgb_3, varied_size_3, vary_materials,
)
from mvs.types import Camera

ROOM_NAME_PATTERN = re.compile(
    r"synthetic/room(\d+)(_textureless)?(?:_fast(\d+(?:\.\d+)?))?(?:_blur(\d+(?:\.\d+)?))?(_blankwall)?"
)
TARGET_WEIGHTS = [0.6, 0.25, 0.1, 0.05]
"""How often a training room's tour looks at furniture and clutter, walls, floor, ceiling."""


@dataclass
class RoomSpec:
    """What to generate: the seed fixes the room, furniture, lights, textures and path.

    `num_frames` samples one closed loop of the camera path (`speed` loops when `speed` > 1:
    the camera moves `speed` times farther per frame); `width` x `height` pixels.
    `textureless_walls` paints walls, floor and ceiling one flat colour (same geometry).
    `exposure` in [0, 1] is the fraction of the frame interval the shutter stays open
    (motion blur; 0 renders sharp frames). `blank_wall` adds the blank-wall detour.
    `variety` makes a training room (see the module docstring): another size, clutter,
    materials, lighting with shadows, and a camera tour in place of the loop (with which
    `speed`, `exposure` and `blank_wall` do not combine).
    """

    seed: int
    num_frames: int = 300
    width: int = 640
    height: int = 480
    textureless_walls: bool = False
    speed: float = 1.0
    exposure: float = 0.0
    blank_wall: bool = False
    variety: bool = False


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
    exposure_time: how long (loops) the shutter stays open, 0 for sharp frames; `shadows`:
    the lights cast shadows.
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
    trajectory: Trajectory | TourPath
    frame_times_n: np.ndarray
    exposure_time: float = 0.0
    shadows: bool = False

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
    if spec.variety and (spec.speed != 1 or spec.exposure > 0 or spec.blank_wall):
        raise ValueError("a room with variety takes its own camera tour: expected speed 1, no exposure, no blank wall")
    rng = np.random.default_rng(spec.seed)
    size_3 = rng.uniform([4.0, 3.5, 2.5], [7.0, 6.0, 3.0])
    extra_rng = variety_rng(spec.seed) if spec.variety else None
    if extra_rng is not None:
        size_3 = varied_size_3(extra_rng)
    path = random_path(rng, size_3)
    trajectory = Trajectory(path, plan_blank_wall(path, size_3) if spec.blank_wall else None)
    lights = _random_lights(rng, size_3)
    ambient_rgb_3 = rng.uniform(0.3, 0.42) * (1.0 + rng.uniform(-0.04, 0.04, 3))
    materials: list[Material] = []
    parts = room_shell(rng, size_3, spec.textureless_walls, materials)
    wall = materials[0]
    dense_t_n = np.linspace(0.0, trajectory.period, int(round(2048 * trajectory.period)), endpoint=False)
    footprints: list[Footprint] = []
    parts += furnish(rng, size_3, trajectory.eye_n3(dense_t_n)[:, :2], materials, footprints)
    if trajectory.detour is not None:
        materials.append(flat_material(wall.base_rgb_3, evenly_lit=True))
        parts.append(quad_part(trajectory.detour.panel_corners_43(), len(materials) - 1, 2))
    if extra_rng is not None:
        return _varied_room(spec, extra_rng, size_3, parts, materials, lights, footprints)
    return _assemble_room(spec, size_3, parts, materials, lights, ambient_rgb_3, trajectory)


def _varied_room(
    spec: RoomSpec, rng: np.random.Generator, size_3: np.ndarray, parts: list[Part], materials: list[Material],
    lights: list[Light], footprints: list[Footprint],
) -> Room:
    """The training room of `spec` (`variety`) from its shell and furniture: clutter, materials,
    a lamp, darker ambient light with shadows, and a tour of 8-14 keyposes (more in larger rooms)."""
    parts = parts + scatter_clutter(rng, size_3, clutter_count(rng, size_3), footprints, materials)
    vary_materials(rng, materials)
    space = FreeSpace(raycasting_scene(*_merged([(p.vertices_v3, p.triangles_t3) for p in parts])), size_3)
    # room_shell's parts: four walls, the floor, the ceiling; then the furniture and clutter.
    groups = [(p.vertices_v3, p.triangles_t3) for p in parts]
    targets = SurfaceSampler([_merged(groups[6:]), _merged(groups[:4]), groups[4], groups[5]], TARGET_WEIGHTS)
    keyposes = int(np.clip(round((size_3[0] + size_3[1]) / 1.5), 8, 14))
    tour = plan_tour(rng, space, targets, keyposes)
    candidates_n3 = rng.uniform([-size_3[0] / 2, -size_3[1] / 2, 0.8], [size_3[0] / 2, size_3[1] / 2, 1.9], (64, 3))
    lamp_light = lamp(rng, candidates_n3[space.free_n(candidates_n3, 0.3)])
    if lamp_light is not None:
        lights = lights + [Light(*lamp_light)]
    return _assemble_room(spec, size_3, parts, materials, lights, varied_ambient_rgb_3(rng), tour, shadows=True)


def _merged(groups: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One (vertices, triangles) of several."""
    offsets_g = np.cumsum([0] + [len(vertices_v3) for vertices_v3, _ in groups[:-1]])
    return (np.concatenate([vertices_v3 for vertices_v3, _ in groups]),
            np.concatenate([triangles_t3 + offset for (_, triangles_t3), offset in zip(groups, offsets_g)]))


def _assemble_room(
    spec: RoomSpec, size_3: np.ndarray, parts: list[Part], materials: list[Material], lights: list[Light],
    ambient_rgb_3: np.ndarray, trajectory: Trajectory | TourPath, shadows: bool = False,
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
        shadows=shadows,
    )


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
    # Fresh worker processes: a fork of a process whose thread pools (torch, Open3D) are running
    # can inherit a lock another thread held and wait on it forever.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_start_renderer, initargs=(room,)) as pool:
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
