"""Train the learned cost-to-depth model on synthetic rooms (never on evaluation data).

    python -m mvs.train --name NAME [--rooms 24 --val-rooms 3 --steps N --resume] [--loop-rooms]

Rooms are rendered by `mvs.synth` at the working resolution into `--data-dir` (seeds from
1000 for training, from 2000 for validation, so they never coincide with the rooms the
benchmarks generate) and their frames cached as .npy arrays; by default they are training
rooms with variety (`RoomSpec.variety`: sizes from a box room to a hall, clutter, shadows,
highlights, a tour of close-ups and views across the room), `--loop-rooms` renders the
default rooms with their loop instead. Each sample is a reference and two source frames at
baselines up to wide ones, photometrically augmented frame by frame (`mvs/train_data.py`).
The training log starts with how the references' true depths spread over 0.3-10 m.
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
from mvs.losses import LossConfig, depth_loss
from mvs.network import WEIGHTS_DIR, DepthNet, ModelConfig, load_model, resolve_weights_path, save_model
from mvs.synth import RoomSpec
from mvs.train_data import (
    AugmentConfig, DepthRangeShares, RoomData, Sample, SamplingConfig, balance_references, collate,
    depth_range_shares, draw_sample, prepare_room,
)

TRAIN_SEED_START = 1000
VAL_SEED_START = 2000


@dataclass
class TrainConfig:
    """Everything a training run needs (saved with the weights).

    rooms, val_rooms: synthetic rooms for training and for validation; every
    `textureless_every`-th room has flat walls, floor and ceiling; `room_variety`: training
    rooms with variety (`RoomSpec.variety`), else the default rooms. frames_per_room: frames
    along each room's camera path. width, height: working resolution (pixels).
    Learning rate: linear warm-up for `warmup_steps`, then cosine decay to `min_learning_rate`.
    sampling: how sources are paired with a reference; augment: what each view and pose
    goes through (`mvs/train_data.py`). depth_share_samples: references whose true depths
    the log's depth-range shares are counted over. weights_dir: where NAME.pt goes
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
    room_variety: bool = True
    depth_share_samples: int = 256
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
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def room_specs(config: TrainConfig) -> tuple[list[RoomSpec], list[RoomSpec]]:
    """The training and the validation rooms."""

    def spec(seed: int, i: int) -> RoomSpec:
        textureless = config.textureless_every > 0 and i % config.textureless_every == config.textureless_every - 1
        return RoomSpec(seed, config.frames_per_room, config.width, config.height, textureless,
                        variety=config.room_variety)

    train = [spec(TRAIN_SEED_START + i, i) for i in range(config.rooms)]
    val = [spec(VAL_SEED_START + i, i) for i in range(config.val_rooms)]
    return train, val


def training_depth_shares(
    rooms: list[RoomData], room_probabilities_r: np.ndarray, config: TrainConfig
) -> DepthRangeShares:
    """How the true depths of `config.depth_share_samples` training references (rooms drawn
    with `room_probabilities_r` as training draws them, from a generator of their own)
    spread over the depth ranges."""
    rng = np.random.default_rng(config.seed + 1)
    depths = []
    for _ in range(config.depth_share_samples):
        room = rooms[int(rng.choice(len(rooms), p=room_probabilities_r))]
        depths.append(draw_sample(room, rng, config.sampling, None).depth_1hw.numpy())
    return depth_range_shares(depths)


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
    train_specs, val_specs = room_specs(config)
    train_rooms = [prepare_room(spec, Path(config.data_dir)) for spec in train_specs]
    val_rooms = [prepare_room(spec, Path(config.data_dir)) for spec in val_specs]
    room_probabilities_r = np.full(len(train_rooms), 1.0 / len(train_rooms))
    if config.sampling.balance_edges_m:
        room_probabilities_r = balance_references(train_rooms, config.sampling.balance_edges_m,
                                                  config.sampling.balance_max_ratio)
    val_rng = np.random.default_rng(12345)
    val_samples = [
        draw_sample(room, val_rng, config.sampling, None) for room in val_rooms for _ in range(config.val_samples_per_room)
    ]
    shares = training_depth_shares(train_rooms, room_probabilities_r, config)
    print(f"true depth of the training references: {shares.summary()}", flush=True)

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
        rooms = rng.choice(len(train_rooms), size=config.batch_size, p=room_probabilities_r)
        batch = collate([draw_sample(train_rooms[r], rng, config.sampling, config.augment) for r in rooms])
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
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps, help="steps of linear warm-up")
    parser.add_argument("--val-every", type=int, default=defaults.val_every, help="steps between validations")
    parser.add_argument("--val-samples", type=int, default=defaults.val_samples_per_room,
                        help="validation samples per validation room")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch CPU threads (0 = default)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--data-dir", default=defaults.data_dir, help="where training rooms are rendered")
    parser.add_argument("--runs-dir", default=defaults.runs_dir, help="checkpoints, log and loss curve")
    parser.add_argument("--resume", action="store_true", help="continue from runs-dir/NAME/checkpoint.pt")
    parser.add_argument("--loop-rooms", action="store_true",
                        help="train on the default rooms and their loop instead of rooms with variety")
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
        warmup_steps=args.warmup_steps,
        val_every=args.val_every,
        val_samples_per_room=args.val_samples,
        threads=args.threads,
        seed=args.seed,
        data_dir=args.data_dir,
        runs_dir=args.runs_dir,
        init_weights=args.init,
        room_variety=not args.loop_rooms,
    )
    if min(config.rooms, config.val_rooms, config.steps, config.batch_size, config.val_samples_per_room) < 1:
        raise ValueError(
            f"expected --rooms, --val-rooms, --steps, --batch-size and --val-samples >= 1, got {config.rooms}, "
            f"{config.val_rooms}, {config.steps}, {config.batch_size}, {config.val_samples_per_room}"
        )
    if config.warmup_steps < 1:
        raise ValueError(f"expected --warmup-steps >= 1, got {config.warmup_steps}")
    metrics = run(config, args.resume)
    print(f"final validation: {metrics.summary()}", flush=True)


if __name__ == "__main__":
    main()
