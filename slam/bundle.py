"""Bundle adjustment and pose-only refinement with a robust Levenberg-Marquardt solver.

Camera poses are pypose SE3 LieTensors `cam_T_world` (world to camera), updated on the
left by the exponential of a twist (translation first, then rotation, pypose's se3
order); world points are free 3-vectors. Residuals are reprojection errors in pixels under
a Huber kernel (iteratively reweighted), optionally joined by measured depths of the
observations (`ObservedDepth`, whitened by their standard deviation) and by a Gaussian
prior on the poses (`PosePrior`). The normal equations are solved with the Schur
complement on the points: the point blocks are 3x3 and inverted in a batch, and the
reduced camera system, whose 6x6 block (i, j) is non-zero only where cameras i and j see a
common point, is assembled and solved dense for a window of keyframes and as a sparse
matrix beyond, so a whole trajectory can be adjusted at once. Jacobians are analytic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pypose as pp
import scipy.sparse
import scipy.sparse.linalg
import torch


@dataclass
class BundleConfig:
    """Levenberg-Marquardt settings.

    Each of `rounds` runs at most `iterations` trial steps; after a round, observations
    reprojecting farther than `outlier_px` pixels are left out of the next one. The Huber
    kernel is quadratic below `huber_px` pixels of reprojection error and linear above; a
    round stops when the robust cost drops by less than `relative_tolerance` of itself.
    `threads`: torch CPU threads while solving (windowed problems are too small to gain
    from more, and lose badly when other processes share the cores).
    """

    iterations: int = 10
    rounds: int = 2
    huber_px: float = 2.0
    outlier_px: float = 3.0
    initial_damping: float = 1e-4
    relative_tolerance: float = 1e-6
    min_depth: float = 1e-6
    threads: int = 1


@dataclass
class PosePrior:
    """A Gaussian prior holding each free camera near a pose: the twist from
    `cam_T_world_k44` (K, 4, 4) to the estimate (pypose's se3 log of estimate times prior
    inverse) has standard deviations `sigma_translation` (world units) and
    `sigma_rotation_rad`, and one standard deviation costs as much as one pixel of
    reprojection error. It fixes the gauge when no camera is held fixed."""

    cam_T_world_k44: np.ndarray
    sigma_translation: float
    sigma_rotation_rad: float


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


@dataclass
class ObservedDepth:
    """Measured depths of the observations: `depth_m` (M,) is the depth of observation m's
    point along its camera's optical axis (world units, nan where none was measured), with
    a standard deviation of `sigma_relative` times the depth; one standard deviation costs
    as much as one pixel of reprojection error, under the same Huber kernel (in standard
    deviations), and a depth farther than `outlier_px` standard deviations is left out of
    the next round on its own."""

    depth_m: np.ndarray
    sigma_relative: float


@dataclass
class _Linearisation:
    """Per observation m, R residual rows (the pixel's u and v, then its depth when depths
    were measured): residuals (M, R), weights (M, R) and Jacobians w.r.t. a left twist of
    the pose (M, R, 6) and w.r.t. the point (M, R, 3)."""

    residual_mr: torch.Tensor
    weight_mr: torch.Tensor
    J_pose_mr6: torch.Tensor
    J_point_mr3: torch.Tensor
    prior_twist_k6: torch.Tensor | None


def _matrix_k44(cam_T_world_k7: pp.LieTensor) -> torch.Tensor:
    """4x4 matrices (K, 4, 4) of SE3 LieTensors (tx, ty, tz, qx, qy, qz, qw), in closed form
    (pypose's `matrix()` acts on an identity point set, which is slow for small batches)."""
    data_k7 = cam_T_world_k7.tensor()
    x, y, z, w = data_k7[:, 3], data_k7[:, 4], data_k7[:, 5], data_k7[:, 6]
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w), data_k7[:, 0],
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w), data_k7[:, 1],
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y), data_k7[:, 2],
    ]
    top_k34 = torch.stack(rows, dim=-1).reshape(-1, 3, 4)
    bottom_k14 = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=data_k7.dtype).expand(len(data_k7), 1, 4)
    return torch.cat([top_k34, bottom_k14], dim=1)


def _skew_m33(v_m3: torch.Tensor) -> torch.Tensor:
    zero_m = torch.zeros_like(v_m3[:, 0])
    return torch.stack(
        [
            torch.stack([zero_m, -v_m3[:, 2], v_m3[:, 1]], dim=-1),
            torch.stack([v_m3[:, 2], zero_m, -v_m3[:, 0]], dim=-1),
            torch.stack([-v_m3[:, 1], v_m3[:, 0], zero_m], dim=-1),
        ],
        dim=1,
    )


def _huber_rho(errors_m: torch.Tensor, delta: float) -> torch.Tensor:
    """Huber cost (M,) of non-negative errors (M,): quadratic below `delta`, linear above."""
    return torch.where(errors_m <= delta, errors_m**2, 2 * delta * errors_m - delta**2)


def _huber_weight(errors_m: torch.Tensor, delta: float) -> torch.Tensor:
    """Iteratively reweighted least-squares weights (M,) of the Huber cost at non-negative
    errors (M,): 1 below `delta`, delta / error above."""
    return torch.where(errors_m <= delta, torch.ones_like(errors_m), delta / errors_m.clamp_min(1e-12))


class _Problem:
    """Observations m of point `point_index_m` by camera `cam_index_m` at pixel `uv_m2`."""

    def __init__(
        self,
        K_33,
        cam_index_m,
        point_index_m,
        uv_m2,
        config: BundleConfig,
        prior: PosePrior | None = None,
        depth: ObservedDepth | None = None,
    ):
        self.fx, self.fy, self.cx, self.cy = (float(K_33[0, 0]), float(K_33[1, 1]), float(K_33[0, 2]), float(K_33[1, 2]))
        self.cam_index_m = torch.as_tensor(cam_index_m, dtype=torch.long)
        self.point_index_m = torch.as_tensor(point_index_m, dtype=torch.long)
        self.uv_m2 = torch.as_tensor(uv_m2, dtype=torch.float64)
        self.active_m = torch.ones(len(self.uv_m2), dtype=torch.bool)
        self.config = config
        self.depth_m: torch.Tensor | None = None
        if depth is not None:
            self.depth_m = torch.as_tensor(depth.depth_m, dtype=torch.float64)
            self.depth_sigma_m = depth.sigma_relative * self.depth_m
            self.depth_active_m = torch.isfinite(self.depth_m) & (self.depth_m > 0)
        self.prior_inv_k7: pp.LieTensor | None = None
        self.prior_precision_6 = torch.zeros(6, dtype=torch.float64)
        if prior is not None:
            self.prior_inv_k7 = pp.mat2SE3(torch.as_tensor(prior.cam_T_world_k44, dtype=torch.float64), check=False).Inv()
            self.prior_precision_6 = torch.tensor(
                [prior.sigma_translation**-2] * 3 + [prior.sigma_rotation_rad**-2] * 3, dtype=torch.float64
            )

    def prior_twist_k6(self, cam_T_world_k7: pp.LieTensor) -> torch.Tensor | None:
        """Twists (K, 6) from the prior poses to `cam_T_world_k7`, None without a prior."""
        if self.prior_inv_k7 is None:
            return None
        return (cam_T_world_k7 * self.prior_inv_k7).Log().tensor()

    def camera_points_m3(self, cam_T_world_k7: pp.LieTensor, points_n3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Points in their observing cameras (M, 3) and those cameras' rotations (M, 3, 3)."""
        cam_T_world_k44 = _matrix_k44(cam_T_world_k7)
        R_m33 = cam_T_world_k44[self.cam_index_m, :3, :3]
        t_m3 = cam_T_world_k44[self.cam_index_m, :3, 3]
        return (R_m33 * points_n3[self.point_index_m][:, None, :]).sum(-1) + t_m3, R_m33

    def errors_m(self, p_m3: torch.Tensor) -> torch.Tensor:
        """Pixel reprojection errors (M,) of the points in their observing cameras (M, 3)
        (`camera_points_m3`), inf where a point is not in front of its camera."""
        z_m = p_m3[:, 2]
        valid_m = z_m > self.config.min_depth
        z_safe_m = torch.where(valid_m, z_m, torch.ones_like(z_m))
        uv_m2 = torch.stack([self.fx * p_m3[:, 0] / z_safe_m + self.cx, self.fy * p_m3[:, 1] / z_safe_m + self.cy], -1)
        errors_m = torch.linalg.norm(uv_m2 - self.uv_m2, dim=1)
        return torch.where(valid_m, errors_m, torch.full_like(errors_m, float("inf")))

    def cost(self, cam_T_world_k7: pp.LieTensor, points_n3: torch.Tensor) -> float:
        """Sum of Huber-robustified squared errors of the active observations (those
        behind a camera count 0), plus the prior's whitened squared twists."""
        p_m3, _ = self.camera_points_m3(cam_T_world_k7, points_n3)
        errors_m = self.errors_m(p_m3)
        cost = float(_huber_rho(errors_m[torch.isfinite(errors_m) & self.active_m], self.config.huber_px).sum())
        twist_k6 = self.prior_twist_k6(cam_T_world_k7)
        if twist_k6 is not None:
            cost += float((twist_k6**2 * self.prior_precision_6).sum())
        if self.depth_m is not None:
            sigmas_m = self.depth_errors_m(p_m3)
            cost += float(_huber_rho(sigmas_m[torch.isfinite(sigmas_m) & self.active_m], self.config.huber_px).sum())
        return cost

    def depth_errors_m(self, p_m3: torch.Tensor) -> torch.Tensor:
        """Depth errors (M,) in standard deviations of the points in their observing cameras
        (M, 3); inf where no depth was measured or the point is not in front of its camera."""
        errors_m = ((p_m3[:, 2] - self.depth_m) / self.depth_sigma_m).abs()
        valid_m = self.depth_active_m & (p_m3[:, 2] > self.config.min_depth)
        return torch.where(valid_m, errors_m, torch.full_like(errors_m, float("inf")))

    def linearise(self, cam_T_world_k7: pp.LieTensor, points_n3: torch.Tensor) -> _Linearisation:
        """Residuals, Huber weights and Jacobians w.r.t. a left twist of the pose and the point."""
        p_m3, R_m33 = self.camera_points_m3(cam_T_world_k7, points_n3)
        x_m, y_m, z_m = p_m3.unbind(-1)
        valid_m = (z_m > self.config.min_depth) & self.active_m
        z_m = torch.where(valid_m, z_m, torch.ones_like(z_m))
        inv_z_m = 1.0 / z_m
        residual_m2 = torch.stack([self.fx * x_m * inv_z_m + self.cx, self.fy * y_m * inv_z_m + self.cy], -1) - self.uv_m2
        zero_m = torch.zeros_like(z_m)
        J_proj_m23 = torch.stack(
            [
                torch.stack([self.fx * inv_z_m, zero_m, -self.fx * x_m * inv_z_m**2], -1),
                torch.stack([zero_m, self.fy * inv_z_m, -self.fy * y_m * inv_z_m**2], -1),
            ],
            dim=1,
        )
        # d(u, v, z) / d(camera-frame point), then through d p / d twist = [I, -[p]x] and R.
        J_cam_m33 = torch.cat([J_proj_m23, torch.zeros_like(J_proj_m23[:, :1])], dim=1)
        J_cam_m33[:, 2, 2] = 1.0
        J_pose_m36 = torch.cat([J_cam_m33, -J_cam_m33 @ _skew_m33(p_m3)], dim=2)
        J_point_m33 = J_cam_m33 @ R_m33
        norm_m = torch.linalg.norm(residual_m2, dim=1)
        delta = self.config.huber_px
        weight_m = torch.where(valid_m, _huber_weight(norm_m, delta), zero_m)
        residual_m2 = torch.where(valid_m[:, None], residual_m2, torch.zeros_like(residual_m2))
        prior_twist_k6 = self.prior_twist_k6(cam_T_world_k7)
        if self.depth_m is None:
            weight_m2 = weight_m[:, None].expand(-1, 2)
            return _Linearisation(residual_m2, weight_m2, J_pose_m36[:, :2], J_point_m33[:, :2], prior_twist_k6)
        use_m = valid_m & self.depth_active_m
        sigma_m = torch.where(use_m, self.depth_sigma_m, torch.ones_like(z_m))
        depth_residual_m = torch.where(use_m, (z_m - self.depth_m) / sigma_m, zero_m)
        depth_weight_m = torch.where(use_m, _huber_weight(depth_residual_m.abs(), delta), zero_m)
        scale_m3 = torch.stack([torch.ones_like(z_m), torch.ones_like(z_m), 1.0 / sigma_m], dim=-1)[:, :, None]
        return _Linearisation(
            torch.cat([residual_m2, depth_residual_m[:, None]], dim=1),
            torch.stack([weight_m, weight_m, depth_weight_m], dim=1),
            scale_m3 * J_pose_m36,
            scale_m3 * J_point_m33,
            prior_twist_k6,
        )


DENSE_REDUCTION_MAX_ENTRIES = 2_000_000
"""Largest (6F x 3N) camera-point block matrix the reduction builds dense: a window's is
faster dense, a whole trajectory's only fits sparse."""


def _block_matrix(
    block_o63: torch.Tensor, slot_o: torch.Tensor, point_o: torch.Tensor, num_free: int, num_points: int, dense: bool
) -> np.ndarray | scipy.sparse.csr_matrix:
    """The (6F, 3N) matrix with 6x3 block `block_o63[o]` at block row `slot_o[o]` (a free
    camera) and block column `point_o[o]`, blocks at the same position adding up; a numpy
    array when `dense`, else a sparse matrix."""
    rows_o63 = (6 * slot_o[:, None, None] + torch.arange(6)[None, :, None]).expand(-1, 6, 3)
    cols_o63 = (3 * point_o[:, None, None] + torch.arange(3)[None, None, :]).expand(-1, 6, 3)
    shape = (6 * num_free, 3 * num_points)
    if dense:
        flat = torch.zeros(shape[0] * shape[1], dtype=torch.float64)
        flat.index_add_(0, (rows_o63 * shape[1] + cols_o63).reshape(-1), block_o63.reshape(-1))
        return flat.reshape(shape).numpy()
    return scipy.sparse.csr_matrix(
        (block_o63.reshape(-1).numpy(), (rows_o63.reshape(-1).numpy(), cols_o63.reshape(-1).numpy())), shape=shape
    )


def _solve_step(
    lin: _Linearisation,
    problem: _Problem,
    num_cams: int,
    num_points: int,
    free_cam_k: torch.Tensor,
    optimise_points: bool,
    damping: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Damped Gauss-Newton step: twists (K, 6) (zero for fixed cameras) and point
    updates (N, 3) (zero when points are fixed), by the Schur complement on the points."""
    w_mr1 = lin.weight_mr[:, :, None]
    Jc_T_m6r = lin.J_pose_mr6.transpose(1, 2)
    weighted_residual_mr1 = (lin.weight_mr * lin.residual_mr)[:, :, None]
    H_cc_k66 = torch.zeros(num_cams, 6, 6, dtype=torch.float64).index_add_(
        0, problem.cam_index_m, Jc_T_m6r @ (w_mr1 * lin.J_pose_mr6)
    )
    g_c_k6 = torch.zeros(num_cams, 6, dtype=torch.float64).index_add_(
        0, problem.cam_index_m, (Jc_T_m6r @ weighted_residual_mr1)[:, :, 0]
    )
    if lin.prior_twist_k6 is not None:
        # The twist's Jacobian w.r.t. a small left update is the identity to first order.
        H_cc_k66 = H_cc_k66 + torch.diag(problem.prior_precision_6)
        g_c_k6 = g_c_k6 + problem.prior_precision_6 * lin.prior_twist_k6
    free_index_f = torch.nonzero(free_cam_k)[:, 0]
    num_free = len(free_index_f)
    H_cc_f66 = H_cc_k66[free_index_f]
    diagonal_f6 = torch.diagonal(H_cc_f66, dim1=1, dim2=2)
    H_cc_f66 = H_cc_f66 + torch.diag_embed(damping * diagonal_f6 + 1e-9)
    step_c_k6 = torch.zeros(num_cams, 6, dtype=torch.float64)
    step_p_n3 = torch.zeros(num_points, 3, dtype=torch.float64)
    if not optimise_points:
        if num_free:
            step_c_k6[free_index_f] = torch.linalg.solve(H_cc_f66, -g_c_k6[free_index_f])
        return step_c_k6, step_p_n3
    Jp_T_m3r = lin.J_point_mr3.transpose(1, 2)
    H_pp_n33 = torch.zeros(num_points, 3, 3, dtype=torch.float64).index_add_(
        0, problem.point_index_m, Jp_T_m3r @ (w_mr1 * lin.J_point_mr3)
    )
    g_p_n3 = torch.zeros(num_points, 3, dtype=torch.float64).index_add_(
        0, problem.point_index_m, (Jp_T_m3r @ weighted_residual_mr1)[:, :, 0]
    )
    diagonal_n3 = torch.diagonal(H_pp_n33, dim1=1, dim2=2)
    H_pp_inv_n33 = torch.linalg.inv(H_pp_n33 + torch.diag_embed(damping * diagonal_n3 + 1e-9))
    if num_free == 0:
        step_p_n3 = -(H_pp_inv_n33 @ g_p_n3[:, :, None])[:, :, 0]
        return step_c_k6, step_p_n3
    free_slot_k = torch.full((num_cams,), -1, dtype=torch.long)
    free_slot_k[free_index_f] = torch.arange(num_free)
    slot_m = free_slot_k[problem.cam_index_m]
    on_free_m = slot_m >= 0
    slot_o, point_o = slot_m[on_free_m], problem.point_index_m[on_free_m]
    W_o63 = (Jc_T_m6r @ (w_mr1 * lin.J_point_mr3))[on_free_m]
    dense = 18 * num_free * num_points <= DENSE_REDUCTION_MAX_ENTRIES
    W = _block_matrix(W_o63, slot_o, point_o, num_free, num_points, dense)
    Y = _block_matrix(W_o63 @ H_pp_inv_n33[point_o], slot_o, point_o, num_free, num_points, dense)
    g_p = g_p_n3.reshape(-1).numpy()
    rhs = -g_c_k6[free_index_f].reshape(-1).numpy() + Y @ g_p
    if dense:
        step_f = np.linalg.solve(torch.block_diag(*H_cc_f66).numpy() - Y @ W.T, rhs)
    else:
        S = scipy.sparse.block_diag(H_cc_f66.numpy(), format="csc") - (Y @ W.T).tocsc()
        step_f = scipy.sparse.linalg.spsolve(S, rhs)
    step_c_k6[free_index_f] = torch.from_numpy(step_f).reshape(num_free, 6)
    back_n3 = torch.from_numpy(g_p + W.T @ step_f).reshape(num_points, 3)
    step_p_n3 = -(H_pp_inv_n33 @ back_n3[:, :, None])[:, :, 0]
    return step_c_k6, step_p_n3


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
    problem: _Problem,
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
    problem: _Problem,
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
        step_c_k6, step_p_n3 = _solve_step(
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
    problem = _Problem(K_33, cam_index_m, point_index_m, uv_m2, config, prior, depth)
    result = _solve(problem, cam_T_world_k44, points_n3, ~fixed_k, True)
    result.cam_T_world_k44[fixed_k] = cam_T_world_k44[fixed_k]
    return result


def _solve(
    problem: _Problem, cam_T_world_k44: np.ndarray, points_n3: np.ndarray, free_cam_k: np.ndarray, optimise_points: bool
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
        cam_T_world_k44=_matrix_k44(refined_k7).numpy(),
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
    problem = _Problem(K_33, cam_index_m, point_index_m, np.asarray(uv_m2, dtype=np.float64), config or BundleConfig())
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
