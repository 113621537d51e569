"""Killing `python -m mvs.run` half-way leaves a readable mesh and a report of the frames done."""

import json
import signal
import subprocess
import sys
import time

import open3d as o3d
import pytest

from fusion.consistency import ConsistencyConfig

# Depth maps written before the signal; each is fused right after it is written.
MAPS_BEFORE_SIGNAL = 4


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_fusing_keeps_the_frames_done(small_room, tmp_path, signum):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "mvs.run", "--sequence", str(small_room), "--out", str(out),
               "--depth", "classic", "--keyframes", "all", "--voxel-size", "0.05", "--device", "cpu", "--no-render"]
    with open(tmp_path / "log", "w") as log:
        # As from a terminal: a shell that starts a job in the background makes it ignore
        # SIGINT, and Python then raises no KeyboardInterrupt; restore the default first.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 300
        while len(list((out / "depth").glob("*.png"))) < MAPS_BEFORE_SIGNAL:
            assert process.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline, "no depth maps within 300 s"
            time.sleep(0.05)
        process.send_signal(signum)
        returncode = process.wait(timeout=300)
    output = (tmp_path / "log").read_text()
    assert returncode == 130, output
    assert "interrupted" in output
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "interrupted"
    written = len(list((out / "depth").glob("*.png")))
    assert report["depth_maps"] == written
    # Every map written was fused, except at most the one in hand when the signal came and,
    # when it came during fusion rather than estimation, those still held for the multi-view
    # consistency check of the maps after them.
    held = ConsistencyConfig().neighbours // 2
    assert written - 1 - held <= report["frames_fused"] <= written < report["keyframes"] == 40
    mesh = o3d.io.read_triangle_mesh(str(out / "mesh.ply"))
    assert len(mesh.triangles) > 100
    assert len(mesh.vertex_colors) == len(mesh.vertices)
    assert "interrupted" in (out / "report.html").read_text()
