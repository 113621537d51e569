"""Plane-sweep cost volume against closed forms: homographies, shifts, masks, true depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mvs.costvolume import (
    NEUTRAL_COST,
    box_filter_bchw,
    PlaneSweep,
    feature_cost_volume,
    feature_cost_volume_reference,
    fused_kernels_apply,
    inverse_depth_hypotheses_d,
    plane_homographies_bnd33,
    plane_sweep,
    same_camera_sweep,
    zncc_cost_volume,
    zncc_cost_volume_reference,
)
from mvs.geometry import backproject_n3, make_pose_44, project_n2, transform_n3
from mvs.types import Camera


def small_camera(width: int = 80, height: int = 60) -> Camera:
    focal = 525.0 * width / 640.0
    return Camera(np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]]), width, height)


def rotation_33(axis_3: np.ndarray, angle_rad: float) -> np.ndarray:
    axis_3 = np.asarray(axis_3, float) / np.linalg.norm(axis_3)
    K_33 = np.array([[0, -axis_3[2], axis_3[1]], [axis_3[2], 0, -axis_3[0]], [-axis_3[1], axis_3[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * K_33 + (1 - np.cos(angle_rad)) * K_33 @ K_33


def textured_plane_views(
    camera: Camera, plane_depth: float, src_T_ref_n44: np.ndarray, channels: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random texture on the plane z = plane_depth of the reference camera, seen
    by the reference (1, C, H, W) and by each source (1, N, C, H, W), values in [0, 1].

    Each source pixel q samples the reference texture at H^-1 q with the exact plane
    homography H (reference to source), so source(H p) = reference(p) wherever H p is inside.
    """
    generator = torch.Generator().manual_seed(seed)
    noise_1chw = torch.rand(1, channels, camera.height, camera.width, generator=generator)
    kernel = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel_kk = (kernel[:, None] * kernel[None]) / 256.0
    texture_1chw = F.conv2d(
        F.pad(noise_1chw, (2, 2, 2, 2), mode="reflect"), kernel_kk.expand(channels, 1, 5, 5).contiguous(), groups=channels
    )
    texture_1chw = (texture_1chw - texture_1chw.amin()) / (texture_1chw.amax() - texture_1chw.amin())
    K_133 = torch.from_numpy(camera.K_33)[None]
    n = len(src_T_ref_n44)
    H_1n133 = plane_homographies_bnd33(
        K_133, K_133[:, None].expand(-1, n, -1, -1), torch.from_numpy(src_T_ref_n44)[None], torch.tensor([plane_depth], dtype=torch.float64)
    )
    v_hw, u_hw = torch.meshgrid(torch.arange(camera.height, dtype=torch.float64), torch.arange(camera.width, dtype=torch.float64), indexing="ij")
    q_3p = torch.stack([u_hw.reshape(-1), v_hw.reshape(-1), torch.ones(u_hw.numel(), dtype=torch.float64)])
    sources = []
    for s in range(n):
        p_3p = torch.linalg.inv(H_1n133[0, s, 0]) @ q_3p
        u_p, v_p = p_3p[0] / p_3p[2], p_3p[1] / p_3p[2]
        grid_11p2 = torch.stack([2 * u_p / (camera.width - 1) - 1, 2 * v_p / (camera.height - 1) - 1], dim=-1)
        warped_1c1p = F.grid_sample(texture_1chw, grid_11p2[None, None].float(), align_corners=True, padding_mode="border")
        sources.append(warped_1c1p.reshape(1, channels, camera.height, camera.width))
    return texture_1chw, torch.stack(sources, dim=1)


def test_hypotheses_are_uniform_in_inverse_depth() -> None:
    depth_d = inverse_depth_hypotheses_d(0.25, 20.0, 64)
    assert depth_d.shape == (64,)
    assert depth_d[0].item() == pytest.approx(0.25, rel=1e-6)
    assert depth_d[-1].item() == pytest.approx(20.0, rel=1e-6)
    steps_d = torch.diff(1.0 / depth_d.double())
    assert torch.allclose(steps_d, torch.full_like(steps_d, (1 / 20.0 - 1 / 0.25) / 63), atol=1e-6)
    with pytest.raises(ValueError, match="near < far"):
        inverse_depth_hypotheses_d(2.0, 1.0, 8)


def test_homography_matches_backproject_transform_project() -> None:
    camera = small_camera(640, 480)
    src_T_ref_44 = make_pose_44(rotation_33([0.2, 1.0, -0.3], 0.2), np.array([0.3, -0.1, 0.05]))
    depth_d = torch.tensor([0.7, 2.0, 9.0], dtype=torch.float64)
    K_133 = torch.from_numpy(camera.K_33)[None]
    H_11d33 = plane_homographies_bnd33(K_133, K_133[:, None], torch.from_numpy(src_T_ref_44)[None, None], depth_d)
    uv_n2 = np.array([[10.0, 20.0], [320.0, 240.0], [600.5, 400.25]])
    for k, depth in enumerate(depth_d.tolist()):
        points_src_n3 = transform_n3(src_T_ref_44, backproject_n3(uv_n2, np.full(3, depth), camera.K_33))
        expected_n2, _ = project_n2(points_src_n3, camera.K_33)
        mapped_n3 = np.c_[uv_n2, np.ones(3)] @ H_11d33[0, 0, k].numpy().T
        np.testing.assert_allclose(mapped_n3[:, :2] / mapped_n3[:, 2:], expected_n2, atol=1e-9)


def test_pure_translation_shifts_by_fx_tx_over_d() -> None:
    camera = small_camera(80, 60)
    tx = 0.12
    src_T_ref_1144 = torch.from_numpy(make_pose_44(np.eye(3), np.array([tx, 0.0, 0.0])))[None, None].float()
    depth_d = inverse_depth_hypotheses_d(0.5, 10.0, 16)
    sweep = same_camera_sweep(torch.from_numpy(camera.K_33).float()[None], src_T_ref_1144, depth_d, 60, 80)
    u_dhw = (sweep.grid_bndhw2[0, 0, ..., 0] + 1) * (camera.width - 1) / 2
    v_dhw = (sweep.grid_bndhw2[0, 0, ..., 1] + 1) * (camera.height - 1) / 2
    u_w = torch.arange(80, dtype=torch.float32)
    expected_u_dhw = u_w[None, None] + (camera.fx * tx / depth_d)[:, None, None]
    inside_dhw = (expected_u_dhw <= camera.width - 1).expand_as(u_dhw)
    assert torch.allclose(u_dhw[inside_dhw], expected_u_dhw.expand_as(u_dhw)[inside_dhw], atol=1e-3)
    assert torch.allclose(v_dhw, torch.arange(60, dtype=torch.float32)[None, :, None].expand_as(v_dhw), atol=1e-3)
    # Out-of-view samples are masked: exactly the columns shifted past the last pixel centre.
    assert torch.equal(sweep.valid_bndhw[0, 0], inside_dhw)


def test_points_behind_the_source_are_masked() -> None:
    camera = small_camera()
    # The source sits 3 m in front of the reference, facing it: a plane at 5 m is behind it.
    src_T_ref_44 = make_pose_44(rotation_33([0, 1, 0], np.pi), np.array([0.0, 0.0, 3.0]))
    depth_d = torch.tensor([5.0, 1.0])
    sweep = same_camera_sweep(
        torch.from_numpy(camera.K_33).float()[None], torch.from_numpy(src_T_ref_44).float()[None, None], depth_d, 60, 80
    )
    assert not sweep.valid_bndhw[0, 0, 0].any()
    assert sweep.valid_bndhw[0, 0, 1].float().mean() > 0.5


@pytest.mark.parametrize("cost_kind", ["zncc", "feature"])
def test_cost_minimum_lies_on_the_true_plane(cost_kind: str) -> None:
    camera = small_camera(80, 60)
    depth_d = inverse_depth_hypotheses_d(0.25, 20.0, 64)
    true_index = 50
    plane_depth = float(depth_d[true_index])
    src_T_ref_n44 = np.stack(
        [
            make_pose_44(rotation_33([0, 1, 0.2], 0.03), np.array([0.15, 0.03, 0.02])),
            make_pose_44(rotation_33([1, 0, 0], -0.02), np.array([-0.12, 0.08, -0.03])),
        ]
    )
    channels = 1 if cost_kind == "zncc" else 8
    ref_1chw, src_1nchw = textured_plane_views(camera, plane_depth, src_T_ref_n44, channels)
    gain_1n111 = torch.tensor([1.3, 0.8])[None, :, None, None, None]
    sweep = same_camera_sweep(
        torch.from_numpy(camera.K_33).float()[None], torch.from_numpy(src_T_ref_n44).float()[None], depth_d, 60, 80
    )
    if cost_kind == "zncc":
        # ZNCC ignores gain and offset between frames.
        cost_volume = zncc_cost_volume(ref_1chw, src_1nchw * gain_1n111 + 0.05, sweep, window=5)
    else:
        # Cosine similarity ignores the scale of zero-centred features.
        cost_volume = feature_cost_volume(ref_1chw - 0.5, (src_1nchw - 0.5) * gain_1n111, sweep)
    assert cost_volume.cost_bdhw.shape == (1, 64, 60, 80)
    seen_hw = cost_volume.valid_count_bdhw[0, true_index] == 2
    best_hw = cost_volume.cost_bdhw[0].argmin(dim=0)
    assert seen_hw.float().mean() > 0.5
    assert (best_hw[seen_hw] - true_index).abs().le(1).float().mean() > 0.95
    assert (best_hw[seen_hw] == true_index).float().mean() > 0.8


def test_unseen_planes_hold_the_neutral_cost() -> None:
    camera = small_camera()
    src_T_ref_1144 = torch.from_numpy(make_pose_44(np.eye(3), np.array([5.0, 0.0, 0.0])))[None, None].float()
    depth_d = torch.tensor([0.5, 50.0])
    sweep = same_camera_sweep(torch.from_numpy(camera.K_33).float()[None], src_T_ref_1144, depth_d, 60, 80)
    cost_volume = zncc_cost_volume(torch.rand(1, 1, 60, 80), torch.rand(1, 1, 1, 60, 80), sweep)
    assert torch.all(cost_volume.valid_count_bdhw[0, 0] == 0)
    assert torch.all(cost_volume.cost_bdhw[0, 0] == NEUTRAL_COST)


@pytest.mark.parametrize("window", [3, 5, 9, 15])
def test_box_filter_matches_average_pooling(window: int) -> None:
    """Square (small windows) and separated (large windows) kernels both average over the
    pixels inside the image."""
    x_bchw = torch.rand(2, 3, 17, 23)
    expected = F.avg_pool2d(x_bchw, window, stride=1, padding=window // 2, count_include_pad=False)
    assert torch.allclose(box_filter_bchw(x_bchw, window), expected, atol=1e-6)
    with pytest.raises(ValueError, match="odd window"):
        box_filter_bchw(x_bchw, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu() -> None:
    camera = small_camera()
    src_T_ref_1144 = torch.from_numpy(make_pose_44(np.eye(3), np.array([0.1, 0.0, 0.0])))[None, None].float()
    K_133 = torch.from_numpy(camera.K_33).float()[None]
    depth_d = inverse_depth_hypotheses_d(0.25, 20.0, 16)
    ref_1chw, src_1nchw = torch.rand(1, 1, 60, 80), torch.rand(1, 1, 1, 60, 80)
    cpu = zncc_cost_volume(ref_1chw, src_1nchw, same_camera_sweep(K_133, src_T_ref_1144, depth_d, 60, 80))
    cuda = zncc_cost_volume(
        ref_1chw.cuda(), src_1nchw.cuda(),
        same_camera_sweep(K_133.cuda(), src_T_ref_1144.cuda(), depth_d.cuda(), 60, 80),
    )
    assert cuda.cost_bdhw.device.type == "cuda"
    assert torch.allclose(cuda.cost_bdhw.cpu(), cpu.cost_bdhw, atol=1e-4)


def random_sweep(
    seed: int, batch: int, sources: int, height: int, width: int, src_height: int, src_width: int, planes: int
) -> PlaneSweep:
    """Random intrinsics and poses (rotations up to 0.3 rad, translations up to 0.5 m) whose
    planes land partly inside, partly outside and, for the last source, partly behind the
    source cameras."""
    generator = np.random.default_rng(seed)

    def intrinsics_33(w: int, h: int) -> np.ndarray:
        f = generator.uniform(0.6, 1.2) * w
        return np.array([[f, 0, generator.uniform(0.4, 0.6) * (w - 1)], [0, f, generator.uniform(0.4, 0.6) * (h - 1)], [0, 0, 1]])

    poses_bn44 = np.stack([
        np.stack([
            make_pose_44(rotation_33(generator.normal(size=3), generator.uniform(0.0, 0.3)), generator.uniform(-0.5, 0.5, 3))
            for _ in range(sources)
        ])
        for _ in range(batch)
    ])
    # The last source stands 1.5 m ahead of the reference: nearer planes are behind it.
    poses_bn44[:, -1, 2, 3] = -1.5
    K_ref_b33 = torch.tensor(np.stack([intrinsics_33(width, height) for _ in range(batch)])).float()
    K_src_bn33 = torch.tensor(np.stack([[intrinsics_33(src_width, src_height) for _ in range(sources)] for _ in range(batch)])).float()
    depth_d = inverse_depth_hypotheses_d(0.3, 8.0, planes)
    return plane_sweep(K_ref_b33, K_src_bn33, torch.tensor(poses_bn44).float(), depth_d, height, width, src_height, src_width)


def assert_mixed_visibility(sweep: PlaneSweep) -> None:
    """The sweep exercises what the kernels must get right: samples in view, out of view,
    behind a source, and in view within a pixel of the image border."""
    valid_bndhw = sweep.valid_bndhw
    assert 0.2 < valid_bndhw.float().mean() < 0.8
    border_bndhw = (sweep.grid_bndhw2.abs() > 1.0 - 2.0 / sweep.src_width).any(dim=-1)
    assert (valid_bndhw & border_bndhw).sum() > 100
    assert not valid_bndhw[:, -1, 0].any() and valid_bndhw[:, -1, -1].any()


@pytest.mark.parametrize("channels", [32, 3])
def test_fused_feature_cost_matches_grid_sample(channels: int) -> None:
    """The fused CPU kernel against the grid_sample reference: costs within 1e-5 (float32
    rounding of costs in [0, 2]) and exactly the same sources counted per sample."""
    sweep = random_sweep(seed=channels, batch=2, sources=3, height=30, width=40, src_height=36, src_width=44, planes=24)
    assert_mixed_visibility(sweep)
    generator = torch.Generator().manual_seed(channels)
    ref_bchw = torch.randn(2, channels, 30, 40, generator=generator)
    src_bnchw = torch.randn(2, 3, channels, 36, 44, generator=generator)
    with torch.no_grad():
        assert fused_kernels_apply(ref_bchw, src_bnchw)
        fused = feature_cost_volume(ref_bchw, src_bnchw, sweep)
        reference = feature_cost_volume_reference(F.normalize(ref_bchw, dim=1), F.normalize(src_bnchw, dim=2), sweep)
    assert torch.equal(fused.valid_count_bdhw, reference.valid_count_bdhw)
    assert (fused.cost_bdhw - reference.cost_bdhw).abs().max() <= 1e-5
    assert (fused.cost_bdhw[fused.valid_count_bdhw == 0] == NEUTRAL_COST).all()


@pytest.mark.parametrize("window", [3, 5])
def test_fused_zncc_cost_matches_grid_sample(window: int) -> None:
    """The fused CPU kernel (float32 samples, float64 box sums) against the grid_sample
    reference: exactly the same sources counted per sample; costs within 2e-5 of the
    reference computed in float64, and no further from it than the reference computed in
    float32 (whose box filters round E[x^2] before E[x^2] - E[x]^2 is divided by variances
    down to `variance_floor`: ~1e-4 here), so within 1e-4 of that."""
    sweep = random_sweep(seed=window, batch=1, sources=3, height=24, width=32, src_height=28, src_width=36, planes=16)
    assert_mixed_visibility(sweep)
    generator = torch.Generator().manual_seed(window)
    ref_b1hw = torch.rand(1, 1, 24, 32, generator=generator)
    src_bn1hw = torch.rand(1, 3, 1, 28, 36, generator=generator)
    mean_ref_b1hw = box_filter_bchw(ref_b1hw, window)
    var_ref_b1hw = (box_filter_bchw(ref_b1hw**2, window) - mean_ref_b1hw**2).clamp(min=0.0)
    with torch.no_grad():
        assert fused_kernels_apply(ref_b1hw, src_bn1hw)
        fused = zncc_cost_volume(ref_b1hw, src_bn1hw, sweep, window)
        reference32 = zncc_cost_volume_reference(
            ref_b1hw, mean_ref_b1hw, var_ref_b1hw, src_bn1hw, sweep, window, variance_floor=1e-4
        )
        # float64 inputs take the reference path.
        reference64 = zncc_cost_volume(ref_b1hw.double(), src_bn1hw.double(), sweep, window)
    assert torch.equal(fused.valid_count_bdhw, reference32.valid_count_bdhw)
    assert torch.equal(fused.valid_count_bdhw, reference64.valid_count_bdhw.float())
    fused_error = (fused.cost_bdhw - reference64.cost_bdhw).abs().max()
    reference32_error = (reference32.cost_bdhw - reference64.cost_bdhw).abs().max()
    assert fused_error <= min(2e-5, reference32_error)
    assert (fused.cost_bdhw - reference32.cost_bdhw).abs().max() <= 1e-4


def test_gradients_flow_through_the_reference_path() -> None:
    """Features that need gradients (training) take the differentiable reference path,
    which gives the fused kernel's costs."""
    sweep = random_sweep(seed=7, batch=1, sources=2, height=12, width=16, src_height=12, src_width=16, planes=8)
    generator = torch.Generator().manual_seed(7)
    ref_bchw = torch.randn(1, 8, 12, 16, generator=generator, requires_grad=True)
    src_bnchw = torch.randn(1, 2, 8, 12, 16, generator=generator, requires_grad=True)
    assert not fused_kernels_apply(ref_bchw, src_bnchw)
    trained = feature_cost_volume(ref_bchw, src_bnchw, sweep)
    trained.cost_bdhw.sum().backward()
    assert ref_bchw.grad.abs().sum() > 0 and src_bnchw.grad.abs().sum() > 0
    with torch.no_grad():
        inferred = feature_cost_volume(ref_bchw, src_bnchw, sweep)
    assert (trained.cost_bdhw - inferred.cost_bdhw).abs().max() <= 1e-5


def test_inputs_that_do_not_fit_the_sweep_are_refused() -> None:
    sweep = random_sweep(seed=1, batch=1, sources=2, height=12, width=16, src_height=12, src_width=16, planes=4)
    with pytest.raises(ValueError, match=r"sources of shape \(1, 2, 8, 12, 16\).*got \(1, 8, 12, 16\) and \(1, 2, 4, 12, 16\)"):
        feature_cost_volume(torch.rand(1, 8, 12, 16), torch.rand(1, 2, 4, 12, 16), sweep)
    with pytest.raises(ValueError, match=r"reference of shape \(1, 1, 12, 16\)"):
        zncc_cost_volume(torch.rand(1, 3, 12, 16), torch.rand(1, 2, 3, 12, 16), sweep)
