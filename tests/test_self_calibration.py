"""Focal length from the frames (slam/self_calibration.py): closed forms of its pieces; the
estimate itself is tested on a rendered video in tests/test_video.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slam.self_calibration import GUESS_FIELD_OF_VIEW_DEG, centred_camera, guessed_camera, parabola_minimum


def test_parabola_minimum_is_the_vertex_of_the_lowest_three_samples() -> None:
    x_s = np.log(np.geomspace(0.5, 2.0, 9))
    y_s = 3.0 * (x_s - 0.1) ** 2 + 0.2
    assert parabola_minimum(x_s, y_s) == pytest.approx(0.1, abs=1e-9)
    # At an end of the range: the lowest sample itself.
    assert parabola_minimum(x_s, x_s) == x_s[0]


@pytest.mark.parametrize("width, height", [(640, 480), (480, 640), (1920, 1080)])
def test_the_search_starts_from_a_centred_camera_with_the_guessed_field_of_view(width: int, height: int) -> None:
    camera = guessed_camera(width, height)
    assert 2 * math.degrees(math.atan(max(width, height) / 2 / camera.fx)) == pytest.approx(GUESS_FIELD_OF_VIEW_DEG)
    assert camera.fy == camera.fx
    np.testing.assert_allclose(centred_camera(500.0, width, height).K_33,
                               [[500, 0, (width - 1) / 2], [0, 500, (height - 1) / 2], [0, 0, 1]])
