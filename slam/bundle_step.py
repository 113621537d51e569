"""One damped Gauss-Newton step of bundle adjustment (`slam/bundle_problem.py`).

The normal equations are solved with the Schur complement on the points: the point blocks
are 3x3 and inverted in a batch, and the reduced camera system, whose 6x6 block (i, j) is
non-zero only where cameras i and j see a common point, is assembled and solved dense for a
window of keyframes and as a sparse matrix beyond, so a whole trajectory can be adjusted at
once.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from slam.bundle_problem import BundleProblem, Linearisation


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


def solve_step(
    lin: Linearisation,
    problem: BundleProblem,
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
