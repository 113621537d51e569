"""Loop closure: the Sim(3) pose graph in closed forms, and an injected monocular drift removed
from a map's keyframes and points by a loop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mvs.bench.posegraph import centre_error_m, circle_n44, drifted_chain_n44
from mvs.geometry import invert_pose_44, transform_n3
from slam.alignment import Similarity
from slam.loop_closure import LoopConfig, close_loop, correction_size
from slam.map import Keyframe, SparseMap
from slam.pose_graph import SimilarityEdge, optimise_pose_graph, scale_of, similarity_44
from slam.relocalise import PieceMatch

NODES = 24
SCALE_STEP = 1.01
POINTS_PER_KEYFRAME = 10


def _odometry_edges(poses_n44: np.ndarray) -> list[SimilarityEdge]:
    return [SimilarityEdge(k, k + 1, np.linalg.inv(poses_n44[k]) @ poses_n44[k + 1]) for k in range(len(poses_n44) - 1)]


def test_consistent_edges_leave_the_poses_unchanged():
    truth_n44 = circle_n44(NODES)
    fixed_n = np.arange(NODES) == 0
    corrected_n44 = optimise_pose_graph(truth_n44, _odometry_edges(truth_n44), fixed_n)
    np.testing.assert_allclose(corrected_n44, truth_n44, atol=1e-9)


def test_a_single_edge_moves_a_free_node_to_its_measured_similarity():
    truth_n44 = circle_n44(NODES)[:2]
    measured_44 = similarity_44(Rotation.from_euler("xyz", [3, -5, 10], degrees=True).as_matrix(), np.array([0.3, -0.2, 0.5]), 1.7)
    start_n44 = truth_n44.copy()
    corrected_n44 = optimise_pose_graph(start_n44, [SimilarityEdge(0, 1, measured_44)], np.array([True, False]))
    np.testing.assert_allclose(corrected_n44[1], truth_n44[0] @ measured_44, atol=1e-8)
    assert scale_of(corrected_n44[1]) == pytest.approx(1.7, rel=1e-9)


def test_a_loop_edge_removes_an_injected_drift():
    truth_n44 = circle_n44(NODES)
    drifted_n44 = drifted_chain_n44(truth_n44, scale_step=SCALE_STEP, yaw_step_deg=0.4)
    before_m = centre_error_m(drifted_n44, truth_n44)
    # The loop's similarity, as matching the last keyframe's points to the first's finds it:
    # the last camera's true pose, and the scale from its map's units (grown by the drift) to
    # the first's.
    last_44 = truth_n44[NODES - 1] @ similarity_44(np.eye(3), np.zeros(3), SCALE_STEP ** -(NODES - 1))
    loop = SimilarityEdge(0, NODES - 1, np.linalg.inv(truth_n44[0]) @ last_44)
    fixed_n = np.arange(NODES) == 0
    corrected_n44 = optimise_pose_graph(drifted_n44, _odometry_edges(drifted_n44) + [loop], fixed_n)
    after_m = centre_error_m(corrected_n44, truth_n44)
    # The drift puts the last camera 0.67 m from its place (0.42 m RMS over the chain); the
    # loop brings it back and spreads the correction along the chain.
    assert before_m > 0.4
    assert after_m < 0.15 * before_m  # measured 0.039 m
    np.testing.assert_allclose(corrected_n44[-1][:3, 3], truth_n44[-1][:3, 3], atol=0.02)


def test_a_graph_without_a_fixed_node_is_refused():
    truth_n44 = circle_n44(NODES)
    with pytest.raises(ValueError, match="fixed"):
        optimise_pose_graph(truth_n44, _odometry_edges(truth_n44), np.zeros(NODES, dtype=bool))


def _drifted_map() -> tuple[SparseMap, np.ndarray, np.ndarray]:
    """A map of one piece whose keyframes drifted as monocular odometry does, each with the
    points born at it (seen 1-2 m ahead; in the drifted map their distances grew with the
    scale drift): the map, the true poses (N, 4, 4) and the true points (N * P, 3)."""
    truth_n44 = circle_n44(NODES)
    drifted_n44 = drifted_chain_n44(truth_n44, scale_step=SCALE_STEP, yaw_step_deg=0.4)
    rng = np.random.default_rng(0)
    world = SparseMap()
    world.points.reserve(NODES * POINTS_PER_KEYFRAME)
    true_points = []
    for k in range(NODES):
        cam_p3 = np.column_stack([rng.uniform(-0.5, 0.5, (POINTS_PER_KEYFRAME, 2)), rng.uniform(1, 2, POINTS_PER_KEYFRAME)])
        ids_p = np.arange(k * POINTS_PER_KEYFRAME, (k + 1) * POINTS_PER_KEYFRAME)
        world.points.xyz_n3[ids_p] = transform_n3(drifted_n44[k], SCALE_STEP**k * cam_p3)
        world.points.ok_n[ids_p] = True
        world.points.birth_kf_n[ids_p] = k
        true_points.append(transform_n3(truth_n44[k], cam_p3))
        world.keyframes.append(
            Keyframe(k, invert_pose_44(drifted_n44[k]), ids_p, np.zeros((POINTS_PER_KEYFRAME, 2)),
                     np.ones(POINTS_PER_KEYFRAME, dtype=bool), np.zeros((4, 4), np.uint8))
        )
    return world, truth_n44, np.concatenate(true_points)


def test_closing_a_loop_corrects_the_keyframes_and_moves_the_points_with_them():
    world, truth_n44, true_points_n3 = _drifted_map()
    last = NODES - 1
    loop = _loop_to_truth(world, truth_n44)
    matched_n = loop.other_ids_n
    assert correction_size(world, loop) > 0.2  # measured 0.30
    centres_before_n3 = np.stack([kf.centre_3 for kf in world.keyframes])
    error_before_m = np.sqrt(np.mean(np.sum((centres_before_n3 - truth_n44[:, :3, 3]) ** 2, axis=1)))
    points_before_m = np.sqrt(np.mean(np.sum((world.points.xyz_n3[: len(true_points_n3)] - true_points_n3) ** 2, axis=1)))

    scales = close_loop(world, loop, LoopConfig())

    centres_n3 = np.stack([kf.centre_3 for kf in world.keyframes])
    error_m = np.sqrt(np.mean(np.sum((centres_n3 - truth_n44[:, :3, 3]) ** 2, axis=1)))
    points_m = np.sqrt(np.mean(np.sum((world.points.xyz_n3[: len(true_points_n3)] - true_points_n3) ** 2, axis=1)))
    # Measured: keyframe centres 0.42 m -> 0.039 m RMS, points 0.22 m -> 0.037 m RMS; the last
    # keyframe lands on its true pose and its camera frame shrinks by the accumulated drift.
    assert error_m < 0.15 * error_before_m
    assert points_m < 0.25 * points_before_m
    np.testing.assert_allclose(centres_n3[last], truth_n44[last][:3, 3], atol=0.01)
    assert set(scales) == set(range(1, NODES))
    assert scales[last] == pytest.approx(SCALE_STEP**-last, rel=0.01)
    np.testing.assert_allclose(world.keyframes[0].cam_T_world_44, invert_pose_44(truth_n44[0]), atol=1e-12)
    assert np.isin(matched_n, world.keyframes[last].track_ids_n).all()


def _loop_to_truth(world: SparseMap, truth_n44: np.ndarray) -> PieceMatch:
    """The loop from the drifted map's last keyframe to its first, with the similarity that
    puts the last keyframe on its true pose (it maps the last keyframe's drifted map onto the
    first keyframe's), matching points 0-2."""
    last = NODES - 1
    drifted_last_44 = invert_pose_44(world.keyframes[last].cam_T_world_44)
    loop_T_world_44 = truth_n44[last] @ similarity_44(np.eye(3), np.zeros(3), SCALE_STEP**-last) @ np.linalg.inv(drifted_last_44)
    scale = scale_of(loop_T_world_44)
    return PieceMatch(last, 0, Similarity(scale, loop_T_world_44[:3, :3] / scale, loop_T_world_44[:3, 3]), np.arange(3), np.zeros((3, 2)))


def _moved_from_first_m(covisible_points: int) -> float:
    """How far a new loop moves keyframe TIED relative to keyframe 0, when TIED observes all
    of keyframe 0's points (as an earlier loop leaves them) and the pose graph keeps pairs
    sharing at least `covisible_points` points as they are."""
    world, truth_n44, _ = _drifted_map()
    tied = world.keyframes[TIED]
    tied.add_observations(np.arange(POINTS_PER_KEYFRAME), np.zeros((POINTS_PER_KEYFRAME, 2)))
    before_44 = world.keyframes[0].cam_T_world_44 @ invert_pose_44(tied.cam_T_world_44)
    close_loop(world, _loop_to_truth(world, truth_n44), LoopConfig(covisible_points=covisible_points))
    after_44 = world.keyframes[0].cam_T_world_44 @ invert_pose_44(tied.cam_T_world_44)
    return float(np.linalg.norm(after_44[:3, 3] - before_44[:3, 3]))


TIED = 12
"""A keyframe in the middle of the drifted loop that an earlier loop tied to keyframe 0."""


def test_a_new_loop_keeps_the_keyframes_an_earlier_loop_tied_together():
    """Without the covisibility edge the loop's correction moves keyframe 12 by decimetres
    relative to keyframe 0; with it, by less than a tenth of that (measured 0.33 m and
    0.008 m)."""
    unconstrained_m = _moved_from_first_m(covisible_points=10**6)
    tied_m = _moved_from_first_m(covisible_points=POINTS_PER_KEYFRAME)
    assert unconstrained_m > 0.1
    assert tied_m < unconstrained_m / 10
