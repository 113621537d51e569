"""Training samples for the learned depth model: synthetic rooms rendered and cached, then
references with two sources drawn from them, each view augmented on its own.

Rooms come from `mvs.synth` (with `RoomSpec.variety` for the training rooms closer to real
ones); their frames are cached as .npy arrays and memory-mapped. A sample pairs a reference
with two sources chosen as the pipeline chooses them (`slam.keyframes.choose_sources`),
their preferred pose distance drawn per sample, their overlap measured at the reference's
true depths; then each of the three views gets its own exposure, white balance, gamma,
vignetting, shading, blur, noise and JPEG, and each source a rolling-shutter skew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from mvs.geometry import invert_pose_44, make_pose_44
from mvs.io.layout import open_sequence
from mvs.synth import RoomSpec, generate_room
from mvs.types import Camera
from slam.keyframes import KeyframeConfig, choose_sources

DEPTH_RANGE_EDGES_M = (0.3, 1.0, 2.0, 4.0, 10.0)
"""Edges of the depth ranges `depth_range_shares` reports (metres)."""


@dataclass
class AugmentConfig:
    """Per-frame photometric augmentation (images in [0, 1]) and pose noise.

    gain_range: exposure gain; gamma_range: gamma; channel_gain: +- per-channel gain (white
    balance); offset: +- brightness offset; noise_sigma_max: Gaussian noise std;
    blur_probability, blur_sigma_range (pixels); motion_blur_probability,
    motion_blur_length_range (pixels); jpeg_probability, jpeg_quality_range;
    vignetting_probability, vignetting_max (darkening at the image corners);
    shading_probability, shading_amplitude: a smooth random gain field (+- amplitude over a
    4 x 3 grid, bicubic), light that changes across the image and from view to view as real
    shading and specular sheen do; rolling_shutter_probability, rolling_shutter_max_px: a
    source image's rows shifted in proportion to their distance from the middle row, up to
    this many pixels at the top and bottom rows in a random direction, as a rolling shutter
    records a moving camera (sources only: the reference's depth stays exact);
    pose_noise_probability, pose_noise_deg, pose_noise_m: Gaussian noise on each
    reference-to-source transform. Every view draws its own values.
    """

    gain_range: tuple[float, float] = (0.7, 1.4)
    gamma_range: tuple[float, float] = (0.8, 1.25)
    channel_gain: float = 0.1
    offset: float = 0.05
    noise_sigma_max: float = 0.02
    blur_probability: float = 0.3
    blur_sigma_range: tuple[float, float] = (0.3, 1.2)
    motion_blur_probability: float = 0.15
    motion_blur_length_range: tuple[int, int] = (3, 7)
    jpeg_probability: float = 0.5
    jpeg_quality_range: tuple[int, int] = (40, 95)
    vignetting_probability: float = 0.3
    vignetting_max: float = 0.3
    shading_probability: float = 0.5
    shading_amplitude: float = 0.2
    rolling_shutter_probability: float = 0.3
    rolling_shutter_max_px: float = 2.0
    pose_noise_probability: float = 0.5
    pose_noise_deg: float = 0.3
    pose_noise_m: float = 0.005


@dataclass
class SamplingConfig:
    """How sources are paired with a reference (see `slam.keyframes.KeyframeConfig`).

    Pose distances in [min_source_distance, max_source_distance], the preferred distance
    drawn uniformly from `optimal_distance_range` per training sample (its middle for
    validation); view angles up to `max_view_angle_deg`; a source must see `min_overlap` of
    the reference's view at the reference's true depths (its quartiles) when
    `overlap_at_true_depth`, else at the pipeline's fixed `overlap_depths`.
    balance_edges_m, balance_max_ratio: training references are drawn so that their median
    true depths spread evenly over the ranges between these edges (metres), no frame more
    than `balance_max_ratio` times as likely as another (`balance_references`); no edges:
    every frame alike.
    """

    min_source_distance: float = 0.05
    max_source_distance: float = 0.8
    optimal_distance_range: tuple[float, float] = (0.1, 0.6)
    max_view_angle_deg: float = 30.0
    min_overlap: float = 0.5
    overlap_at_true_depth: bool = True
    balance_edges_m: tuple[float, ...] = (0.3, 0.6, 1.2, 2.4, 4.8, 10.0)
    balance_max_ratio: float = 4.0


@dataclass
class RoomData:
    """A rendered room's frames held as (memory-mapped) arrays.

    images_nhw3: uint8 RGB; depths_nhw: uint16 millimetres of z-depth (0 = nothing);
    world_T_cam_n44: camera-to-world poses; camera: the intrinsics of the images;
    reference_weights_n: how likely each frame is drawn as a reference (None: uniformly).
    """

    images_nhw3: np.ndarray
    depths_nhw: np.ndarray
    world_T_cam_n44: np.ndarray
    camera: Camera
    reference_weights_n: np.ndarray | None = None


@dataclass
class Sample:
    """One training example at the working resolution.

    ref_image_3hw, src_images_n3hw: RGB in [0, 1]; K_33: intrinsics (pixels);
    src_T_ref_n44: reference-to-source transforms (metres); depth_1hw: z-depth in metres
    of the reference, 0 where unknown.
    """

    ref_image_3hw: torch.Tensor
    src_images_n3hw: torch.Tensor
    K_33: torch.Tensor
    src_T_ref_n44: torch.Tensor
    depth_1hw: torch.Tensor


@dataclass
class Batch:
    """Samples stacked along a batch dimension (see `Sample` for units)."""

    ref_image_b3hw: torch.Tensor
    src_images_bn3hw: torch.Tensor
    K_b33: torch.Tensor
    src_T_ref_bn44: torch.Tensor
    depth_b1hw: torch.Tensor


def room_dir_name(spec: RoomSpec) -> str:
    """Cache folder of a training room: seed, options, size and frame count."""
    suffix = ("_textureless" if spec.textureless_walls else "") + ("_varied" if spec.variety else "")
    return f"room{spec.seed}{suffix}_{spec.width}x{spec.height}_{spec.num_frames}"


def prepare_room(spec: RoomSpec, data_dir: Path) -> RoomData:
    """Render the room under `data_dir` unless present, cache its frames as .npy unless
    cached, and map them."""
    room_dir = Path(data_dir) / room_dir_name(spec)
    if not room_dir.exists():
        print(f"rendering training room {room_dir}", flush=True)
        generate_room(spec, room_dir)
    cache_dir = room_dir / "cache"
    if not (cache_dir / "world_T_cam_n44.npy").exists():
        sequence = open_sequence(str(room_dir.resolve()))
        frames = list(sequence)
        cache_dir.mkdir(exist_ok=True)
        np.save(cache_dir / "images_nhw3.npy", np.stack([f.image_hw3 for f in frames]))
        depths_mm = np.stack([np.rint(f.depth_hw * 1000.0) for f in frames]).clip(0, 65535).astype(np.uint16)
        np.save(cache_dir / "depths_nhw.npy", depths_mm)
        np.save(cache_dir / "K_33.npy", sequence.camera.K_33)
        np.save(cache_dir / "world_T_cam_n44.npy", np.stack([f.world_T_cam_44 for f in frames]))
    images_nhw3 = np.load(cache_dir / "images_nhw3.npy", mmap_mode="r")
    return RoomData(
        images_nhw3=images_nhw3,
        depths_nhw=np.load(cache_dir / "depths_nhw.npy", mmap_mode="r"),
        world_T_cam_n44=np.load(cache_dir / "world_T_cam_n44.npy"),
        camera=Camera(np.load(cache_dir / "K_33.npy"), images_nhw3.shape[2], images_nhw3.shape[1]),
    )


def augment_image_hw3(image_hw3: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """A uint8 RGB image as float32 in [0, 1] after exposure, colour, vignetting, blur,
    noise and JPEG changes drawn from `rng`."""
    x_hw3 = image_hw3.astype(np.float32) / 255.0
    gamma = rng.uniform(*config.gamma_range)
    gains_3 = rng.uniform(*config.gain_range) * rng.uniform(1 - config.channel_gain, 1 + config.channel_gain, 3)
    x_hw3 = x_hw3**gamma * gains_3.astype(np.float32) + rng.uniform(-config.offset, config.offset)
    height, width = x_hw3.shape[:2]
    if rng.uniform() < config.vignetting_probability:
        v_hw, u_hw = np.mgrid[0:height, 0:width].astype(np.float32)
        radius_sq_hw = ((u_hw - width / 2) / (width / 2)) ** 2 + ((v_hw - height / 2) / (height / 2)) ** 2
        x_hw3 *= (1.0 - rng.uniform(0, config.vignetting_max) * radius_sq_hw / 2.0)[..., None]
    if rng.uniform() < config.shading_probability:
        grid_34 = rng.uniform(1 - config.shading_amplitude, 1 + config.shading_amplitude, (3, 4)).astype(np.float32)
        x_hw3 *= cv2.resize(grid_34, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
    if rng.uniform() < config.blur_probability:
        x_hw3 = cv2.GaussianBlur(x_hw3, (0, 0), rng.uniform(*config.blur_sigma_range))
    if rng.uniform() < config.motion_blur_probability:
        length = int(rng.integers(config.motion_blur_length_range[0], config.motion_blur_length_range[1] + 1))
        kernel_kk = np.zeros((length, length), np.float32)
        kernel_kk[length // 2] = 1.0 / length
        rotation_23 = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
        kernel_kk = cv2.warpAffine(kernel_kk, rotation_23, (length, length))
        x_hw3 = cv2.filter2D(x_hw3, -1, kernel_kk / max(kernel_kk.sum(), 1e-6))
    x_hw3 = x_hw3 + rng.normal(0.0, rng.uniform(0, config.noise_sigma_max), x_hw3.shape).astype(np.float32)
    x_hw3 = np.clip(x_hw3, 0.0, 1.0)
    if rng.uniform() < config.jpeg_probability:
        quality = int(rng.integers(*config.jpeg_quality_range))
        _, encoded = cv2.imencode(".jpg", np.rint(x_hw3 * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
        x_hw3 = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    return x_hw3


def rolling_shutter_hw3(image_hw3: np.ndarray, shift_2: np.ndarray) -> np.ndarray:
    """The image with row v shifted by `shift_2` (pixels, x and y) times (v - middle) / (H / 2):
    the top and bottom rows move by -+`shift_2`, the middle row stays (bilinear, edges replicated)."""
    height, width = image_hw3.shape[:2]
    v_hw, u_hw = np.mgrid[0:height, 0:width].astype(np.float32)
    lag_hw = (v_hw - (height - 1) / 2) / (height / 2)
    map_u_hw = u_hw - np.float32(shift_2[0]) * lag_hw
    map_v_hw = v_hw - np.float32(shift_2[1]) * lag_hw
    return cv2.remap(image_hw3, map_u_hw, map_v_hw, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def perturb_pose_44(a_T_b_44: np.ndarray, rng: np.random.Generator, sigma_deg: float, sigma_m: float) -> np.ndarray:
    """a_T_b composed with a random rotation (Gaussian axis-angle, degrees) and translation."""
    rotation_vector_3 = np.radians(rng.normal(0.0, sigma_deg, 3))
    R_33, _ = cv2.Rodrigues(rotation_vector_3)
    return make_pose_44(R_33, rng.normal(0.0, sigma_m, 3)) @ a_T_b_44


def overlap_depths(depth_mm_hw: np.ndarray, config: SamplingConfig) -> tuple[float, ...]:
    """Depths (metres) a source's overlap with the reference is measured at: the quartiles of
    the reference's true depth, or the pipeline's when not `overlap_at_true_depth` or empty."""
    valid_n = depth_mm_hw[depth_mm_hw > 0]
    if not config.overlap_at_true_depth or valid_n.size == 0:
        return KeyframeConfig().overlap_depths
    return tuple(float(d) / 1000.0 for d in np.percentile(valid_n, [25, 50, 75]))


def draw_sample(
    room: RoomData, rng: np.random.Generator, sampling: SamplingConfig, augment: AugmentConfig | None,
    max_tries: int = 50,
) -> Sample:
    """A random reference with two sources (see `SamplingConfig`), each view augmented with
    `augment` unless it is None (validation: exact images and poses)."""
    poses = list(room.world_T_cam_n44)
    for _ in range(max_tries):
        if room.reference_weights_n is None:
            reference = int(rng.integers(len(poses)))
        else:
            reference = int(rng.choice(len(poses), p=room.reference_weights_n))
        low, high = sampling.optimal_distance_range
        keyframe_config = KeyframeConfig(
            min_distance=sampling.min_source_distance,
            max_distance=sampling.max_source_distance,
            optimal_distance=rng.uniform(low, high) if augment is not None else (low + high) / 2,
            max_view_angle_deg=sampling.max_view_angle_deg,
            min_overlap=sampling.min_overlap,
            max_sources=2,
            overlap_depths=overlap_depths(room.depths_nhw[reference], sampling),
        )
        candidates = [i for i in range(len(poses)) if i != reference and (augment is None or rng.uniform() < 0.7)]
        sources = choose_sources(poses, reference, candidates, room.camera, keyframe_config)
        if len(sources) == 2:
            break
    else:
        raise ValueError(f"found no reference with two overlapping sources in {max_tries} tries")
    frames = [reference, *sources]
    if augment is not None:
        images = [augment_image_hw3(room.images_nhw3[i], rng, augment) for i in frames]
        for k in range(1, len(images)):
            if rng.uniform() < augment.rolling_shutter_probability:
                angle = rng.uniform(0, 2 * np.pi)
                shift_2 = rng.uniform(0, augment.rolling_shutter_max_px) * np.array([np.cos(angle), np.sin(angle)])
                images[k] = rolling_shutter_hw3(images[k], shift_2)
    else:
        images = [room.images_nhw3[i].astype(np.float32) / 255.0 for i in frames]
    src_T_ref_n44 = np.stack([invert_pose_44(poses[s]) @ poses[reference] for s in sources])
    if augment is not None and rng.uniform() < augment.pose_noise_probability:
        src_T_ref_n44 = np.stack(
            [perturb_pose_44(T_44, rng, augment.pose_noise_deg, augment.pose_noise_m) for T_44 in src_T_ref_n44]
        )
    images_n3hw = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return Sample(
        ref_image_3hw=images_n3hw[0],
        src_images_n3hw=images_n3hw[1:],
        K_33=torch.from_numpy(room.camera.K_33).float(),
        src_T_ref_n44=torch.from_numpy(src_T_ref_n44).float(),
        depth_1hw=torch.from_numpy(room.depths_nhw[reference].astype(np.float32) / 1000.0)[None],
    )


def median_depths_n(room: RoomData) -> np.ndarray:
    """(N,) median of each frame's valid true depth (metres; 0 for a frame without any)."""
    medians = []
    for depth_mm_hw in room.depths_nhw:
        valid_n = depth_mm_hw[depth_mm_hw > 0]
        medians.append(float(np.median(valid_n)) / 1000.0 if valid_n.size else 0.0)
    return np.asarray(medians)


def balance_references(rooms: list[RoomData], edges_m: tuple[float, ...], max_ratio: float) -> np.ndarray:
    """Weight references so that their median true depths spread evenly over the ranges
    between `edges_m` (metres; medians outside count in the first or the last range): a
    frame weighs 1 / (frames of its range over all rooms), at most `max_ratio` times the
    least weight, so that a rare range is not drawn from a few frames over and over.
    Sets each room's `reference_weights_n` and returns the probability of drawing each room."""
    medians_r = [median_depths_n(room) for room in rooms]
    ranges_r = [np.clip(np.searchsorted(edges_m, m_n, side="right") - 1, 0, len(edges_m) - 2) for m_n in medians_r]
    counts_k = np.bincount(np.concatenate(ranges_r), minlength=len(edges_m) - 1).astype(np.float64)
    weight_k = np.where(counts_k > 0, 1.0 / np.maximum(counts_k, 1.0), 0.0)
    weight_k = np.minimum(weight_k, max_ratio * weight_k[weight_k > 0].min())
    totals_r = []
    for room, range_n in zip(rooms, ranges_r):
        frame_weights_n = weight_k[range_n]
        totals_r.append(frame_weights_n.sum())
        room.reference_weights_n = frame_weights_n / frame_weights_n.sum()
    return np.asarray(totals_r) / np.sum(totals_r)


def collate(samples: list[Sample]) -> Batch:
    """Stack samples into a batch."""
    return Batch(
        ref_image_b3hw=torch.stack([s.ref_image_3hw for s in samples]),
        src_images_bn3hw=torch.stack([s.src_images_n3hw for s in samples]),
        K_b33=torch.stack([s.K_33 for s in samples]),
        src_T_ref_bn44=torch.stack([s.src_T_ref_n44 for s in samples]),
        depth_b1hw=torch.stack([s.depth_1hw for s in samples]),
    )


@dataclass
class DepthRangeShares:
    """Share of valid ground-truth pixels in each depth range.

    edges_m: the range edges (metres); shares_k: the share in [edge k, edge k + 1) for each
    range (the last one closed); below, above: the shares under the first and over the last edge.
    """

    edges_m: tuple[float, ...]
    shares_k: list[float] = field(default_factory=list)
    below: float = 0.0
    above: float = 0.0

    def summary(self) -> str:
        ranges = [f"{lo:g}-{hi:g} m {share:.1%}" for lo, hi, share in zip(self.edges_m, self.edges_m[1:], self.shares_k)]
        return (f"< {self.edges_m[0]:g} m {self.below:.1%}, " + ", ".join(ranges)
                + f", > {self.edges_m[-1]:g} m {self.above:.1%}")


def depth_range_shares(depths_m: list[np.ndarray], edges_m: tuple[float, ...] = DEPTH_RANGE_EDGES_M) -> DepthRangeShares:
    """How the valid (> 0) depths of `depths_m` (metres, any shapes) fall into the ranges."""
    values_n = np.concatenate([np.asarray(d, dtype=np.float64).ravel() for d in depths_m])
    values_n = values_n[values_n > 0]
    if values_n.size == 0:
        raise ValueError("depth ranges: expected some valid (> 0) depth, got none")
    counts_k, _ = np.histogram(values_n, bins=np.asarray(edges_m))
    return DepthRangeShares(
        edges_m=tuple(edges_m),
        shares_k=(counts_k / values_n.size).tolist(),
        below=float(np.mean(values_n < edges_m[0])),
        above=float(np.mean(values_n > edges_m[-1])),
    )
