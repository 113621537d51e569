"""report.html: depth colours, and the page a run writes and `mvs.eval` refreshes."""

import base64
import json
import re

import cv2
import numpy as np

from mvs.eval import main as eval_main
from mvs.report import NO_DEPTH_RGB, colourise_depth_hw3, depth_range
from mvs.run import main as run_main

IMAGE_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


def turbo_rgb(level: int) -> np.ndarray:
    return cv2.applyColorMap(np.array([[level]], np.uint8), cv2.COLORMAP_TURBO)[0, 0, ::-1]


def test_depth_colours_span_the_range_and_mark_missing_depth():
    depth_hw = np.array([[0.0, 1.0, 2.0, 3.0, 9.0]])
    colours_hw3 = colourise_depth_hw3(depth_hw, near=1.0, far=3.0)
    np.testing.assert_array_equal(colours_hw3[0, 0], NO_DEPTH_RGB)
    np.testing.assert_array_equal(colours_hw3[0, 1], turbo_rgb(0))
    np.testing.assert_array_equal(colours_hw3[0, 2], turbo_rgb(128))
    np.testing.assert_array_equal(colours_hw3[0, 3], turbo_rgb(255))
    np.testing.assert_array_equal(colours_hw3[0, 4], turbo_rgb(255))


def test_depth_range_is_shared_by_a_row_and_ignores_missing_depth():
    near, far = depth_range([np.linspace(1.0, 2.0, 101), np.concatenate([np.zeros(50), np.linspace(2.0, 3.0, 101)])])
    assert abs(near - np.percentile(np.linspace(1, 3, 202), 2)) < 0.02
    assert abs(far - np.percentile(np.linspace(1, 3, 202), 98)) < 0.02


def decoded_images(page: str) -> dict[str, np.ndarray]:
    """Embedded images of the page by caption, decoded to RGB."""
    images = {}
    for data, caption in IMAGE_URI.findall(page):
        bgr = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        images[caption] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return images


def test_run_writes_a_report_that_eval_refreshes_with_metrics(small_room, tmp_path, monkeypatch):
    # The mesh view is ray cast on the CPU: no Vulkan driver needed.
    monkeypatch.setenv("VK_ICD_FILENAMES", "/nonexistent")
    monkeypatch.setenv("VK_DRIVER_FILES", "/nonexistent")
    out = tmp_path / "out"
    assert run_main(["--sequence", str(small_room), "--out", str(out), "--device", "cpu", "--frames", "0:16:2",
                     "--depth", "classic", "--keyframes", "all", "--voxel-size", "0.05"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert str(out / "report.html") in report["outputs"] and "report" in report["seconds"]
    assert report["camera"]["width"] == 160 and len(report["camera"]["K_33"]) == 3
    page = (out / "report.html").read_text()
    assert "Not evaluated yet" in page and "<td>depth</td>" in page
    images = decoded_images(page)
    rows = [caption for caption in images if caption.endswith(": input")]
    assert len(rows) == 4
    estimates = [c for c in images if c.startswith("estimate, ")]
    sensors = [c for c in images if c.startswith("sensor depth, ")]
    assert len(estimates) == len(sensors) == 4
    # One range per row: the estimate and the sensor depth share its caption, and where
    # the classic sweep is right (synthetic room, exact poses) their colours agree.
    for estimate, sensor in zip(estimates, sensors):
        assert estimate.split(", ", 1)[1] == sensor.split(", ", 1)[1]
        difference_hw = np.abs(images[estimate].astype(int) - images[sensor].astype(int)).max(axis=2)
        assert np.mean(difference_hw < 40) > 0.5
    # Beside each estimate, the part its confidence map confirms, in the same colours.
    confirmed = [c for c in images if c.startswith("confirmed: ")]
    assert len(confirmed) == 4
    for estimate, part in zip(estimates, confirmed):
        assert re.match(r"confirmed: \d+% of the estimate, ", part) and part.split(", ", 1)[1] == estimate.split(", ", 1)[1]
        shown_hw = np.any(images[part] != NO_DEPTH_RGB, axis=2)
        assert shown_hw.mean() > 0.3
        np.testing.assert_array_equal(images[part][shown_hw], images[estimate][shown_hw])
    mesh_view = [c for c in images if c.startswith("mesh.ply")]
    assert len(mesh_view) == 1 and "Mesh view not rendered" not in page
    np.testing.assert_array_equal(images[mesh_view[0]],
                                  cv2.cvtColor(cv2.imread(str(out / "mesh.png")), cv2.COLOR_BGR2RGB))
    assert images[mesh_view[0]].shape == (720, 960, 3)
    assert np.mean(np.any(images[mesh_view[0]] < 250, axis=2)) > 0.1

    assert eval_main(["--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    scores = json.loads((out / "eval.json").read_text())
    assert "Not evaluated yet" not in page
    assert f'<td>mesh F-score @ 5 cm</td><td class="number">{scores["mesh"]["fscore"]:.3f}</td>' in page
    assert f'<td>depth AbsRel</td><td class="number">{scores["depth"]["abs_rel"]:.4f}</td>' in page
    assert "camera centres seen from above" in page
