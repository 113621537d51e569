"""Multi-view depth consistency: closed-form planes seen from known cameras."""

import numpy as np
import pytest

from fusion.consistency import ConsistencyConfig, EstimatedDepth, confirmations_hw, filter_consistent
from mvs.geometry import make_pose_44
from mvs.types import Camera

CAMERA = Camera(np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]), 64, 48)
PLANE_DEPTH_M = 2.0


def camera_at_x(x_m: float) -> np.ndarray:
    """A camera looking down +z from (x, 0, 0): the plane z = 2 m is at depth 2 m in it."""
    return make_pose_44(np.eye(3), np.array([x_m, 0.0, 0.0]))


def plane_depth_hw() -> np.ndarray:
    return np.full((CAMERA.height, CAMERA.width), PLANE_DEPTH_M, dtype=np.float32)


def test_a_plane_is_confirmed_where_the_neighbour_sees_it_and_only_there():
    # 0.4 m to the right at 2 m shifts pixels by 50 * 0.4 / 2 = 10 columns to the left.
    count_hw = confirmations_hw(
        plane_depth_hw(), camera_at_x(0.0), [(plane_depth_hw(), camera_at_x(0.4))], CAMERA, 0.05
    )
    assert np.all(count_hw[:, 10:] == 1)
    assert np.all(count_hw[:, :10] == 0)


def test_depth_off_by_more_than_the_tolerance_is_not_confirmed():
    depth_hw = plane_depth_hw()
    depth_hw[:, 40:] *= 1.08  # 8 % too far: beyond a 5 % tolerance
    depth_hw[:, 20:30] *= 1.03  # 3 % too far: within it
    neighbours = [(plane_depth_hw(), camera_at_x(0.0)), (plane_depth_hw(), camera_at_x(0.05))]
    count_hw = confirmations_hw(depth_hw, camera_at_x(0.0), neighbours, CAMERA, 0.05)
    assert np.all(count_hw[:, 40:] == 0)
    assert np.all(count_hw[:, 20:30] == 2)
    assert np.all(count_hw[:, 30:40] == 2)


def test_empty_pixels_and_empty_neighbour_pixels_confirm_nothing():
    depth_hw = plane_depth_hw()
    depth_hw[:5] = 0.0
    neighbour_hw = plane_depth_hw()
    neighbour_hw[:, :32] = 0.0
    count_hw = confirmations_hw(depth_hw, camera_at_x(0.0), [(neighbour_hw, camera_at_x(0.0))], CAMERA, 0.05)
    assert np.all(count_hw[:5] == 0)
    assert np.all(count_hw[5:, :32] == 0)
    assert np.all(count_hw[5:, 32:] == 1)


def test_the_stream_keeps_order_and_drops_the_depth_map_that_disagrees():
    rng = np.random.default_rng(0)
    depths = [plane_depth_hw() for _ in range(6)]
    depths[3] = rng.uniform(0.5, 6.0, depths[3].shape).astype(np.float32)
    estimates = [EstimatedDepth(d, camera_at_x(0.02 * i), i) for i, d in enumerate(depths)]
    out = list(filter_consistent(iter(estimates), CAMERA, ConsistencyConfig(neighbours=2, min_confirmations=1)))
    assert [estimate.item for estimate, _ in out] == list(range(6))
    kept_share = [float(np.mean(depth_hw > 0)) for _, depth_hw in out]
    # Random depth agrees with a plane within 5 % on about 0.2 m / 5.5 m of its range.
    assert kept_share[3] < 0.1
    for i in (0, 1, 2, 4, 5):
        assert kept_share[i] > 0.85, (i, kept_share)


def test_no_neighbours_passes_depth_through_and_bad_settings_are_refused():
    estimates = [EstimatedDepth(plane_depth_hw(), camera_at_x(0.0), "only")]
    (estimate, depth_hw), = filter_consistent(iter(estimates), CAMERA, ConsistencyConfig(neighbours=0))
    assert estimate.item == "only" and np.array_equal(depth_hw, plane_depth_hw())
    (_, lone_hw), = filter_consistent(iter(estimates), CAMERA, ConsistencyConfig(neighbours=4))
    assert np.array_equal(lone_hw, plane_depth_hw())
    with pytest.raises(ValueError, match="max_relative_error"):
        list(filter_consistent(iter(estimates), CAMERA, ConsistencyConfig(max_relative_error=0.0)))


def test_held_estimates_come_out_before_an_interrupt():
    def interrupted():
        for i in range(3):
            yield EstimatedDepth(plane_depth_hw(), camera_at_x(0.02 * i), i)
        raise KeyboardInterrupt

    out = []
    with pytest.raises(KeyboardInterrupt):
        for estimate, _ in filter_consistent(interrupted(), CAMERA, ConsistencyConfig(neighbours=4)):
            out.append(estimate.item)
    assert out == [0, 1, 2]
