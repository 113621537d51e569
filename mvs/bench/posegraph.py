"""The `posegraph` suite of `python -m mvs.bench`: the Sim(3) pose graph of loop closure on
drifted camera circles of growing size, timed in this process.

Each graph is what closing a loop gives the solver: keyframes on a 2 m circle, each camera
looking at its centre, whose chain drifted as monocular odometry does (each step's translation
scaled by a growing factor and its rotation turned a little more); an edge from each keyframe
to its next five as they are (the chain and the shared-point partners), and the loop from the
last keyframe to the first, measured without drift.
"""

from __future__ import annotations

import resource
import time

import numpy as np
from scipy.spatial.transform import Rotation

from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext
from slam.pose_graph import SimilarityEdge, optimise_pose_graph, similarity_44

SIZES = (100, 250, 1000, 4000)
PARTNERS = 5
LAP_SCALE_DRIFT = 1.26
LAP_YAW_DRIFT_DEG = 9.6
"""Drift by the end of the lap whatever its number of keyframes: the last step's scale and
the yaw (the loop-closure tests' 24 keyframes at 1 % and 0.4 degrees a step)."""


def circle_n44(nodes: int, radius: float = 2.0) -> np.ndarray:
    """Poses (N, 4, 4) on a circle of `radius` metres, each camera looking at its centre."""
    poses = []
    for angle in np.linspace(0, 2 * np.pi, nodes, endpoint=False):
        R_33 = Rotation.from_euler("y", -angle).as_matrix()
        poses.append(similarity_44(R_33, radius * np.array([np.sin(angle), 0.0, -np.cos(angle)]), 1.0))
    return np.stack(poses)


def drifted_chain_n44(truth_n44: np.ndarray, scale_step: float, yaw_step_deg: float) -> np.ndarray:
    """The chain re-composed from its relative motions, each with its translation scaled by
    a growing factor (`scale_step` ** k) and its rotation turned `yaw_step_deg` more:
    monocular odometry's drift."""
    drifted = [truth_n44[0]]
    for k in range(1, len(truth_n44)):
        step_44 = np.linalg.inv(truth_n44[k - 1]) @ truth_n44[k]
        step_44[:3, 3] *= scale_step**k
        step_44[:3, :3] = Rotation.from_euler("y", yaw_step_deg, degrees=True).as_matrix() @ step_44[:3, :3]
        drifted.append(drifted[-1] @ step_44)
    return np.stack(drifted)


def loop_graph(nodes: int) -> tuple[np.ndarray, np.ndarray, list[SimilarityEdge]]:
    """A drifted circle of `nodes` keyframes (see the module): true poses (N, 4, 4), drifted
    poses (N, 4, 4) and the edges."""
    truth_n44 = circle_n44(nodes)
    scale_step = LAP_SCALE_DRIFT ** (1.0 / (nodes - 1))
    start_n44 = drifted_chain_n44(truth_n44, scale_step, LAP_YAW_DRIFT_DEG / nodes)
    edges = [
        SimilarityEdge(i, j, np.linalg.inv(start_n44[i]) @ start_n44[j])
        for i in range(nodes)
        for j in range(i + 1, min(nodes, i + 1 + PARTNERS))
    ]
    last_44 = truth_n44[-1] @ similarity_44(np.eye(3), np.zeros(3), 1.0 / LAP_SCALE_DRIFT)
    edges.append(SimilarityEdge(0, nodes - 1, np.linalg.inv(truth_n44[0]) @ last_44))
    return truth_n44, start_n44, edges


def centre_error_m(poses_n44: np.ndarray, truth_n44: np.ndarray) -> float:
    """RMS distance (m) between the camera centres of two sets of poses (N, 4, 4)."""
    return float(np.sqrt(np.mean(np.sum((poses_n44[:, :3, 3] - truth_n44[:, :3, 3]) ** 2, axis=1))))


def run(context: BenchContext) -> tuple[list[Table], dict]:
    table = Table(
        "Sim(3) pose graph of a loop closure: seconds and memory by size",
        ["python -m mvs.bench posegraph"],
        ["keyframes", "edges", "solve", "camera centres RMS before -> after", "peak RSS of the process"],
        "rrrrr",
        notes=f"Drifted circles (2 m, {LAP_SCALE_DRIFT:.2f}x scale and {LAP_YAW_DRIFT_DEG:.0f} degrees of yaw over the lap), "
              f"each keyframe tied to its next {PARTNERS} as they are, plus the loop; `slam/pose_graph.py` defaults. "
              "Sizes run in increasing order in one process, so each peak is that size's.",
    )
    data = {}
    for nodes in SIZES:
        truth_n44, start_n44, edges = loop_graph(nodes)
        fixed_n = np.arange(nodes) == 0
        started = time.perf_counter()
        corrected_n44 = optimise_pose_graph(start_n44, edges, fixed_n)
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        before, after = centre_error_m(start_n44, truth_n44), centre_error_m(corrected_n44, truth_n44)
        print(f"  {nodes} keyframes: {seconds:.2f} s, {before:.3f} -> {after:.3f} m, peak {peak_mb:.0f} MB", flush=True)
        table.add_row(str(nodes), str(len(edges)), fmt(seconds, 2, " s"), f"{before * 100:.1f} -> {after * 100:.1f} cm",
                      f"{peak_mb:.0f} MB")
        data[str(nodes)] = {"edges": len(edges), "seconds": seconds, "before_m": before, "after_m": after,
                            "peak_rss_mb": peak_mb}
    return [table], data
