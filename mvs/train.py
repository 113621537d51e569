"""Train the learned cost-to-depth model on synthetic rooms (never on evaluation data).

    python -m mvs.train --name NAME [--rooms 24 --val-rooms 3 --steps N --resume]

Rooms are rendered by `mvs.synth` at the working resolution into `--data-dir` (seeds from
1000 for training, from 2000 for validation, so they never coincide with the rooms the
benchmarks generate) and their frames cached as .npy arrays. Each sample is a reference
and two source frames at good baselines, photometrically augmented frame by frame.
Checkpoints, a log and a loss-curve PNG go to `--runs-dir/NAME`; the model with its
configs and validation metrics goes to `mvs/weights/NAME.pt` at every validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mvs.depth_metrics import DepthMetrics, DepthMetricsAccumulator
from mvs.geometry import invert_pose_44, make_pose_44
from mvs.io.layout import open_sequence
from mvs.losses import LossConfig, depth_loss
from mvs.network import WEIGHTS_DIR, DepthNet, ModelConfig, load_model, resolve_weights_path, save_model
from mvs.synth import RoomSpec, generate_room
from mvs.types import Camera
from slam.keyframes import KeyframeConfig, choose_sources

TRAIN_SEED_START = 1000
VAL_SEED_START = 2000


@dataclass
class AugmentConfig:
    """Per-frame photometric augmentation (images in [0, 1]) and pose noise.

    gain_range: exposure gain; gamma_range: gamma; channel_gain: +- per-channel gain;
    offset: +- brightness offset; noise_sigma_max: Gaussian noise std; blur_probability,
    blur_sigma_range (pixels); motion_blur_probability, motion_blur_length_range (pixels);
    jpeg_probability, jpeg_quality_range; vignetting_probability, vignetting_max (darkening
    at the image corners); shading_probability, shading_amplitude: a smooth random gain field
    (+- amplitude over a 4 x 3 grid, bicubic), light that changes across the image and from
    view to view as real shading and specular sheen do; pose_noise_probability,
    pose_noise_deg, pose_noise_m: Gaussian noise on each reference-to-source transform.
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
    pose_noise_probability: float = 0.5
    pose_noise_deg: float = 0.3
    pose_noise_m: float = 0.005


@dataclass
class TrainConfig:
    """Everything a training run needs (saved with the weights).

    rooms, val_rooms: synthetic rooms for training and for validation; every
    `textureless_every`-th room has flat walls, floor and ceiling. frames_per_room: frames
    along each room's camera loop. width, height: working resolution (pixels).
    Learning rate: linear warm-up for `warmup_steps`, then cosine decay to `min_learning_rate`.
    Source sampling: pose distances in [min_source_distance, max_source_distance], the
    preferred distance drawn from `optimal_distance_range`. weights_dir: where NAME.pt goes
    (empty: the package's `mvs/weights`). init_weights: a model (name under mvs/weights or a
    .pt path) whose parameters training starts from, to fine-tune it (empty: random).
    """

    name: str = "depthnet"
    rooms: int = 24
    val_rooms: int = 3
    steps: int = 2000
    batch_size: int = 4
    learning_rate: float = 1e-3
    min_learning_rate: float = 2e-5
    warmup_steps: int = 100
    grad_clip: float = 1.0
    width: int = 320
    height: int = 240
    frames_per_room: int = 200
    textureless_every: int = 4
    min_source_distance: float = 0.05
    max_source_distance: float = 0.5
    optimal_distance_range: tuple[float, float] = (0.1, 0.3)
    val_samples_per_room: int = 16
    val_every: int = 250
    checkpoint_every: int = 50
    log_every: int = 10
    seed: int = 0
    threads: int = 0
    data_dir: str = "sequences/synthetic/train"
    runs_dir: str = "runs/train"
    weights_dir: str = ""
    init_weights: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class RoomData:
    """A rendered room's frames held as (memory-mapped) arrays.

    images_nhw3: uint8 RGB; depths_nhw: uint16 millimetres of z-depth (0 = nothing);
    world_T_cam_n44: camera-to-world poses; camera: the intrinsics of the images.
    """

    images_nhw3: np.ndarray
    depths_nhw: np.ndarray
    world_T_cam_n44: np.ndarray
    camera: Camera


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


def room_seeds(config: TrainConfig) -> tuple[list[tuple[int, bool]], list[tuple[int, bool]]]:
    """(seed, textureless_walls) of the training and of the validation rooms."""

    def textureless(i: int) -> bool:
        return config.textureless_every > 0 and i % config.textureless_every == config.textureless_every - 1

    train = [(TRAIN_SEED_START + i, textureless(i)) for i in range(config.rooms)]
    val = [(VAL_SEED_START + i, textureless(i)) for i in range(config.val_rooms)]
    return train, val


def prepare_room(seed: int, textureless_walls: bool, config: TrainConfig) -> RoomData:
    """Render the room unless present, cache its frames as .npy unless cached, map them."""
    suffix = "_textureless" if textureless_walls else ""
    room_dir = Path(config.data_dir) / f"room{seed}{suffix}_{config.width}x{config.height}_{config.frames_per_room}"
    if not room_dir.exists():
        print(f"rendering training room {room_dir}", flush=True)
        spec = RoomSpec(seed, config.frames_per_room, config.width, config.height, textureless_walls)
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


def perturb_pose_44(a_T_b_44: np.ndarray, rng: np.random.Generator, sigma_deg: float, sigma_m: float) -> np.ndarray:
    """a_T_b composed with a random rotation (Gaussian axis-angle, degrees) and translation."""
    rotation_vector_3 = np.radians(rng.normal(0.0, sigma_deg, 3))
    R_33, _ = cv2.Rodrigues(rotation_vector_3)
    return make_pose_44(R_33, rng.normal(0.0, sigma_m, 3)) @ a_T_b_44


def draw_sample(
    room: RoomData, rng: np.random.Generator, config: TrainConfig, augment: bool, max_tries: int = 50
) -> Sample:
    """A random reference with two sources at good baselines (see `TrainConfig`)."""
    poses = list(room.world_T_cam_n44)
    for _ in range(max_tries):
        reference = int(rng.integers(len(poses)))
        optimal = rng.uniform(*config.optimal_distance_range) if augment else float(np.mean(config.optimal_distance_range))
        keyframe_config = KeyframeConfig(
            min_distance=config.min_source_distance,
            max_distance=config.max_source_distance,
            optimal_distance=optimal,
            max_sources=2,
        )
        candidates = [i for i in range(len(poses)) if i != reference and (not augment or rng.uniform() < 0.7)]
        sources = choose_sources(poses, reference, candidates, room.camera, keyframe_config)
        if len(sources) == 2:
            break
    else:
        raise ValueError(f"found no reference with two overlapping sources in {max_tries} tries")
    frames = [reference, *sources]
    if augment:
        images = [augment_image_hw3(room.images_nhw3[i], rng, config.augment) for i in frames]
    else:
        images = [room.images_nhw3[i].astype(np.float32) / 255.0 for i in frames]
    src_T_ref_n44 = np.stack([invert_pose_44(poses[s]) @ poses[reference] for s in sources])
    if augment and rng.uniform() < config.augment.pose_noise_probability:
        src_T_ref_n44 = np.stack(
            [perturb_pose_44(T_44, rng, config.augment.pose_noise_deg, config.augment.pose_noise_m) for T_44 in src_T_ref_n44]
        )
    images_n3hw = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return Sample(
        ref_image_3hw=images_n3hw[0],
        src_images_n3hw=images_n3hw[1:],
        K_33=torch.from_numpy(room.camera.K_33).float(),
        src_T_ref_n44=torch.from_numpy(src_T_ref_n44).float(),
        depth_1hw=torch.from_numpy(room.depths_nhw[reference].astype(np.float32) / 1000.0)[None],
    )


def collate(samples: list[Sample]) -> Batch:
    """Stack samples into a batch."""
    return Batch(
        ref_image_b3hw=torch.stack([s.ref_image_3hw for s in samples]),
        src_images_bn3hw=torch.stack([s.src_images_n3hw for s in samples]),
        K_b33=torch.stack([s.K_33 for s in samples]),
        src_T_ref_bn44=torch.stack([s.src_T_ref_n44 for s in samples]),
        depth_b1hw=torch.stack([s.depth_1hw for s in samples]),
    )


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from learning_rate to min_learning_rate."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min((step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1), 1.0)
    return config.min_learning_rate + 0.5 * (config.learning_rate - config.min_learning_rate) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model: DepthNet, samples: list[Sample], max_depth: float = 10.0) -> DepthMetrics:
    """Depth metrics of the model's full-resolution depth over `samples` (eval mode)."""
    was_training = model.training
    model.eval()
    accumulator = DepthMetricsAccumulator(max_depth)
    for sample in samples:
        batch = collate([sample])
        output = model(batch.ref_image_b3hw, batch.src_images_bn3hw, batch.K_b33, batch.src_T_ref_bn44)
        depth_b1hw = output.depth_b1hw(*batch.depth_b1hw.shape[-2:])
        accumulator.add(depth_b1hw[0, 0].numpy(), batch.depth_b1hw[0, 0].numpy())
    model.train(was_training)
    return accumulator.result()


def draw_curves_png(path: Path, steps: list[int], losses: list[float], val_steps: list[int], val_abs_rel: list[float]) -> None:
    """Training loss (raw and smoothed) and validation AbsRel against step, drawn with cv2."""
    width, height, margin = 900, 360, 50
    canvas_hw3 = np.full((2 * height, width, 3), 255, np.uint8)

    def panel(row: int, xs: list[int], ys: list[float], colour: tuple[int, int, int], title: str, smooth: bool) -> None:
        top = row * height
        cv2.putText(canvas_hw3, title, (margin, top + 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
        cv2.rectangle(canvas_hw3, (margin, top + margin), (width - margin, top + height - margin), (0, 0, 0), 1)
        if len(xs) < 2:
            return
        y_n = np.asarray(ys, np.float64)
        if smooth:
            kernel = max(1, len(y_n) // 50)
            y_n = np.convolve(y_n, np.ones(kernel) / kernel, mode="valid")
            xs = xs[kernel - 1 :]
        lo, hi = float(np.min(y_n)), float(np.max(y_n))
        x_n = np.asarray(xs, np.float64)
        px_n = margin + (x_n - x_n[0]) / max(x_n[-1] - x_n[0], 1) * (width - 2 * margin)
        py_n = top + height - margin - (y_n - lo) / max(hi - lo, 1e-9) * (height - 2 * margin)
        cv2.polylines(canvas_hw3, [np.stack([px_n, py_n], 1).astype(np.int32)], False, colour, 2)
        for value, y in ((hi, top + margin), (lo, top + height - margin)):
            cv2.putText(canvas_hw3, f"{value:.4f}", (2, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
        cv2.putText(canvas_hw3, f"step {xs[0]}..{xs[-1]}", (width - 220, top + height - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)

    panel(0, steps, losses, (200, 60, 0), "training loss (smoothed)", smooth=True)
    panel(1, val_steps, val_abs_rel, (0, 0, 200), "validation AbsRel", smooth=False)
    cv2.imwrite(str(path), canvas_hw3)


@dataclass
class History:
    """Loss per step and validation results, kept in the checkpoint."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_abs_rel: list[float] = field(default_factory=list)


def run(config: TrainConfig, resume: bool) -> DepthMetrics:
    """Train (or resume) and return the last validation metrics."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    run_dir = Path(config.runs_dir) / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / "checkpoint.pt"
    weights_path = (Path(config.weights_dir) if config.weights_dir else WEIGHTS_DIR) / f"{config.name}.pt"
    if not resume and checkpoint_path.exists():
        raise ValueError(f"{checkpoint_path} exists: pass --resume to continue it, or choose another --name")
    if resume and not checkpoint_path.exists():
        raise ValueError(f"--resume: no checkpoint at {checkpoint_path}")
    print(f"training config:\n{dataclasses.asdict(config)}", flush=True)
    train_seeds, val_seeds = room_seeds(config)
    train_rooms = [prepare_room(seed, textureless, config) for seed, textureless in train_seeds]
    val_rooms = [prepare_room(seed, textureless, config) for seed, textureless in val_seeds]
    val_rng = np.random.default_rng(12345)
    val_samples = [draw_sample(room, val_rng, config, augment=False) for room in val_rooms for _ in range(config.val_samples_per_room)]

    torch.manual_seed(config.seed)
    model = DepthNet(config.model)
    if config.init_weights and not resume:
        init_path = resolve_weights_path(config.init_weights)
        model.load_state_dict(load_model(init_path).model.state_dict())
        print(f"starting from the parameters of {init_path}", flush=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    rng = np.random.default_rng(config.seed)
    history = History()
    start_step = 0
    if resume:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        rng.bit_generator.state = checkpoint["numpy_rng"]
        torch.set_rng_state(checkpoint["torch_rng"])
        history = History(**checkpoint["history"])
        start_step = int(checkpoint["step"])
        print(f"resumed {checkpoint_path} at step {start_step}", flush=True)

    def save_checkpoint(step: int) -> None:
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "numpy_rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "history": dataclasses.asdict(history),
            "step": step,
        }
        partial = checkpoint_path.with_name(checkpoint_path.name + ".partial")
        torch.save(payload, partial)
        partial.replace(checkpoint_path)

    metrics = evaluate(model, val_samples) if start_step >= config.steps else None
    model.train()
    started = time.perf_counter()
    for step in tqdm(range(start_step, config.steps), initial=start_step, total=config.steps, desc="training", unit="step"):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        rooms = rng.integers(len(train_rooms), size=config.batch_size)
        batch = collate([draw_sample(train_rooms[r], rng, config, augment=True) for r in rooms])
        output = model(batch.ref_image_b3hw, batch.src_images_bn3hw, batch.K_b33, batch.src_T_ref_bn44)
        terms = depth_loss(output, batch.depth_b1hw, config.loss)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        history.steps.append(step + 1)
        history.losses.append(float(terms.total.detach()))
        if (step + 1) % config.log_every == 0:
            elapsed = time.perf_counter() - started
            per_step = elapsed / (step + 1 - start_step)
            tqdm.write(
                f"step {step + 1}/{config.steps} loss {history.losses[-1]:.4f} silog {terms.silog:.4f} "
                f"inv_l1 {terms.inverse_l1:.4f} grad {terms.gradient:.4f} conf {terms.confidence:.4f} "
                f"lr {learning_rate(step, config):.2e} {per_step:.2f} s/step "
                f"eta {per_step * (config.steps - step - 1) / 60:.1f} min",
            )
        last = step + 1 == config.steps
        if (step + 1) % config.val_every == 0 or last:
            metrics = evaluate(model, val_samples)
            history.val_steps.append(step + 1)
            history.val_abs_rel.append(metrics.abs_rel)
            tqdm.write(f"validation at step {step + 1}: {metrics.summary()}")
            validation = {**dataclasses.asdict(metrics), "step": step + 1}
            save_model(weights_path, model, dataclasses.asdict(config), validation)
            draw_curves_png(run_dir / "loss.png", history.steps, history.losses, history.val_steps, history.val_abs_rel)
            tqdm.write(f"wrote {weights_path} and {run_dir / 'loss.png'}")
        if (step + 1) % config.checkpoint_every == 0 or last:
            save_checkpoint(step + 1)
    if metrics is None:
        raise ValueError(f"nothing to do: the checkpoint is already at step {start_step} >= --steps {config.steps}")
    print(f"wrote {weights_path} (model), {checkpoint_path} (checkpoint) and {run_dir / 'loss.png'} (loss curve)")
    return metrics


def main(argv: list[str] | None = None) -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description="Train the plane-sweep depth network on synthetic rooms.")
    parser.add_argument("--name", required=True, help="run name: weights go to mvs/weights/NAME.pt")
    parser.add_argument("--rooms", type=int, default=defaults.rooms, help="synthetic training rooms")
    parser.add_argument("--val-rooms", type=int, default=defaults.val_rooms, help="held-out validation rooms")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps in total")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="peak Adam learning rate")
    parser.add_argument("--frames-per-room", type=int, default=defaults.frames_per_room)
    parser.add_argument("--val-every", type=int, default=defaults.val_every, help="steps between validations")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads (0 = default)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--data-dir", default=defaults.data_dir, help="where training rooms are rendered")
    parser.add_argument("--runs-dir", default=defaults.runs_dir, help="checkpoints, log and loss curve")
    parser.add_argument("--resume", action="store_true", help="continue from runs-dir/NAME/checkpoint.pt")
    parser.add_argument("--init", default="", help="fine-tune: start from this model (name or .pt path)")
    args = parser.parse_args(argv)
    config = dataclasses.replace(
        defaults,
        name=args.name,
        rooms=args.rooms,
        val_rooms=args.val_rooms,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        frames_per_room=args.frames_per_room,
        val_every=args.val_every,
        threads=args.threads,
        seed=args.seed,
        data_dir=args.data_dir,
        runs_dir=args.runs_dir,
        init_weights=args.init,
    )
    if config.rooms < 1 or config.val_rooms < 1 or config.steps < 1 or config.batch_size < 1:
        raise ValueError(
            f"expected --rooms, --val-rooms, --steps and --batch-size >= 1, got {config.rooms}, "
            f"{config.val_rooms}, {config.steps}, {config.batch_size}"
        )
    metrics = run(config, args.resume)
    print(f"final validation: {metrics.summary()}", flush=True)


if __name__ == "__main__":
    main()
