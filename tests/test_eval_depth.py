"""Confidence maps as a run writes them, and depth metrics over the pixels they confirm."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from fusion.export import CONFIDENCE_LEVELS, read_confidence_hw, write_confidence_png
from mvs.eval import evaluate_depth
from mvs.types import Camera, Frame, Sequence


def test_confidence_png_keeps_every_confirmed_pixel_confirmed(tmp_path: Path) -> None:
    confidence_hw = np.array([[0.0, 1e-9, 0.3], [0.5, 0.999999, 1.0]], dtype=np.float32)
    read_hw = read_confidence_hw(write_confidence_png(tmp_path / "7.png", confidence_hw))
    assert read_hw.shape == confidence_hw.shape and read_hw.dtype == np.float32
    np.testing.assert_allclose(read_hw, confidence_hw, atol=1.0 / CONFIDENCE_LEVELS)
    assert np.array_equal(read_hw > 0, confidence_hw > 0) and np.all(read_hw >= confidence_hw - 1e-7)


def test_a_depth_png_is_no_confidence_map(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "7.png"), np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="7.png"):
        read_confidence_hw(tmp_path / "7.png")


def flat_sequence(root: Path, gt_hw: np.ndarray) -> Sequence:
    height, width = gt_hw.shape
    return Sequence(
        name="flat", root=root, layout="synthetic", camera=Camera(np.array([[5.0, 0, 3], [0, 5.0, 2], [0, 0, 1]]), width, height),
        indices=[7], load_frame=lambda index: Frame(index, 0.0, np.zeros((height, width, 3), np.uint8), gt_hw),
        has_depth=True, has_poses=False,
    )


def test_depth_is_scored_on_every_pixel_and_on_the_confirmed_ones(tmp_path: Path) -> None:
    """A wall at 2 m: the left half estimated 10 % too far and confirmed, the right half 50 %
    too far and unconfirmed. Every pixel: AbsRel 0.3; confirmed: 0.1 on half of them."""
    gt_hw = np.full((4, 6), 2.0, dtype=np.float32)
    depth_hw, confidence_hw = np.full((4, 6), 3.0), np.zeros((4, 6))
    depth_hw[:, :3], confidence_hw[:, :3] = 2.2, 0.8
    (tmp_path / "depth").mkdir()
    cv2.imwrite(str(tmp_path / "depth" / "7.png"), np.round(depth_hw * 1000).astype(np.uint16))
    sequence = flat_sequence(tmp_path, gt_hw)

    every, confirmed, _ = evaluate_depth(sequence, tmp_path, 1.0, 0.0)
    assert every.abs_rel == pytest.approx(0.3) and every.completeness == pytest.approx(1.0)
    assert confirmed is None  # no confidence maps: nothing to tell confirmed pixels by

    (tmp_path / "confidence").mkdir()
    write_confidence_png(tmp_path / "confidence" / "7.png", confidence_hw)
    every, confirmed, _ = evaluate_depth(sequence, tmp_path, 1.0, 0.0)
    assert every.abs_rel == pytest.approx(0.3)
    assert confirmed.abs_rel == pytest.approx(0.1) and confirmed.completeness == pytest.approx(0.5)
    assert confirmed.delta1 == pytest.approx(1.0)
    _, stricter, _ = evaluate_depth(sequence, tmp_path, 1.0, 0.9)
    assert stricter.completeness == 0.0
