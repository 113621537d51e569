"""Training pieces: schedule, augmentation, sampling, depth balance, and a tiny run with resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import mvs.train as train
import mvs.train_data as data
from mvs.geometry import invert_pose_44, make_pose_44
from mvs.network import DepthNet, ModelConfig, load_model, save_model
from mvs.types import Camera


def fake_room(width: int = 64, height: int = 48, frames: int = 30, depth_mm: int = 2000) -> data.RoomData:
    """Random images, a flat depth (2 m), cameras moving 2 cm per frame sideways."""
    rng = np.random.default_rng(0)
    focal = 525.0 * width / 640
    camera = Camera(np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]]), width, height)
    return data.RoomData(
        images_nhw3=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        depths_nhw=np.full((frames, height, width), depth_mm, dtype=np.uint16),
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
    config = data.AugmentConfig(jpeg_probability=1.0, blur_probability=1.0, motion_blur_probability=1.0)
    a_hw3 = data.augment_image_hw3(image_hw3, np.random.default_rng(5), config)
    b_hw3 = data.augment_image_hw3(image_hw3, np.random.default_rng(5), config)
    assert a_hw3.shape == (48, 64, 3) and a_hw3.dtype == np.float32
    assert a_hw3.min() >= 0.0 and a_hw3.max() <= 1.0
    assert np.array_equal(a_hw3, b_hw3)
    # Exposure only: a gain of exactly 1.2 scales the image.
    exposure = data.AugmentConfig(
        gain_range=(1.2, 1.2), gamma_range=(1.0, 1.0), channel_gain=0.0, offset=0.0, noise_sigma_max=0.0,
        blur_probability=0.0, motion_blur_probability=0.0, jpeg_probability=0.0, vignetting_probability=0.0,
    )
    dark_hw3 = (image_hw3 // 2).astype(np.uint8)
    scaled_hw3 = data.augment_image_hw3(dark_hw3, np.random.default_rng(0), exposure)
    np.testing.assert_allclose(scaled_hw3, dark_hw3 / 255.0 * 1.2, atol=1e-6)


def test_samples_pair_a_reference_with_two_sources_at_good_baselines() -> None:
    room = fake_room()
    config = data.SamplingConfig()
    sample = data.draw_sample(room, np.random.default_rng(0), config, None)
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
    noisy_44 = data.perturb_pose_44(a_T_b_44, np.random.default_rng(0), 0.2, 0.003)
    np.testing.assert_allclose(noisy_44[:3, :3] @ noisy_44[:3, :3].T, np.eye(3), atol=1e-9)
    relative_44 = invert_pose_44(a_T_b_44) @ noisy_44
    assert np.linalg.norm(relative_44[:3, 3]) < 0.02
    assert math.degrees(math.acos(min(1.0, (np.trace(relative_44[:3, :3]) - 1) / 2))) < 1.5


def test_tiny_training_run_writes_weights_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(train, "prepare_room", lambda spec, data_dir: fake_room())
    config = train.TrainConfig(
        name="tiny", rooms=2, val_rooms=1, steps=2, batch_size=2, warmup_steps=1, val_every=1,
        checkpoint_every=1, log_every=1, val_samples_per_room=2, runs_dir=str(tmp_path / "runs"),
        weights_dir=str(tmp_path / "weights"), model=ModelConfig(widths=(8, 8, 8, 8), feature_channels=4),
    )
    metrics = train.run(config, resume=False)
    assert 0.0 < metrics.abs_rel < 10.0 and metrics.completeness == 1.0
    # Every pixel of the fake rooms is 2 m away.
    assert "true depth of the training references: < 0.3 m 0.0%, 0.3-1 m 0.0%, 1-2 m 0.0%, 2-4 m 100.0%" in (
        capsys.readouterr().out
    )
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
    monkeypatch.setattr(train, "prepare_room", lambda spec, data_dir: fake_room())
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


def test_rolling_shutter_shifts_rows_in_proportion_to_their_distance_from_the_middle() -> None:
    height, width = 48, 64
    ramp_hw3 = np.repeat(np.tile(np.arange(width, dtype=np.float32), (height, 1))[..., None], 3, axis=2)
    skewed_hw3 = data.rolling_shutter_hw3(ramp_hw3, np.array([2.0, 0.0]))
    lag_h = (np.arange(height) - (height - 1) / 2) / (height / 2)
    # Away from the left and right edges (replicated), row v reads the ramp 2 * lag(v) pixels to the left.
    np.testing.assert_allclose(skewed_hw3[:, 4:-4, 0] - ramp_hw3[:, 4:-4, 0], -2.0 * lag_h[:, None] * np.ones((1, width - 8)),
                               atol=1e-4)
    assert abs(skewed_hw3[0, 10, 0] - ramp_hw3[0, 10, 0]) > 1.9


def test_only_sources_get_the_rolling_shutter() -> None:
    room = fake_room()
    room.images_nhw3 = np.repeat(room.images_nhw3[:1], len(room.images_nhw3), axis=0)  # one image everywhere
    only_shutter = data.AugmentConfig(
        gain_range=(1.0, 1.0), gamma_range=(1.0, 1.0), channel_gain=0.0, offset=0.0, noise_sigma_max=0.0,
        blur_probability=0.0, motion_blur_probability=0.0, jpeg_probability=0.0, vignetting_probability=0.0,
        shading_probability=0.0, rolling_shutter_probability=1.0, rolling_shutter_max_px=3.0, pose_noise_probability=0.0,
    )
    sample = data.draw_sample(room, np.random.default_rng(3), data.SamplingConfig(), only_shutter)
    image_3hw = torch.from_numpy(room.images_nhw3[0] / np.float32(255)).permute(2, 0, 1)
    assert torch.equal(sample.ref_image_3hw, image_3hw)
    for source_3hw in sample.src_images_n3hw:
        assert (source_3hw - image_3hw).abs().mean() > 0.01


def test_depth_range_shares_count_valid_pixels() -> None:
    shares = data.depth_range_shares([np.array([[0.2, 0.5, 1.5], [3.0, 0.0, 5.0]]), np.array([12.0])])
    assert shares.below == pytest.approx(1 / 6) and shares.above == pytest.approx(1 / 6)
    np.testing.assert_allclose(shares.shares_k, [1 / 6] * 4)
    assert shares.summary().startswith("< 0.3 m 16.7%, 0.3-1 m 16.7%, 1-2 m 16.7%")
    with pytest.raises(ValueError, match="no"):
        data.depth_range_shares([np.zeros((2, 2))])


def test_balanced_references_spread_over_the_depth_ranges() -> None:
    near, far = fake_room(frames=30, depth_mm=500), fake_room(frames=10, depth_mm=3000)
    edges_m = (0.3, 0.6, 1.2, 2.4, 4.8, 10.0)
    # 30 frames at 0.5 m and 10 at 3 m: each range drawn alike, so each room half the time.
    np.testing.assert_allclose(data.balance_references([near, far], edges_m, max_ratio=4.0), [0.5, 0.5])
    np.testing.assert_allclose(near.reference_weights_n, np.full(30, 1 / 30))
    # A far frame may weigh at most twice a near one: 30 : 10 * 2 = 0.6 : 0.4.
    np.testing.assert_allclose(data.balance_references([near, far], edges_m, max_ratio=2.0), [0.6, 0.4])
