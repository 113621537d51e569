"""Bundle adjustment and pose-only refinement with a robust Levenberg-Marquardt solver.

The problem (poses, points, Huber-weighted reprojection errors, measured depths and a pose
prior) is set up and linearised in `slam/bundle_problem.py`; each damped Gauss-Newton step
is solved by the Schur complement on the points in `slam/bundle_step.py`. A step is kept
when it lowers the robust cost (and the damping drops), else the damping grows; after each
robust round, observations reprojecting farther than the outlier threshold are left out of
the next one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pypose as pp
import torch

from slam.bundle_problem import BundleConfig, BundleProblem, ObservedDepth, PosePrior, matrix_k44
from slam.bundle_step import solve_step


@dataclass
class BundleResult:
    """Refined poses (K, 4, 4) cam_T_world and points (N, 3) in world units; errors_m:
    final reprojection error (pixels, inf behind a camera) of every observation; costs
    are robust sums of squared pixel errors, initially over all observations and finally
    over those kept in the last round."""

    cam_T_world_k44: np.ndarray
    points_n3: np.ndarray
    errors_m: np.ndarray
    initial_cost: float
    final_cost: float
    iterations: int


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run the enclosed block with `count` torch CPU threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _robust_rounds(
    problem: BundleProblem,
    cam_T_world_k7: pp.LieTensor,
    points_n3: torch.Tensor,
    free_cam_k: torch.Tensor,
    optimise_points: bool,
) -> tuple[pp.LieTensor, torch.Tensor, float, float, int]:
    """`config.rounds` LM runs, each without the previous round's outliers."""
    if problem.config.rounds < 1 or problem.config.iterations < 1:
        raise ValueError(
            f"BundleConfig: expected rounds >= 1 and iterations >= 1, got {problem.config.rounds} "
            f"and {problem.config.iterations}"
        )
    initial_cost = problem.cost(cam_T_world_k7, points_n3)
    iterations = 0
    for round_index in range(problem.config.rounds):
        if round_index > 0:
            p_m3, _ = problem.camera_points_m3(cam_T_world_k7, points_n3)
            problem.active_m = problem.errors_m(p_m3) < problem.config.outlier_px
            if problem.depth_m is not None:
                problem.depth_active_m = problem.depth_errors_m(p_m3) < problem.config.outlier_px
        cam_T_world_k7, points_n3, cost, round_iterations = _levenberg_marquardt(
            problem, cam_T_world_k7, points_n3, free_cam_k, optimise_points
        )
        iterations += round_iterations
    return cam_T_world_k7, points_n3, initial_cost, cost, iterations


def _levenberg_marquardt(
    problem: BundleProblem,
    cam_T_world_k7: pp.LieTensor,
    points_n3: torch.Tensor,
    free_cam_k: torch.Tensor,
    optimise_points: bool,
) -> tuple[pp.LieTensor, torch.Tensor, float, int]:
    config = problem.config
    cost = problem.cost(cam_T_world_k7, points_n3)
    damping = config.initial_damping
    iterations = 0
    lin = problem.linearise(cam_T_world_k7, points_n3)
    while iterations < config.iterations:
        iterations += 1
        step_c_k6, step_p_n3 = solve_step(
            lin, problem, len(cam_T_world_k7), len(points_n3), free_cam_k, optimise_points, damping
        )
        trial_k7 = pp.se3(step_c_k6).Exp() * cam_T_world_k7
        trial_n3 = points_n3 + step_p_n3
        trial_cost = problem.cost(trial_k7, trial_n3)
        if trial_cost < cost:
            converged = cost - trial_cost < config.relative_tolerance * cost
            cam_T_world_k7, points_n3, cost = trial_k7, trial_n3, trial_cost
            damping = max(damping / 3.0, 1e-9)
            if converged:
                break
            lin = problem.linearise(cam_T_world_k7, points_n3)
        else:
            damping *= 10.0
    return cam_T_world_k7, points_n3, cost, iterations


def bundle_adjust(
    K_33: np.ndarray,
    cam_T_world_k44: np.ndarray,
    points_n3: np.ndarray,
    cam_index_m: np.ndarray,
    point_index_m: np.ndarray,
    uv_m2: np.ndarray,
    fixed_k: np.ndarray,
    config: BundleConfig | None = None,
    prior: PosePrior | None = None,
    depth: ObservedDepth | None = None,
) -> BundleResult:
    """Jointly refine K camera poses and N world points from M pixel observations.

    cam_T_world_k44 (K, 4, 4) world-to-camera; points_n3 (N, 3) world; observation m is
    point `point_index_m[m]` seen by camera `cam_index_m[m]` at pixel `uv_m2[m]`;
    fixed_k (K,) bool marks cameras held fixed. The gauge: fix at least one camera, and
    two for monocular maps to fix the scale too (or measured `depth`), or give a `prior`
    on the poses. Units follow the inputs (pixels, world units).
    """
    config = config or BundleConfig()
    cam_T_world_k44 = np.asarray(cam_T_world_k44, dtype=np.float64)
    points_n3 = np.asarray(points_n3, dtype=np.float64)
    uv_m2 = np.asarray(uv_m2, dtype=np.float64)
    cam_index_m = np.asarray(cam_index_m)
    point_index_m = np.asarray(point_index_m)
    num_cams, num_points = len(cam_T_world_k44), len(points_n3)
    if cam_T_world_k44.shape[1:] != (4, 4) or points_n3.shape[1:] != (3,):
        raise ValueError(
            f"bundle_adjust: expected poses (K, 4, 4) and points (N, 3), got {cam_T_world_k44.shape} "
            f"and {points_n3.shape}"
        )
    if uv_m2.shape != (len(cam_index_m), 2) or point_index_m.shape != cam_index_m.shape:
        raise ValueError(
            f"bundle_adjust: expected M camera indices, M point indices and (M, 2) pixels, got "
            f"{cam_index_m.shape}, {point_index_m.shape} and {uv_m2.shape}"
        )
    if len(cam_index_m) and (cam_index_m.min() < 0 or cam_index_m.max() >= num_cams or point_index_m.min() < 0 or point_index_m.max() >= num_points):
        raise ValueError(f"bundle_adjust: observation indices out of range for {num_cams} cameras and {num_points} points")
    fixed_k = np.asarray(fixed_k, dtype=bool)
    if fixed_k.shape != (num_cams,):
        raise ValueError(f"bundle_adjust: expected fixed_k of shape ({num_cams},), got {fixed_k.shape}")
    if prior is not None and np.shape(prior.cam_T_world_k44) != cam_T_world_k44.shape:
        raise ValueError(
            f"bundle_adjust: expected prior poses of shape {cam_T_world_k44.shape}, got {np.shape(prior.cam_T_world_k44)}"
        )
    if depth is not None and np.shape(depth.depth_m) != cam_index_m.shape:
        raise ValueError(
            f"bundle_adjust: expected one measured depth per observation {cam_index_m.shape}, got "
            f"{np.shape(depth.depth_m)}"
        )
    problem = BundleProblem(K_33, cam_index_m, point_index_m, uv_m2, config, prior, depth)
    result = _solve(problem, cam_T_world_k44, points_n3, ~fixed_k, True)
    result.cam_T_world_k44[fixed_k] = cam_T_world_k44[fixed_k]
    return result


def _solve(
    problem: BundleProblem, cam_T_world_k44: np.ndarray, points_n3: np.ndarray, free_cam_k: np.ndarray, optimise_points: bool
) -> BundleResult:
    """`_robust_rounds` on `problem` from numpy poses (K, 4, 4) and points (N, 3) (float64),
    with `config.threads` torch threads, back to numpy."""
    cam_T_world_k7 = pp.mat2SE3(torch.from_numpy(cam_T_world_k44), check=False)
    with _torch_threads(problem.config.threads):
        refined_k7, refined_n3, initial_cost, final_cost, iterations = _robust_rounds(
            problem, cam_T_world_k7, torch.from_numpy(points_n3.copy()), torch.from_numpy(free_cam_k), optimise_points
        )
        errors_m = problem.errors_m(problem.camera_points_m3(refined_k7, refined_n3)[0]).numpy()
    return BundleResult(
        cam_T_world_k44=matrix_k44(refined_k7).numpy(),
        points_n3=refined_n3.numpy(),
        errors_m=errors_m,
        initial_cost=initial_cost,
        final_cost=final_cost,
        iterations=iterations,
    )


def resect_poses(
    K_33: np.ndarray,
    cam_T_world_k44: np.ndarray,
    points_n3: np.ndarray,
    cam_index_m: np.ndarray,
    point_index_m: np.ndarray,
    uv_m2: np.ndarray,
    config: BundleConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Refine K camera poses (K, 4, 4) world-to-camera against fixed world points (N, 3),
    from M observations as in `bundle_adjust`. With the points fixed the cameras decouple,
    so one solve moves them all (6x6 blocks). Returns the refined poses and the final
    reprojection error (M,) of every observation (pixels, inf behind a camera)."""
    problem = BundleProblem(K_33, cam_index_m, point_index_m, np.asarray(uv_m2, dtype=np.float64), config or BundleConfig())
    cam_T_world_k44 = np.asarray(cam_T_world_k44, dtype=np.float64)
    result = _solve(
        problem, cam_T_world_k44, np.asarray(points_n3, dtype=np.float64), np.ones(len(cam_T_world_k44), dtype=bool), False
    )
    return result.cam_T_world_k44, result.errors_m


def refine_pose(
    K_33: np.ndarray,
    cam_T_world_44: np.ndarray,
    points_n3: np.ndarray,
    uv_n2: np.ndarray,
    config: BundleConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Refine one camera pose against fixed world points (N, 3) seen at pixels (N, 2).

    Returns the refined cam_T_world (4, 4) and the reprojection errors (N,) in pixels
    (inf behind the camera).
    """
    points_n3 = np.asarray(points_n3, dtype=np.float64)
    uv_n2 = np.asarray(uv_n2, dtype=np.float64)
    if points_n3.ndim != 2 or points_n3.shape[1] != 3 or uv_n2.shape != (len(points_n3), 2):
        raise ValueError(
            f"refine_pose: expected (N, 3) points and (N, 2) pixels, got {points_n3.shape} and {uv_n2.shape}"
        )
    count = len(points_n3)
    refined_144, errors_n = resect_poses(
        K_33, np.asarray(cam_T_world_44)[None], points_n3, np.zeros(count, dtype=np.int64), np.arange(count), uv_n2, config
    )
    return refined_144[0], errors_n
