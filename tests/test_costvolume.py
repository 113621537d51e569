"""Plane-sweep cost volume against closed forms: homographies, shifts, masks, true depth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mvs.costvolume import (
    NEUTRAL_COST,
    box_filter_bchw,
    feature_cost_volume,
    inverse_depth_hypotheses_d,
    plane_homographies_bnd33,
    same_camera_sweep,
    zncc_cost_volume,
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


def test_box_filter_matches_average_pooling() -> None:
    x_bchw = torch.rand(2, 3, 17, 23)
    expected = F.avg_pool2d(x_bchw, 5, stride=1, padding=2, count_include_pad=False)
    assert torch.allclose(box_filter_bchw(x_bchw, 5), expected, atol=1e-6)
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
