"""`--intrinsics`: numbers or calibration files (simple, OpenCV, ROS), scaling, undistortion."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mvs.io.intrinsics import Calibration, parse_intrinsics
from mvs.io.layout import open_sequence

K1 = 0.2  # radial distortion of the test lens (pincushion)


def test_numbers_and_errors(tmp_path):
    assert parse_intrinsics("") is None
    calibration = parse_intrinsics("500, 501.5,319.5,239.5")
    assert (calibration.fx, calibration.fy, calibration.cx, calibration.cy) == (500.0, 501.5, 319.5, 239.5)
    assert calibration.size_wh is None and not calibration.has_distortion
    np.testing.assert_array_equal(calibration.camera(640, 480).K_33, [[500, 0, 319.5], [0, 501.5, 239.5], [0, 0, 1]])
    with pytest.raises(ValueError, match=re.escape("--intrinsics 'a,b,c,d': expected four numbers fx,fy,cx,cy")):
        parse_intrinsics("a,b,c,d")
    with pytest.raises(ValueError, match=re.escape("expected finite intrinsics with fx, fy > 0")):
        parse_intrinsics("0,500,320,240")
    with pytest.raises(FileNotFoundError, match=re.escape("--intrinsics '500,500': neither four numbers")):
        parse_intrinsics("500,500")


def test_simple_yaml_scales_to_the_input_resolution(tmp_path):
    path = tmp_path / "calib.yaml"
    path.write_text("fx: 1000\nfy: 1002\ncx: 959.5\ncy: 539.5\nwidth: 1920\nheight: 1080\n")
    calibration = parse_intrinsics(str(path))
    assert calibration.size_wh == (1920, 1080) and calibration.source == str(path)
    camera = calibration.camera(640, 360)  # the same camera, a third of the size
    np.testing.assert_allclose([camera.fx, camera.fy, camera.cx, camera.cy], [1000 / 3, 334.0, 319.5, 179.5])
    path.write_text("fx: 1000\nfy: 1002\ncx: 959.5\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}: missing cy")):
        parse_intrinsics(str(path))
    path.write_text("fx: 1000\nfy: 1002\ncx: 959.5\ncy: 539.5\nwidth: 1920\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}: give both the width and the height")):
        parse_intrinsics(str(path))
    path.write_text("fx: 1000\nfy: 1002\ncx: 959.5\ncy: 539.5\nfocal: 3\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}: unknown keys ['focal']")):
        parse_intrinsics(str(path))


def test_opencv_and_ros_calibration_files(tmp_path):
    K_33 = np.array([[612.5, 0, 321.25], [0, 611.0, 238.75], [0, 0, 1]])
    distortion_5 = np.array([[0.11, -0.23, 0.001, -0.002, 0.05]])
    opencv_path = tmp_path / "opencv.yaml"
    storage = cv2.FileStorage(str(opencv_path), cv2.FILE_STORAGE_WRITE)
    storage.write("image_width", 640)
    storage.write("image_height", 480)
    storage.write("camera_matrix", K_33)
    storage.write("distortion_coefficients", distortion_5)
    storage.release()
    opencv_1_0_path = tmp_path / "opencv_1_0.yaml"  # the header of files written before OpenCV 5
    opencv_1_0_path.write_text(re.sub(r"^%YAML.*\n", "%YAML:1.0\n", opencv_path.read_text()))
    ros_path = tmp_path / "ros.yaml"
    ros_path.write_text(
        "image_width: 640\nimage_height: 480\ncamera_name: phone\n"
        f"camera_matrix: {{rows: 3, cols: 3, data: {K_33.ravel().tolist()}}}\n"
        "distortion_model: plumb_bob\n"
        f"distortion_coefficients: {{rows: 1, cols: 5, data: {distortion_5.ravel().tolist()}}}\n"
    )
    for path in (opencv_path, opencv_1_0_path, ros_path):
        calibration = parse_intrinsics(str(path))
        assert calibration.size_wh == (640, 480) and calibration.has_distortion
        np.testing.assert_array_equal(calibration.camera(640, 480).K_33, K_33)
        np.testing.assert_array_equal(calibration.distortion, distortion_5.ravel())
    ros_path.write_text("camera_matrix: {rows: 3, cols: 3, data: [600, 0, 320, 0, 600, 240]}\n")
    with pytest.raises(ValueError, match=re.escape(f"{ros_path}: expected 9 numbers in camera_matrix")):
        parse_intrinsics(str(ros_path))


def write_distorted_folder(root: Path, fx: float, cx: float, cy: float, dots_uv: list[tuple[float, float]]) -> None:
    """A 160x120 image folder seen through a lens with radial distortion K1: white dots whose
    undistorted pixels are `dots_uv`, and a constant depth of 2 m."""
    (root / "images").mkdir(parents=True)
    (root / "depth").mkdir()
    image_hw3 = np.zeros((120, 160, 3), np.uint8)
    for u, v in dots_uv:
        x, y = (u - cx) / fx, (v - cy) / fx
        scale = 1 + K1 * (x * x + y * y)  # x_distorted = x (1 + k1 r^2)
        cv2.circle(image_hw3, (round((fx * x * scale + cx) * 16), round((fx * y * scale + cy) * 16)), 2 * 16,
                   (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    cv2.imwrite(str(root / "images" / "0.png"), image_hw3)
    cv2.imwrite(str(root / "depth" / "0.png"), np.full((120, 160), 2000, np.uint16))


def test_distorted_frames_are_undistorted(tmp_path):
    fx, cx, cy = 100.0, 79.5, 59.5
    dots_uv = [(20.0, 15.0), (140.0, 100.0), (79.5, 59.5), (130.0, 20.0)]
    write_distorted_folder(tmp_path / "lens", fx, cx, cy, dots_uv)
    calibration_path = tmp_path / "lens.yaml"
    # Calibrated at twice the resolution: the values are scaled to the 160x120 images.
    calibration_path.write_text(
        f"fx: {2 * fx}\nfy: {2 * fx}\ncx: {2 * cx + 0.5}\ncy: {2 * cy + 0.5}\nwidth: 320\nheight: 240\n"
        f"distortion: [{K1}, 0, 0, 0, 0]\n"
    )
    frame = open_sequence(str(tmp_path / "lens"), intrinsics=parse_intrinsics(str(calibration_path)))[0]
    grey_hw = frame.image_hw3[..., 0].astype(float)
    for u, v in dots_uv:
        window_hw = grey_hw[int(v) - 6 : int(v) + 7, int(u) - 6 : int(u) + 7]
        v_hw, u_hw = np.mgrid[int(v) - 6 : int(v) + 7, int(u) - 6 : int(u) + 7]
        centroid_uv = (np.sum(u_hw * window_hw) / window_hw.sum(), np.sum(v_hw * window_hw) / window_hw.sum())
        # Each dot is back at its undistorted pixel (bilinear resampling of an antialiased disc).
        np.testing.assert_allclose(centroid_uv, (u, v), atol=0.25)
    # Depth is resampled by nearest neighbour: 2 m wherever the distorted image saw it, 0 past it.
    assert set(np.unique(frame.depth_hw)) <= {0.0, 2.0} and frame.depth_hw[60, 80] == 2.0
    assert frame.depth_hw[0, 0] == 0.0  # a pincushion lens sees less than the pinhole camera at its corners
    plain = open_sequence(str(tmp_path / "lens"), intrinsics=Calibration(fx, fx, cx, cy))[0]
    assert np.abs(plain.image_hw3.astype(int) - frame.image_hw3).max() > 100  # undistortion moved the dots
