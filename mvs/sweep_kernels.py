"""Fused CPU kernels of the plane-sweep cost volumes (numba, compiled on first use, cached).

Each parallel job takes one (batch, plane, row) or one (batch, plane) of the volume, maps
its reference pixels through the plane homography of every source, samples the sources
bilinearly and reduces at once: no warped volume is ever stored. The arithmetic follows
`mvs.costvolume.sample_grid_bndhw2` and `grid_sample` step by step, so that the kernels
agree with the reference path to float rounding and flag exactly the same samples as out
of view:

- pixel mapping, in float64 and in this order: x = (H00 u + H01 v) + H02, likewise y, z;
  z <= 1e-6 is behind the source; g = (x / max(z, 1e-6)) * 2 / (W_src - 1) - 1, clamped to
  [-2, 2]; a sample is in view in front of the source with |g| <= 1 + 2e-3 / (W_src - 1)
  in x (and likewise in y);
- sampling as `grid_sample(align_corners=True, padding_mode="border")` does with the
  float32 grid: pixel = ((g + 1) / 2) (W_src - 1) clipped to [0, W_src - 1], the two
  neighbours weighted linearly, in x and in y.

Arrays are numpy views of CPU tensors; features are channels last (..., H, W, C) so that
the C values of one source pixel are contiguous.
"""

from __future__ import annotations

import math

import numba
import numpy as np

BEHIND_EPS = 1e-6
"""Smallest source-camera z (relative to the plane depth) of a point in front of the source."""
IN_VIEW_TOLERANCE_PX = 1e-3
"""How far (pixels) past the outermost pixel centres a sample still counts as in view."""


def use_threads(count: int) -> None:
    """Run the kernels on `count` threads (at most as many as numba started), with OpenMP
    (thread-safe; numba's TBB layer would warn about the old TBB found beside torch)."""
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
    numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))


@numba.njit(cache=True)
def pixel_to_grid_scale(size: int) -> float:
    """Factor from pixels to grid_sample's normalised coordinates along an axis of `size`."""
    return 2.0 / max(size - 1, 1)


@numba.njit(cache=True)
def row_source_grid(
    H_33: np.ndarray, v: int, src_height: int, src_width: int, gx_w: np.ndarray, gy_w: np.ndarray, valid_w: np.ndarray
) -> None:
    """Normalised source coordinates (gx_w, gy_w, float64) of the reference pixels (u, v),
    u = 0..W-1, under the homography H_33, and whether each is in view (valid_w).

    Compiled without fast-math: the exact float64 operations of the module docstring.
    """
    scale_x, scale_y = pixel_to_grid_scale(src_width), pixel_to_grid_scale(src_height)
    limit_x = 1.0 + IN_VIEW_TOLERANCE_PX * scale_x
    limit_y = 1.0 + IN_VIEW_TOLERANCE_PX * scale_y
    row_x, row_y, row_z = H_33[0, 1] * v, H_33[1, 1] * v, H_33[2, 1] * v
    for u in range(gx_w.shape[0]):
        x = (H_33[0, 0] * u + row_x) + H_33[0, 2]
        y = (H_33[1, 0] * u + row_y) + H_33[1, 2]
        z = (H_33[2, 0] * u + row_z) + H_33[2, 2]
        z_clamped = max(z, BEHIND_EPS)
        gx = min(max(x / z_clamped * scale_x - 1.0, -2.0), 2.0)
        gy = min(max(y / z_clamped * scale_y - 1.0, -2.0), 2.0)
        gx_w[u], gy_w[u] = gx, gy
        valid_w[u] = z > BEHIND_EPS and abs(gx) <= limit_x and abs(gy) <= limit_y


@numba.njit(cache=True)
def row_bilinear_axis(g_w: np.ndarray, size: int, low_w: np.ndarray, high_w: np.ndarray, weight_w: np.ndarray) -> None:
    """grid_sample's border-padded sampling of float32(g_w) along an axis of `size` pixels:
    the two neighbours of each sample (the second clamped into the image, where its weight
    is 0) and the weight of the second, float32."""
    last = np.float32(size - 1)
    for u in range(g_w.shape[0]):
        pixel = (np.float32(g_w[u]) + np.float32(1.0)) / np.float32(2.0) * last
        pixel = min(max(pixel, np.float32(0.0)), last)
        low = np.int32(pixel)  # truncation is floor for pixel >= 0
        low_w[u], high_w[u] = low, min(low + 1, size - 1)
        weight_w[u] = pixel - np.float32(low)


@numba.njit(cache=True)
def row_samples(
    H_33: np.ndarray, v: int, src_height: int, src_width: int, scratch_w: np.ndarray, corners_4w: np.ndarray,
    weights_2w: np.ndarray, valid_w: np.ndarray
) -> None:
    """Where the reference pixels (u, v), u = 0..W-1, sample a source under H_33: corner
    indices x0, x1, y0, y1 (corners_4w, int32), weights wx, wy of x1 and y1 (weights_2w,
    float32) and whether each sample is in view (valid_w); scratch_w is (2, W) float64."""
    row_source_grid(H_33, v, src_height, src_width, scratch_w[0], scratch_w[1], valid_w)
    row_bilinear_axis(scratch_w[0], src_width, corners_4w[0], corners_4w[1], weights_2w[0])
    row_bilinear_axis(scratch_w[1], src_height, corners_4w[2], corners_4w[3], weights_2w[1])


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def feature_cost_kernel(
    ref_bhwc: np.ndarray,
    src_bnhwc: np.ndarray,
    H_bnd33: np.ndarray,
    neutral_cost: float,
    cost_bdhw: np.ndarray,
    count_bdhw: np.ndarray,
) -> None:
    """cost_bdhw = mean over the sources in view of 1 - <ref feature, bilinear source
    feature> (`neutral_cost` where none is); count_bdhw = the number of those sources.
    The dot product is taken with the four neighbours, then interpolated (the same value
    as the dot product with the interpolated feature, up to rounding).

    ref_bhwc (B, H, W, C), src_bnhwc (B, N, Hs, Ws, C): float32, contiguous;
    H_bnd33 (B, N, D, 3, 3) float64; outputs (B, D, H, W) float32, written in place.
    """
    b_size, n_size, d_size = H_bnd33.shape[:3]
    height, width, channels = ref_bhwc.shape[1:]
    src_height, src_width = src_bnhwc.shape[2:4]
    for job in numba.prange(b_size * d_size * height):
        b, d, v = job // (d_size * height), (job // height) % d_size, job % height
        scratch_2w, corners_4w = np.empty((2, width)), np.empty((4, width), dtype=np.int32)
        weights_2w, valid_w = np.empty((2, width), dtype=np.float32), np.empty(width, dtype=np.bool_)
        summed_w = np.zeros(width, dtype=np.float32)
        count_w = np.zeros(width, dtype=np.int64)
        for n in range(n_size):
            row_samples(H_bnd33[b, n, d], v, src_height, src_width, scratch_2w, corners_4w, weights_2w, valid_w)
            src_hwc = src_bnhwc[b, n]
            for u in range(width):
                if not valid_w[u]:
                    continue
                x0, x1, y0, y1 = corners_4w[0, u], corners_4w[1, u], corners_4w[2, u], corners_4w[3, u]
                wx, wy = weights_2w[0, u], weights_2w[1, u]
                ref_c = ref_bhwc[b, v, u]
                f00_c, f01_c, f10_c, f11_c = src_hwc[y0, x0], src_hwc[y0, x1], src_hwc[y1, x0], src_hwc[y1, x1]
                dot00, dot01, dot10, dot11 = np.float32(0.0), np.float32(0.0), np.float32(0.0), np.float32(0.0)
                for c in range(channels):
                    dot00 += ref_c[c] * f00_c[c]
                    dot01 += ref_c[c] * f01_c[c]
                    dot10 += ref_c[c] * f10_c[c]
                    dot11 += ref_c[c] * f11_c[c]
                top, bottom = dot00 + wx * (dot01 - dot00), dot10 + wx * (dot11 - dot10)
                summed_w[u] += np.float32(1.0) - (top + wy * (bottom - top))
                count_w[u] += 1
        for u in range(width):
            cost_bdhw[b, d, v, u] = summed_w[u] / count_w[u] if count_w[u] > 0 else neutral_cost
            count_bdhw[b, d, v, u] = count_w[u]


@numba.njit(cache=True)
def row_box_means(x_qhw: np.ndarray, v: int, radius: int, columns_qw: np.ndarray, prefix_qw: np.ndarray,
                  means_qw: np.ndarray) -> None:
    """Means of the images x_qhw (Q, H, W) over the (2 radius + 1)^2 box of each pixel of
    row v, over the pixels inside the image, in float64 (columns_qw (Q, W) and prefix_qw
    (Q, W + 1) are scratch): column sums, then window differences of their running sums."""
    height, width = x_qhw.shape[1:]
    v_lo, v_hi = max(v - radius, 0), min(v + radius, height - 1)
    for q in range(x_qhw.shape[0]):
        columns_qw[q] = 0.0
        for k in range(v_lo, v_hi + 1):
            for u in range(width):
                columns_qw[q, u] += x_qhw[q, k, u]
        prefix_qw[q, 0] = 0.0
        for u in range(width):
            prefix_qw[q, u + 1] = prefix_qw[q, u] + columns_qw[q, u]
        for u in range(width):
            u_lo, u_hi = max(u - radius, 0), min(u + radius, width - 1)
            means_qw[q, u] = (prefix_qw[q, u_hi + 1] - prefix_qw[q, u_lo]) / ((v_hi - v_lo + 1) * (u_hi - u_lo + 1))


@numba.njit(parallel=True, cache=True)
def zncc_cost_kernel(
    ref_bhw: np.ndarray,
    mean_ref_bhw: np.ndarray,
    var_ref_bhw: np.ndarray,
    src_bnhw: np.ndarray,
    H_bnd33: np.ndarray,
    window: int,
    variance_floor: float,
    neutral_cost: float,
    cost_bdhw: np.ndarray,
    count_bdhw: np.ndarray,
) -> None:
    """cost_bdhw = mean over the sources in view of 1 - ZNCC of the `window`-sized patches
    of the reference and of the source warped onto the plane (`neutral_cost` where no
    source sees the pixel); count_bdhw = the number of those sources.

    ref_bhw (B, H, W) grey levels with their box means and variances mean_ref_bhw and
    var_ref_bhw; src_bnhw (B, N, Hs, Ws); all float32. Every pixel of a warped source, in
    view or not, enters the patches around it (border-padded), as in the reference path.
    Samples and their products are float32 as there, box sums float64.
    H_bnd33 (B, N, D, 3, 3) float64; outputs (B, D, H, W) float32, written in place.
    """
    b_size, n_size, d_size = H_bnd33.shape[:3]
    height, width = ref_bhw.shape[1:]
    src_height, src_width = src_bnhw.shape[2:]
    radius = window // 2
    for job in numba.prange(b_size * d_size):
        b, d = job // d_size, job % d_size
        scratch_2w, corners_4w = np.empty((2, width)), np.empty((4, width), dtype=np.int32)
        weights_2w, valid_hw = np.empty((2, width), dtype=np.float32), np.empty((height, width), dtype=np.bool_)
        # The warped source, its square and its product with the reference.
        moments_3hw = np.empty((3, height, width))
        columns_3w, prefix_3w, means_3w = np.empty((3, width)), np.empty((3, width + 1)), np.empty((3, width))
        summed_hw = np.zeros((height, width), dtype=np.float32)
        count_hw = np.zeros((height, width), dtype=np.int64)
        for n in range(n_size):
            src_hw = src_bnhw[b, n]
            for v in range(height):
                row_samples(H_bnd33[b, n, d], v, src_height, src_width, scratch_2w, corners_4w, weights_2w, valid_hw[v])
                for u in range(width):
                    x0, x1, y0, y1 = corners_4w[0, u], corners_4w[1, u], corners_4w[2, u], corners_4w[3, u]
                    wx, wy = weights_2w[0, u], weights_2w[1, u]
                    sample = ((1 - wx) * (1 - wy) * src_hw[y0, x0] + wx * (1 - wy) * src_hw[y0, x1]
                              + (1 - wx) * wy * src_hw[y1, x0] + wx * wy * src_hw[y1, x1])
                    moments_3hw[0, v, u] = sample
                    moments_3hw[1, v, u] = sample * sample
                    moments_3hw[2, v, u] = sample * ref_bhw[b, v, u]
            for v in range(height):
                row_box_means(moments_3hw, v, radius, columns_3w, prefix_3w, means_3w)
                for u in range(width):
                    if not valid_hw[v, u]:
                        continue
                    mean = means_3w[0, u]
                    variance = max(means_3w[1, u] - mean * mean, 0.0)
                    covariance = means_3w[2, u] - mean * mean_ref_bhw[b, v, u]
                    zncc = covariance / math.sqrt((var_ref_bhw[b, v, u] + variance_floor) * (variance + variance_floor))
                    summed_hw[v, u] += np.float32(1.0 - zncc)
                    count_hw[v, u] += 1
        for v in range(height):
            for u in range(width):
                count = count_hw[v, u]
                cost_bdhw[b, d, v, u] = summed_hw[v, u] / count if count > 0 else neutral_cost
                count_bdhw[b, d, v, u] = count
