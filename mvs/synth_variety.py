"""What makes a training room (`RoomSpec.variety`) closer to real rooms than the default ones.

Drawn from a random stream of its own (`variety_rng`), so a room without variety draws
exactly what it always did:
- room extents log-uniform from a 2.8 m box room to a 12 x 9 m hall, so views reach from
  arm's length to ~10 m (with the tour of `mvs/synth_tour.py`);
- clutter anywhere on the floor (`synth_geometry.scatter_clutter`), more in larger rooms;
- near-textureless walls and ceilings in half the rooms (their texture faded to 3-30 %),
  as painted walls are;
- glossy floors and furniture: Blinn-Phong highlights, which move with the viewpoint;
- darker ambient light, cast shadows, and sometimes a lamp at table or standing height.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mvs.synth_textures import Material

VARIETY_STREAM = 7919
"""Second word of the seed of the variety stream: np.random.default_rng([seed, VARIETY_STREAM])."""
SHELL_MATERIALS = 4
"""`room_shell` puts wall, accent wall, floor and ceiling first in the material list."""


def variety_rng(seed: int) -> np.random.Generator:
    """The random stream of a room's variety, independent of the room's own stream."""
    return np.random.default_rng([seed, VARIETY_STREAM])


def varied_size_3(rng: np.random.Generator) -> np.ndarray:
    """Room extents (x, y, z) in metres: x log-uniform in [2.8, 12], y in [2.8, 9], z in [2.4, 3.6]."""
    low_3, high_3 = np.log([2.8, 2.8, 2.4]), np.log([12.0, 9.0, 3.6])
    return np.exp(rng.uniform(low_3, high_3))


def clutter_count(rng: np.random.Generator, size_3: np.ndarray) -> int:
    """Pieces of clutter for a room: about one per 4 square metres of floor, 2 to 20."""
    return int(np.clip(rng.poisson(size_3[0] * size_3[1] / 4.0), 2, 20))


def vary_materials(rng: np.random.Generator, materials: list[Material]) -> None:
    """In place: fade the texture of walls and ceiling in half the rooms, and make the floor
    and each furniture material glossy with probability 0.4."""
    if rng.uniform() < 0.5:
        fade = rng.uniform(0.03, 0.3)
        for k in (0, 1, 3):
            materials[k] = dataclasses.replace(materials[k], noise_amplitude_k3=materials[k].noise_amplitude_k3 * fade)
    for k in range(2, len(materials)):
        if k != 3 and not materials[k].evenly_lit and rng.uniform() < 0.4:
            specular = float(rng.uniform(0.1, 0.6))
            shininess = float(np.exp(rng.uniform(np.log(8), np.log(120))))
            materials[k] = dataclasses.replace(materials[k], specular=specular, shininess=shininess)


def varied_ambient_rgb_3(rng: np.random.Generator) -> np.ndarray:
    """Ambient light for a room with shadows: 0.18-0.35, slightly tinted."""
    return rng.uniform(0.18, 0.35) * (1.0 + rng.uniform(-0.05, 0.05, 3))


def lamp(rng: np.random.Generator, free_points_n3: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """With probability 0.6 a warm lamp (position, RGB intensity) at one of `free_points_n3`
    (candidate positions known to be free), else None."""
    if rng.uniform() >= 0.6 or len(free_points_n3) == 0:
        return None
    position_3 = free_points_n3[rng.integers(len(free_points_n3))]
    return position_3, np.array([1.0, 0.88, 0.7]) * rng.uniform(0.3, 0.7)
