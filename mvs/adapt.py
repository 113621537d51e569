"""Test-time self-supervised adaptation of the learned depth model to one sequence.

Before depth is estimated, the model is fine-tuned on the sequence's own keyframes and
poses, with no depth: each keyframe plan (a reference and its sources, as depth estimation
will use them) is a training sample, and two neighbouring plans form a batch, so the loss
is the photometric reprojection error of both references against their sources, the
edge-aware smoothness of their inverse depths and the consistency of the two depth maps
with each other (`mvs.adapt_losses`). Images are resized to a low resolution
(`AdaptConfig.width` x `height`) and the run stops at a step budget or a time budget,
whichever comes first. Sensor depth is never used: frames are read for their colour alone.

Which parameters adapt (`AdaptConfig.parameters`):
- `all`: every weight; the batch-norm statistics stay those of training.
- `decoder`: every weight except the matching-feature encoder (the cost volumes it feeds
  stay those the model was trained on).
- `norm`: the batch-norm scales and offsets only.
- `gains`: the two cost gains, how strongly the plane scores follow the matching costs.
- `stats`: no gradient step: the batch-norm statistics re-estimated on the sequence's
  frames (AdaBN); `steps` forward passes over its batches.
`all` is the default, with Adam at 3e-4: over the decoder alone at 1e-4 (the earlier default,
as good as `all` at that rate) it took AbsRel on redkitchen 0:1000:2 from -3 % to -9..-11 %,
on the tabletop sample from -4..-5 % to -4..-9 % and on the synthetic room from -11 % to -12 %
(two batch orders each; README, `--adapt`); the decoder alone at 3e-4 made the kitchen 10 %
worse. `norm`, `gains` and `stats` barely move the depth.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mvs.adapt_losses import depth_consistency_loss, photometric_loss, smoothness_loss
from mvs.geometry import invert_pose_44
from mvs.network import DepthNet, load_model, resolve_weights_path, save_model
from mvs.types import Sequence
from slam.keyframes import KeyframePlan

PARAMETER_SETS = ("all", "decoder", "norm", "gains", "stats")
ADAPTED_WEIGHTS_NAME = "adapted.pt"


@dataclass
class AdaptConfig:
    """Test-time adaptation of the learned model (`--adapt`).

    enabled: adapt before depth is estimated (only with the learned depth source).
    steps, seconds: stop after this many optimisation steps or when the whole adaptation
        (reading the frames and measuring the loss included) has taken this many seconds
        (wall time), whichever comes first.
    learning_rate: Adam's step size.
    width, height: resolution (pixels, divisible by 4) the frames are resized to.
    parameters: which parameters adapt, one of PARAMETER_SETS (see the module docstring).
    smoothness_weight, consistency_weight: weights of the edge-aware smoothness and of the
        depth consistency between neighbouring keyframes; the photometric loss weighs 1. The
        consistency weight grows from 0 to its value over the budget (steps or seconds,
        whichever is spent faster).
    loss_batches: batches, evenly spread over the sequence, that the loss before and after
        adaptation is measured on.
    seed: the order batches are drawn in.
    """

    enabled: bool = False
    steps: int = 300
    seconds: float = 150.0
    learning_rate: float = 3e-4
    width: int = 160
    height: int = 120
    parameters: str = "all"
    smoothness_weight: float = 1e-3
    consistency_weight: float = 1.0
    loss_batches: int = 4
    seed: int = 0


@dataclass
class AdaptResult:
    """What adaptation did (it goes into `report.json`): the mean loss (the full objective)
    and its photometric part over the measured batches before and after, the wall time
    (seconds, frame reading included), the
    optimisation steps taken, which parameters adapted and how many scalars they hold,
    the keyframe plans trained on and where the adapted weights were written."""

    loss_before: float
    loss_after: float
    photometric_before: float
    photometric_after: float
    seconds: float
    steps: int
    parameters: str
    parameters_adapted: int
    plans: int
    weights: str


@dataclass
class AdaptViews:
    """The sequence at the adaptation resolution: keyframe plans as tensors.

    images_n3hw: uint8 RGB of every frame the plans use; K_33: intrinsics at this
    resolution (pixels); world_T_cam_n44: their camera-to-world poses (float64);
    references: per plan the row of its reference; sources: per plan the rows of its
    sources, padded to one count by repeating the last (a repeated source changes neither
    the cost volume's average nor the per-pixel minimum of the photometric error);
    scene_depth: the scene's median depth, as depth estimation shows it to the model
    (`DepthNet.forward`), or None.
    """

    images_n3hw: torch.Tensor
    K_33: torch.Tensor
    world_T_cam_n44: np.ndarray
    references: list[int]
    sources: list[list[int]]
    scene_depth: float | None = None


def colour_views(
    sequence: Sequence,
    world_T_cam_44: dict[int, np.ndarray],
    posed: list[int],
    plans: list[KeyframePlan],
    width: int,
    height: int,
    scene_depth: float | None = None,
) -> AdaptViews:
    """The colour images (not the depth) of the frames `plans` use (positions in `posed`,
    dataset indices posed by `world_T_cam_44`), resized to `width` x `height`; plans whose
    reference cannot be read are left out, and unreadable sources are dropped. `scene_depth`:
    the scene's median depth (`AdaptViews`)."""
    rows: dict[int, int] = {}
    images: list[np.ndarray] = []

    def row(index: int) -> int | None:
        if index not in rows:
            frame = sequence.readable_frame(index)
            if frame is None:
                return None
            images.append(cv2.resize(frame.image_hw3, (width, height), interpolation=cv2.INTER_AREA))
            rows[index] = len(images) - 1
        return rows[index]

    references, sources = [], []
    for plan in tqdm(plans, desc="adapt: reading frames", unit="plan", leave=False):
        reference = row(posed[plan.reference_index])
        plan_sources = [r for k in plan.source_indices if (r := row(posed[k])) is not None]
        if reference is None or not plan_sources:
            continue
        references.append(reference)
        sources.append(plan_sources)
    if not references:
        raise ValueError(f"{sequence.root}: --adapt found no keyframe with readable source frames to adapt on")
    most = max(len(s) for s in sources)
    sources = [s + [s[-1]] * (most - len(s)) for s in sources]
    indices = sorted(rows, key=rows.get)
    return AdaptViews(
        images_n3hw=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        K_33=torch.from_numpy(sequence.camera.scaled(width, height).K_33).float(),
        world_T_cam_n44=np.stack([world_T_cam_44[i] for i in indices]),
        references=references,
        sources=sources,
        scene_depth=scene_depth,
    )


@dataclass
class AdaptBatch:
    """Plans as one model input (see `DepthNet.forward`; images RGB in [0, 1]), and per
    reference the transform into the other reference's camera (`partner_T_ref_b44`,
    metres): the batch is two neighbouring plans. scene_depth: as `AdaptViews`."""

    ref_image_b3hw: torch.Tensor
    src_images_bn3hw: torch.Tensor
    K_b33: torch.Tensor
    src_T_ref_bn44: torch.Tensor
    partner_T_ref_b44: torch.Tensor
    scene_depth: float | None


def neighbour_pairs(plan_count: int) -> list[tuple[int, int]]:
    """Plans paired with the next one (a single plan is paired with itself)."""
    return [(i, i + 1) for i in range(plan_count - 1)] or [(0, 0)]


def make_batch(views: AdaptViews, pair: tuple[int, int], device: torch.device) -> AdaptBatch:
    """The two plans of `pair` as a batch of two references."""
    plans = list(pair)
    world_T_ref = [views.world_T_cam_n44[views.references[p]] for p in plans]
    src_T_ref_bn44 = np.stack(
        [
            np.stack([invert_pose_44(views.world_T_cam_n44[s]) @ world_T_ref[k] for s in views.sources[p]])
            for k, p in enumerate(plans)
        ]
    )
    world_T_a_44, world_T_b_44 = world_T_ref
    partner_T_ref_b44 = np.stack(
        [invert_pose_44(world_T_b_44) @ world_T_a_44, invert_pose_44(world_T_a_44) @ world_T_b_44]
    )

    def images(rows: list[int]) -> torch.Tensor:
        return (views.images_n3hw[rows].float() / 255.0).to(device)

    return AdaptBatch(
        ref_image_b3hw=images([views.references[p] for p in plans]),
        src_images_bn3hw=torch.stack([images(views.sources[p]) for p in plans]),
        K_b33=views.K_33[None].expand(len(plans), 3, 3).contiguous().to(device),
        src_T_ref_bn44=torch.from_numpy(src_T_ref_bn44).float().to(device),
        partner_T_ref_b44=torch.from_numpy(partner_T_ref_b44).float().to(device),
        scene_depth=views.scene_depth,
    )


@dataclass
class AdaptLoss:
    """The terms of the adaptation loss on one batch (differentiable scalars)."""

    photometric: torch.Tensor
    smoothness: torch.Tensor
    consistency: torch.Tensor

    def total(self, config: AdaptConfig, consistency_share: float = 1.0) -> torch.Tensor:
        """photometric + smoothness_weight smoothness + consistency_share consistency_weight
        consistency."""
        consistency_weight = consistency_share * config.consistency_weight
        return self.photometric + config.smoothness_weight * self.smoothness + consistency_weight * self.consistency


def adaptation_loss(model: DepthNet, batch: AdaptBatch) -> AdaptLoss:
    """The loss terms of the model's finest depth on a batch of two neighbouring plans, the
    depth upsampled (bilinear in inverse depth) to the images' resolution."""
    h, w = batch.ref_image_b3hw.shape[-2:]
    output = model(batch.ref_image_b3hw, batch.src_images_bn3hw, batch.K_b33, batch.src_T_ref_bn44, batch.scene_depth)
    inverse_b1hw = F.interpolate(output.inverse_depths_b1hw[-1], size=(h, w), mode="bilinear", align_corners=False)
    depth_b1hw = 1.0 / inverse_b1hw
    return AdaptLoss(
        photometric=photometric_loss(
            batch.ref_image_b3hw, batch.src_images_bn3hw, depth_b1hw, batch.K_b33, batch.src_T_ref_bn44
        ).loss,
        smoothness=smoothness_loss(inverse_b1hw, batch.ref_image_b3hw),
        consistency=depth_consistency_loss(depth_b1hw, depth_b1hw.flip(0), batch.K_b33, batch.partner_T_ref_b44),
    )


def adapted_parameters(model: DepthNet, parameters: str) -> list[nn.Parameter]:
    """The parameters `parameters` names (see the module docstring); the others are frozen."""
    if parameters not in PARAMETER_SETS:
        raise ValueError(f"depth.adapt.parameters: expected one of {PARAMETER_SETS}, got '{parameters}'")
    if parameters == "all":
        chosen = list(model.parameters())
    elif parameters == "decoder":
        encoder = {id(p) for p in model.encoder.parameters()}
        chosen = [p for p in model.parameters() if id(p) not in encoder]
    elif parameters == "norm":
        chosen = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    elif parameters == "gains":
        chosen = [model.cost_gain, model.fine_cost_gain]
    else:
        chosen = []
    keep = {id(p) for p in chosen}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return chosen


@torch.no_grad()
def mean_losses(model: DepthNet, batches: list[AdaptBatch], config: AdaptConfig) -> tuple[float, float]:
    """The mean total and photometric adaptation losses over `batches` (eval mode)."""
    model.eval()
    losses = [adaptation_loss(model, batch) for batch in batches]
    return float(np.mean([float(loss.total(config)) for loss in losses])), float(np.mean([float(loss.photometric) for loss in losses]))


def reestimate_statistics(model: DepthNet, batches: list[AdaptBatch]) -> None:
    """Batch-norm running statistics replaced by their average over `batches` (AdaBN)."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch seen
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch.ref_image_b3hw, batch.src_images_bn3hw, batch.K_b33, batch.src_T_ref_bn44, batch.scene_depth)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def adapt_model(
    model: DepthNet, views: AdaptViews, config: AdaptConfig, progress: bool = True, start: float | None = None
) -> AdaptResult:
    """Fine-tune `model` in place on `views` (see the module docstring); the result has no
    `weights` yet. `start` is when the adaptation began (`time.perf_counter()`; default
    now): the time budget counts from there and keeps room for the final loss measurement."""
    if config.width % 4 or config.height % 4:
        raise ValueError(f"depth.adapt: expected width and height divisible by 4, got {config.width}x{config.height}")
    if config.steps < 0 or config.seconds <= 0 or config.learning_rate <= 0:
        raise ValueError(
            f"depth.adapt: expected steps >= 0, seconds > 0 and learning_rate > 0, got "
            f"{config.steps}, {config.seconds}, {config.learning_rate}"
        )
    start = time.perf_counter() if start is None else start
    device = next(model.parameters()).device
    pairs = neighbour_pairs(len(views.references))
    measured_k = np.unique(np.linspace(0, len(pairs) - 1, min(config.loss_batches, len(pairs))).round().astype(int))
    measured = [make_batch(views, pairs[k], device) for k in measured_k]
    chosen = adapted_parameters(model, config.parameters)
    measuring = time.perf_counter()
    loss_before, photometric_before = mean_losses(model, measured, config)
    measuring = time.perf_counter() - measuring
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(pairs))
    bar = tqdm(total=config.steps, desc="adapt", unit="step", disable=not progress)
    steps = 0
    if config.parameters == "stats":
        batches = [make_batch(views, pairs[k], device) for k in order[: config.steps]]
        reestimate_statistics(model, batches)
        steps = len(batches)
        bar.update(steps)
    elif chosen:
        optimiser = torch.optim.Adam(chosen, lr=config.learning_rate)
        # Batch-norm statistics stay the trained ones: two references are too few to estimate them.
        model.eval()
        loop_start = time.perf_counter()
        loop_seconds = start + config.seconds - measuring - loop_start
        planned = config.steps  # fewer when the time budget runs out first, at the pace so far
        while steps < config.steps and time.perf_counter() - loop_start < loop_seconds:
            if steps and steps % len(order) == 0:
                order = rng.permutation(len(pairs))
            batch = make_batch(views, pairs[order[steps % len(order)]], device)
            # The consistency term grows with the budget spent: a map far from the photometric
            # optimum must first move there, and two wrong maps can agree with each other.
            loss = adaptation_loss(model, batch).total(config, consistency_share=min(steps / planned, 1.0))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(chosen, 1.0)
            optimiser.step()
            steps += 1
            pace = (time.perf_counter() - loop_start) / steps
            planned = max(1, min(config.steps, int(loop_seconds / pace)))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    for p in model.parameters():
        p.requires_grad_(False)
    loss_after, photometric_after = mean_losses(model, measured, config)
    return AdaptResult(
        loss_before=loss_before,
        loss_after=loss_after,
        photometric_before=photometric_before,
        photometric_after=photometric_after,
        seconds=time.perf_counter() - start,
        steps=steps,
        parameters=config.parameters,
        parameters_adapted=sum(p.numel() for p in chosen),
        plans=len(views.references),
        weights="",
    )


def adapt_to_sequence(
    sequence: Sequence,
    world_T_cam_44: dict[int, np.ndarray],
    posed: list[int],
    plans: list[KeyframePlan],
    scene_depth: float,
    weights: str,
    config: AdaptConfig,
    device: str,
    out_dir: Path,
) -> AdaptResult:
    """Adapt the model `weights` names (mvs/weights/ name or .pt path) to the keyframe
    `plans` (positions in `posed`, dataset indices posed by `world_T_cam_44`) of `sequence`,
    shown to it at the depth it was made for from the scene's median depth `scene_depth`
    (`DepthNet.forward`, as depth estimation shows it), and write it to
    `out_dir/adapted.pt`, which `depth.weights` (`--weights`) reads back."""
    start = time.perf_counter()
    source_path = resolve_weights_path(weights)
    loaded = load_model(source_path, device)
    views = colour_views(sequence, world_T_cam_44, posed, plans, config.width, config.height, scene_depth)
    result = adapt_model(loaded.model, views, config, start=start)
    path = out_dir / ADAPTED_WEIGHTS_NAME
    training = {
        **loaded.training_config,
        "adapted_from": str(source_path),
        "adaptation": {**asdict(config), "loss_before": result.loss_before, "loss_after": result.loss_after},
    }
    save_model(path, loaded.model, training, loaded.validation)
    result.weights = str(path)
    result.seconds = time.perf_counter() - start
    return result


def describe_adaptation(config: AdaptConfig) -> str:
    """A few words on the adaptation a run will do, for the console."""
    return (
        f"adapted to the sequence first ({config.parameters}, at most {config.steps} steps or "
        f"{config.seconds:g} s, at {config.width}x{config.height})"
    )
