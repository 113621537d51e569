"""Solid textures of the synthetic rooms: materials evaluated at world points.

A material's albedo is a function of the 3D point (view independent), so every view of a
synthetic room is photo-consistent. Patterns are softened by the pixel footprint, a
box-filter approximation against aliasing.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Literal

import numpy as np

MIN_EDGE_WIDTH_M = 0.003
NOISE_TERMS = 6

Pattern = Literal["plain", "stripes", "checker", "speckle", "blobs"]


@dataclass(frozen=True)
class Material:
    """A solid texture: albedo (RGB in [0, 1]) as a function of a world point.

    Coordinates are taken in the object's frame (`local_T_world_44`), so patterns follow
    the object. Noise is a sum of sinusoids with wave vectors `noise_wave_k3` (radians per
    metre), phases `noise_phase_k` and RGB amplitudes `noise_amplitude_k3`. The pattern
    mixes `base_rgb_3` towards `accent_rgb_3`; `pattern_frequency` is in cycles per metre,
    `pattern_offset_3` in cycles, `blob_wave_k3` / `blob_phase_k` shape the blobs.
    An `evenly_lit` surface shows its albedo as it is, whatever the lights (a uniform
    colour stays one flat colour in the image, without shading gradients). `specular` is
    the strength of a Blinn-Phong highlight of exponent `shininess` (0: matte, the default,
    and then every view of the surface agrees).
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
    evenly_lit: bool = False
    specular: float = 0.0
    shininess: float = 30.0


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


def hsv_rgb_3(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def random_material(
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
    accent_rgb_3 = hsv_rgb_3(
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


def flat_material(base_rgb_3: np.ndarray, evenly_lit: bool = False) -> Material:
    """One colour everywhere (textureless walls; a blank panel when `evenly_lit`)."""
    return Material(
        base_rgb_3=base_rgb_3, accent_rgb_3=base_rgb_3, pattern="plain", pattern_frequency=1.0,
        pattern_axis_3=np.zeros(3), pattern_offset_3=np.zeros(3), noise_wave_k3=np.zeros((0, 3)),
        noise_phase_k=np.zeros(0), noise_amplitude_k3=np.zeros((0, 3)), blob_wave_k3=np.zeros((0, 3)),
        blob_phase_k=np.zeros(0), local_T_world_44=np.eye(4), salt=0, evenly_lit=evenly_lit,
    )


def object_material(rng: np.random.Generator, local_T_world_44: np.ndarray) -> Material:
    """A furniture material: saturated base colour, noise, and one of the patterns."""
    base_rgb_3 = hsv_rgb_3(rng.uniform(), rng.uniform(0.2, 0.75), rng.uniform(0.3, 0.85))
    pattern = rng.choice(["plain", "stripes", "checker", "speckle", "blobs"], p=[0.15, 0.2, 0.2, 0.25, 0.2])
    frequency = {"plain": 1.0, "stripes": rng.uniform(3, 9), "checker": rng.uniform(3, 8),
                 "speckle": rng.uniform(8, 16), "blobs": 1.0}[pattern]
    return random_material(rng, base_rgb_3, pattern, frequency, rng.uniform(0.12, 0.25), local_T_world_44)
