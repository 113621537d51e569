"""Training pieces: schedule, augmentation, sampling, and a tiny run with resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import mvs.train as train
from mvs.geometry import invert_pose_44, make_pose_44
from mvs.network import DepthNet, ModelConfig, load_model, save_model
from mvs.types import Camera


def fake_room(width: int = 64, height: int = 48, frames: int = 30) -> train.RoomData:
    """Random images, a flat 2 m depth, cameras moving 2 cm per frame sideways."""
    rng = np.random.default_rng(0)
    focal = 525.0 * width / 640
    camera = Camera(np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]]), width, height)
    return train.RoomData(
        images_nhw3=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        depths_nhw=np.full((frames, height, width), 2000, dtype=np.uint16),
        world_T_cam_n44=np.stack([make_pose_44(np.eye(3), np.array([0.02 * i, 0, 0])) for i in range(frames)]),
        camera=camera,
    )


def test_learning_rate_schedule() -> None:
    config = train.TrainConfig(steps=1100, warmup_steps=100, learning_rate=1e-3, min_learning_rate=1e-5)
    assert train.learning_rate(0, config) == pytest.approx(1e-5)
    assert train.learning_rate(99, config) == pytest.approx(1e-3)
    assert train.learning_rate(600, config) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert train.learning_rate(1100, config) == pytest.approx(1e-5)


def test_augmentation_keeps_range_shape_and_is_reproducible() -> None:
    image_hw3 = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    config = train.AugmentConfig(jpeg_probability=1.0, blur_probability=1.0, motion_blur_probability=1.0)
    a_hw3 = train.augment_image_hw3(image_hw3, np.random.default_rng(5), config)
    b_hw3 = train.augment_image_hw3(image_hw3, np.random.default_rng(5), config)
    assert a_hw3.shape == (48, 64, 3) and a_hw3.dtype == np.float32
    assert a_hw3.min() >= 0.0 and a_hw3.max() <= 1.0
    assert np.array_equal(a_hw3, b_hw3)
    # Exposure only: a gain of exactly 1.2 scales the image.
    exposure = train.AugmentConfig(
        gain_range=(1.2, 1.2), gamma_range=(1.0, 1.0), channel_gain=0.0, offset=0.0, noise_sigma_max=0.0,
        blur_probability=0.0, motion_blur_probability=0.0, jpeg_probability=0.0, vignetting_probability=0.0,
    )
    dark_hw3 = (image_hw3 // 2).astype(np.uint8)
    scaled_hw3 = train.augment_image_hw3(dark_hw3, np.random.default_rng(0), exposure)
    np.testing.assert_allclose(scaled_hw3, dark_hw3 / 255.0 * 1.2, atol=1e-6)


def test_samples_pair_a_reference_with_two_sources_at_good_baselines() -> None:
    room = fake_room()
    config = train.TrainConfig()
    sample = train.draw_sample(room, np.random.default_rng(0), config, augment=False)
    assert sample.ref_image_3hw.shape == (3, 48, 64)
    assert sample.src_images_n3hw.shape == (2, 3, 48, 64)
    assert torch.all(sample.depth_1hw == 2.0)
    baselines_n = torch.linalg.norm(sample.src_T_ref_n44[:, :3, 3], dim=1)
    assert torch.all(baselines_n >= config.min_source_distance - 1e-6)
    assert torch.all(baselines_n <= config.max_source_distance + 1e-6)
    # Without augmentation the transforms are the exact relative poses (1 pixel shift <-> 2 cm).
    shifts = sample.src_T_ref_n44[:, 0, 3].numpy() / 0.02
    np.testing.assert_allclose(shifts, np.rint(shifts), atol=1e-5)


def test_pose_noise_is_small_and_rigid() -> None:
    a_T_b_44 = make_pose_44(np.eye(3), np.array([0.1, 0.0, 0.0]))
    noisy_44 = train.perturb_pose_44(a_T_b_44, np.random.default_rng(0), 0.2, 0.003)
    np.testing.assert_allclose(noisy_44[:3, :3] @ noisy_44[:3, :3].T, np.eye(3), atol=1e-9)
    relative_44 = invert_pose_44(a_T_b_44) @ noisy_44
    assert np.linalg.norm(relative_44[:3, 3]) < 0.02
    assert math.degrees(math.acos(min(1.0, (np.trace(relative_44[:3, :3]) - 1) / 2))) < 1.5


def test_tiny_training_run_writes_weights_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "prepare_room", lambda seed, textureless, config: fake_room())
    config = train.TrainConfig(
        name="tiny", rooms=2, val_rooms=1, steps=2, batch_size=2, warmup_steps=1, val_every=1,
        checkpoint_every=1, log_every=1, val_samples_per_room=2, runs_dir=str(tmp_path / "runs"),
        weights_dir=str(tmp_path / "weights"), model=ModelConfig(widths=(8, 8, 8, 8), feature_channels=4),
    )
    metrics = train.run(config, resume=False)
    assert 0.0 < metrics.abs_rel < 10.0 and metrics.completeness == 1.0
    weights_path = tmp_path / "weights" / "tiny.pt"
    loaded = load_model(weights_path)
    assert loaded.validation["step"] == 2
    assert loaded.training_config["steps"] == 2
    assert (tmp_path / "runs" / "tiny" / "loss.png").is_file()
    with pytest.raises(ValueError, match="--resume"):
        train.run(config, resume=False)
    resumed = train.run(dataclasses.replace(config, steps=3), resume=True)
    assert load_model(weights_path).validation["step"] == 3
    assert np.isfinite(resumed.abs_rel)
    with pytest.raises(ValueError, match="no checkpoint"):
        train.run(dataclasses.replace(config, name="other"), resume=True)


def test_fine_tuning_starts_from_the_given_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a learning rate of 0 the fine-tuned model's parameters are those it started from
    (batch-norm statistics aside, which training updates without the optimiser)."""
    monkeypatch.setattr(train, "prepare_room", lambda seed, textureless, config: fake_room())
    model_config = ModelConfig(widths=(8, 8, 8, 8), feature_channels=4)
    torch.manual_seed(7)
    start = DepthNet(model_config)
    save_model(tmp_path / "start.pt", start, {}, {})
    config = train.TrainConfig(
        name="tuned", rooms=1, val_rooms=1, steps=1, batch_size=1, warmup_steps=1, val_every=1,
        learning_rate=0.0, min_learning_rate=0.0, val_samples_per_room=1, runs_dir=str(tmp_path / "runs"),
        weights_dir=str(tmp_path / "weights"), model=model_config, init_weights=str(tmp_path / "start.pt"),
    )
    train.run(config, resume=False)
    tuned = load_model(tmp_path / "weights" / "tuned.pt").model.named_parameters()
    started = dict(start.named_parameters())
    assert all(torch.equal(value, started[name]) for name, value in tuned)
    fresh = DepthNet(model_config)
    assert not torch.equal(fresh.encoder.layers[0][0].weight, start.encoder.layers[0][0].weight)
