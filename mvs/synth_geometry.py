"""Geometry of the synthetic rooms: the shell and the furniture along the walls, as closed
triangle parts in world metres (+z up, floor at z = 0, room centred on x = y = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d

from mvs.geometry import invert_pose_44, make_pose_44
from mvs.synth_textures import Material, flat_material, hsv_rgb_3, object_material, random_material

CAMERA_CLEARANCE_M = 0.75


@dataclass
class Part:
    """One closed piece of geometry in world metres and the index of its material."""

    vertices_v3: np.ndarray
    triangles_t3: np.ndarray
    material_id: int


def quad_part(corners_43: np.ndarray, material_id: int, subdivisions: int) -> Part:
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
    return Part(vertices_v3, triangles_t3, material_id)


def mesh_part(mesh: o3d.geometry.TriangleMesh, world_T_local_44: np.ndarray, material_id: int) -> Part:
    vertices_v3 = np.asarray(mesh.vertices) @ world_T_local_44[:3, :3].T + world_T_local_44[:3, 3]
    return Part(vertices_v3, np.asarray(mesh.triangles).copy(), material_id)


def box_part(size_3, centre_3, world_T_object_44: np.ndarray, material_id: int) -> Part:
    """A box of `size_3` metres centred at `centre_3` in the object frame."""
    mesh = o3d.geometry.TriangleMesh.create_box(*size_3).translate(np.asarray(centre_3) - np.asarray(size_3) / 2)
    return mesh_part(mesh, world_T_object_44, material_id)


def cylinder_part(radius: float, height: float, base_3, world_T_object_44: np.ndarray, material_id: int) -> Part:
    """A closed upright cylinder standing on `base_3` in the object frame."""
    mesh = o3d.geometry.TriangleMesh.create_cylinder(radius, height, resolution=32, split=1)
    return mesh_part(mesh.translate(np.asarray(base_3) + [0.0, 0.0, height / 2]), world_T_object_44, material_id)


def yaw_pose_44(yaw: float, position_3: np.ndarray) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return make_pose_44(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), position_3)


def room_shell(
    rng: np.random.Generator, size_3: np.ndarray, textureless: bool, materials: list[Material]
) -> list[Part]:
    """Floor, ceiling and four walls (one maybe an accent wall) as a closed box."""
    hx, hy, height = size_3[0] / 2, size_3[1] / 2, size_3[2]
    wall_rgb_3 = hsv_rgb_3(rng.uniform(), rng.uniform(0.05, 0.3), rng.uniform(0.6, 0.9))
    wall_pattern = rng.choice(["plain", "stripes", "blobs", "speckle"], p=[0.35, 0.25, 0.2, 0.2])
    vertical_3 = np.array([np.sqrt(0.5), np.sqrt(0.5), 0.0])
    wall = random_material(
        rng, wall_rgb_3, wall_pattern, {"stripes": rng.uniform(2, 6), "speckle": rng.uniform(6, 12)}.get(wall_pattern, 1.0),
        rng.uniform(0.12, 0.22), np.eye(4), pattern_axis_3=vertical_3 if rng.uniform() < 0.6 else np.eye(3)[2],
    )
    accent = random_material(
        rng, hsv_rgb_3(rng.uniform(), rng.uniform(0.2, 0.6), rng.uniform(0.4, 0.8)), "stripes",
        rng.uniform(2, 6), rng.uniform(0.12, 0.22), np.eye(4), pattern_axis_3=vertical_3,
    )
    floor_pattern = rng.choice(["stripes", "checker", "speckle"])
    floor = random_material(
        rng, hsv_rgb_3(rng.uniform(0.03, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.65)), floor_pattern,
        {"stripes": rng.uniform(4, 8), "checker": rng.uniform(1.5, 4), "speckle": rng.uniform(10, 18)}[floor_pattern],
        rng.uniform(0.15, 0.3), np.eye(4), pattern_axis_3=np.eye(3)[rng.integers(2)],
    )
    ceiling = random_material(rng, hsv_rgb_3(rng.uniform(), 0.05, rng.uniform(0.8, 0.92)), "plain", 1.0,
                               rng.uniform(0.08, 0.14), np.eye(4))
    accent_wall = int(rng.integers(4)) if rng.uniform() < 0.5 else -1
    if textureless:
        wall, accent, floor, ceiling = (flat_material(m.base_rgb_3) for m in (wall, accent, floor, ceiling))
    first = len(materials)
    materials.extend([wall, accent, floor, ceiling])
    c = np.array(
        [[-hx, -hy, 0], [hx, -hy, 0], [hx, hy, 0], [-hx, hy, 0], [-hx, -hy, height], [hx, -hy, height],
         [hx, hy, height], [-hx, hy, height]]
    )
    subdivisions = int(np.ceil(np.log2(max(size_3) / 0.2)))
    wall_corners = [c[[0, 1, 5, 4]], c[[1, 2, 6, 5]], c[[2, 3, 7, 6]], c[[3, 0, 4, 7]]]
    parts = [
        quad_part(corners_43, first + (1 if k == accent_wall else 0), subdivisions)
        for k, corners_43 in enumerate(wall_corners)
    ]
    parts.append(quad_part(c[[0, 3, 2, 1]], first + 2, subdivisions))
    parts.append(quad_part(c[[4, 5, 6, 7]], first + 3, subdivisions))
    return parts


@dataclass
class Footprint:
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

    def overlaps(self, other: Footprint, gap: float) -> bool:
        """Whether the rectangles come closer than `gap` (separating-axis test)."""
        corners_a, corners_b = self.corners_42(), other.corners_42()
        for yaw in (self.yaw, other.yaw):
            axes_22 = np.array([[np.cos(yaw), np.sin(yaw)], [-np.sin(yaw), np.cos(yaw)]])
            proj_a, proj_b = corners_a @ axes_22.T, corners_b @ axes_22.T
            if np.any((proj_a.max(0) + gap < proj_b.min(0)) | (proj_b.max(0) + gap < proj_a.min(0))):
                return False
        return True


def furniture_parts(
    rng: np.random.Generator, kind: str, size_3: np.ndarray, world_T_object_44: np.ndarray, materials: list[Material]
) -> tuple[list[Part], int]:
    """Parts of one piece of furniture (object frame: footprint centred at the origin,
    standing on z = 0, front towards +y) and how many objects it counts as."""
    object_T_world_44 = invert_pose_44(world_T_object_44)

    def new_material() -> int:
        materials.append(object_material(rng, object_T_world_44))
        return len(materials) - 1

    width, depth, height = size_3
    main = new_material()
    if kind == "box":
        parts = [box_part(size_3, [0, 0, height / 2], world_T_object_44, main)]
        if rng.uniform() < 0.45:
            top_3 = size_3 * rng.uniform([0.45, 0.45, 0.3], [0.85, 0.85, 0.8])
            offset_2 = (size_3[:2] - top_3[:2]) / 2 * rng.uniform(-1, 1, 2)
            top_pose_44 = world_T_object_44 @ yaw_pose_44(rng.uniform(-0.15, 0.15), np.r_[offset_2, height])
            parts.append(box_part(top_3, [0, 0, top_3[2] / 2], top_pose_44, new_material()))
            return parts, 2
        return parts, 1
    if kind == "cylinder":
        return [cylinder_part(width / 2, height, [0, 0, 0], world_T_object_44, main)], 1
    if kind == "table":
        legs = new_material()
        parts = [box_part([width, depth, 0.04], [0, 0, height - 0.02], world_T_object_44, main)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                leg_centre = [sx * (width / 2 - 0.06), sy * (depth / 2 - 0.06), (height - 0.04) / 2]
                parts.append(box_part([0.05, 0.05, height - 0.04], leg_centre, world_T_object_44, legs))
        if rng.uniform() < 0.6:
            item_xy = rng.uniform(-1, 1, 2) * (np.array([width, depth]) / 2 - 0.2)
            if rng.uniform() < 0.5:
                item_3 = rng.uniform([0.15, 0.15, 0.08], [0.35, 0.3, 0.35])
                parts.append(box_part(item_3, np.r_[item_xy, height + item_3[2] / 2], world_T_object_44, new_material()))
            else:
                parts.append(cylinder_part(rng.uniform(0.04, 0.12), rng.uniform(0.1, 0.35), np.r_[item_xy, height],
                                            world_T_object_44, new_material()))
            return parts, 2
        return parts, 1
    # Shelf: two sides, a back panel, boards, and rows of books on some boards.
    board = 0.02
    parts = [
        box_part([board, depth, height], [sx * (width - board) / 2, 0, height / 2], world_T_object_44, main)
        for sx in (-1, 1)
    ]
    parts.append(box_part([width - 2 * board, 0.01, height], [0, -depth / 2 + 0.005, height / 2], world_T_object_44, main))
    levels_n = np.linspace(0.05, height - board / 2, int(rng.integers(3, 6)))
    for level in levels_n:
        parts.append(box_part([width - 2 * board, depth - 0.01, board], [0, 0.005, level], world_T_object_44, main))
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
            parts.append(box_part(book_3, book_centre, world_T_object_44, new_material()))
            x += book_3[0] + rng.uniform(0.0, 0.02)
    return parts, 1


def furnish(
    rng: np.random.Generator, size_3: np.ndarray, path_xy_n2: np.ndarray, materials: list[Material],
    footprints: list[Footprint] | None = None,
) -> list[Part]:
    """6-12 objects along the walls, clear of the camera path by `CAMERA_CLEARANCE_M`, and of
    `footprints` when given (the new pieces' footprints are appended to it)."""
    footprints = [] if footprints is None else footprints
    hx, hy = size_3[0] / 2, size_3[1] / 2
    target = int(rng.integers(6, 13))
    kinds = ["box", "table", "cylinder", "shelf"]
    size_low = {"box": [0.3, 0.3, 0.25], "table": [0.8, 0.5, 0.68], "cylinder": [0.2, 0.2, 0.3], "shelf": [0.6, 0.28, 1.2]}
    size_high = {"box": [1.0, 0.7, 1.0], "table": [1.5, 0.8, 0.78], "cylinder": [0.6, 0.6, 1.1], "shelf": [1.2, 0.4, 2.0]}
    # Wall k: inward normal and wall direction in the floor plane, half length, offset.
    walls = [((0, 1), (1, 0), hx, hy), ((-1, 0), (0, 1), hy, hx), ((0, -1), (-1, 0), hx, hy), ((1, 0), (0, -1), hy, hx)]
    parts: list[Part] = []
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
        footprint = Footprint(centre_2, size_3[:2] / 2, yaw)
        corners_42 = footprint.corners_42()
        inside = np.all(np.abs(corners_42) < np.array([hx, hy]) - 0.01)
        if (
            not inside
            or footprint.distance_n(path_xy_n2).min() < CAMERA_CLEARANCE_M
            or any(footprint.overlaps(other, 0.08) for other in footprints)
        ):
            continue
        world_T_object_44 = yaw_pose_44(yaw, np.r_[centre_2, 0.0])
        new_parts, count = furniture_parts(rng, kind, size_3, world_T_object_44, materials)
        footprints.append(footprint)
        parts.extend(new_parts)
        placed += count
    return parts


CLUTTER_SIZE_RANGES = {
    "table": ([0.6, 0.45, 0.42], [1.6, 0.9, 0.8]),
    "box": ([0.25, 0.25, 0.2], [0.8, 0.7, 0.9]),
    "small box": ([0.08, 0.08, 0.06], [0.3, 0.3, 0.25]),
    "cylinder": ([0.1, 0.1, 0.15], [0.5, 0.5, 1.0]),
}
"""Least and greatest (width, depth, height) of the pieces `scatter_clutter` places, metres."""


def scatter_clutter(
    rng: np.random.Generator, size_3: np.ndarray, count: int, footprints: list[Footprint], materials: list[Material],
    gap: float = 0.35,
) -> list[Part]:
    """`count` pieces anywhere on the floor, at any yaw: tables (often with an item on top),
    boxes (sometimes stacked), small boxes, cylinders; `gap` metres clear of `footprints`
    (extended with theirs) and 0.1 m of the walls."""
    hx, hy = size_3[0] / 2, size_3[1] / 2
    kinds = list(CLUTTER_SIZE_RANGES)
    parts: list[Part] = []
    placed = 0
    for _ in range(100 * count):
        if placed >= count:
            break
        kind = str(rng.choice(kinds, p=[0.3, 0.3, 0.2, 0.2]))
        extents_3 = rng.uniform(*CLUTTER_SIZE_RANGES[kind])
        if kind == "cylinder":
            extents_3[1] = extents_3[0]
        footprint = Footprint(rng.uniform([-hx, -hy], [hx, hy]), extents_3[:2] / 2, float(rng.uniform(-np.pi, np.pi)))
        if not np.all(np.abs(footprint.corners_42()) < np.array([hx, hy]) - 0.1) or any(
            footprint.overlaps(other, gap) for other in footprints
        ):
            continue
        world_T_object_44 = yaw_pose_44(footprint.yaw, np.r_[footprint.centre_2, 0.0])
        new_parts, _ = furniture_parts(rng, "box" if kind == "small box" else kind, extents_3, world_T_object_44, materials)
        footprints.append(footprint)
        parts.extend(new_parts)
        placed += 1
    return parts
