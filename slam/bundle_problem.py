"""The bundle adjustment problem: its settings and inputs, residuals, robust costs and
analytic Jacobians (solved by `slam/bundle.py`).

Camera poses are pypose SE3 LieTensors `cam_T_world` (world to camera), updated on the
left by the exponential of a twist (translation first, then rotation, pypose's se3
order); world points are free 3-vectors. Residuals are reprojection errors in pixels under
a Huber kernel (iteratively reweighted), optionally joined by measured depths of the
observations (`ObservedDepth`, whitened by their standard deviation) and by a Gaussian
prior on the poses (`PosePrior`). Jacobians are analytic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pypose as pp
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
class Linearisation:
    """Per observation m, R residual rows (the pixel's u and v, then its depth when depths
    were measured): residuals (M, R), weights (M, R) and Jacobians w.r.t. a left twist of
    the pose (M, R, 6) and w.r.t. the point (M, R, 3)."""

    residual_mr: torch.Tensor
    weight_mr: torch.Tensor
    J_pose_mr6: torch.Tensor
    J_point_mr3: torch.Tensor
    prior_twist_k6: torch.Tensor | None


def matrix_k44(cam_T_world_k7: pp.LieTensor) -> torch.Tensor:
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


class BundleProblem:
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
        cam_T_world_k44 = matrix_k44(cam_T_world_k7)
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

    def linearise(self, cam_T_world_k7: pp.LieTensor, points_n3: torch.Tensor) -> Linearisation:
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
            return Linearisation(residual_m2, weight_m2, J_pose_m36[:, :2], J_point_m33[:, :2], prior_twist_k6)
        use_m = valid_m & self.depth_active_m
        sigma_m = torch.where(use_m, self.depth_sigma_m, torch.ones_like(z_m))
        depth_residual_m = torch.where(use_m, (z_m - self.depth_m) / sigma_m, zero_m)
        depth_weight_m = torch.where(use_m, _huber_weight(depth_residual_m.abs(), delta), zero_m)
        scale_m3 = torch.stack([torch.ones_like(z_m), torch.ones_like(z_m), 1.0 / sigma_m], dim=-1)[:, :, None]
        return Linearisation(
            torch.cat([residual_m2, depth_residual_m[:, None]], dim=1),
            torch.stack([weight_m, weight_m, depth_weight_m], dim=1),
            scale_m3 * J_pose_m36,
            scale_m3 * J_point_m33,
            prior_twist_k6,
        )
