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

# OpenMP first: thread-safe, and numba's TBB layer would warn about the TBB version here.
numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]


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
def bilinear_axis(g: float, size: int) -> tuple[int, int, np.float32]:
    """grid_sample's border-padded sampling of float32(g) along an axis of `size` pixels:
    the two neighbours (the second clamped into the image, where its weight is 0) and the
    weight of the second, float32."""
    pixel = (np.float32(g) + np.float32(1.0)) / np.float32(2.0) * np.float32(size - 1)
    pixel = min(max(pixel, np.float32(0.0)), np.float32(size - 1))
    low = int(math.floor(pixel))
    return low, min(low + 1, size - 1), pixel - np.float32(low)


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
        gx_w, gy_w = np.empty(width), np.empty(width)
        valid_w = np.empty(width, dtype=np.bool_)
        summed_w = np.zeros(width, dtype=np.float32)
        count_w = np.zeros(width, dtype=np.int64)
        for n in range(n_size):
            row_source_grid(H_bnd33[b, n, d], v, src_height, src_width, gx_w, gy_w, valid_w)
            src_hwc = src_bnhwc[b, n]
            for u in range(width):
                if not valid_w[u]:
                    continue
                x0, x1, wx = bilinear_axis(gx_w[u], src_width)
                y0, y1, wy = bilinear_axis(gy_w[u], src_height)
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
def box_mean_hw(x_hw: np.ndarray, radius: int, rows_hw: np.ndarray, out_hw: np.ndarray) -> None:
    """Mean of x_hw over the (2 radius + 1)^2 box of each pixel, over the pixels inside the
    image (float64; rows_hw is scratch of the same shape)."""
    height, width = x_hw.shape
    for v in range(height):
        for u in range(width):
            total = 0.0
            for k in range(max(u - radius, 0), min(u + radius, width - 1) + 1):
                total += x_hw[v, k]
            rows_hw[v, u] = total
    for v in range(height):
        v_lo, v_hi = max(v - radius, 0), min(v + radius, height - 1)
        for u in range(width):
            total = 0.0
            for k in range(v_lo, v_hi + 1):
                total += rows_hw[k, u]
            inside = (v_hi - v_lo + 1) * (min(u + radius, width - 1) - max(u - radius, 0) + 1)
            out_hw[v, u] = total / inside


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
    H_bnd33 (B, N, D, 3, 3) float64; outputs (B, D, H, W) float32, written in place.
    """
    b_size, n_size, d_size = H_bnd33.shape[:3]
    height, width = ref_bhw.shape[1:]
    src_height, src_width = src_bnhw.shape[2:]
    radius = window // 2
    for job in numba.prange(b_size * d_size):
        b, d = job // d_size, job % d_size
        gx_w, gy_w = np.empty(width), np.empty(width)
        valid_hw = np.empty((height, width), dtype=np.bool_)
        warped_hw, squared_hw, product_hw = np.empty((height, width)), np.empty((height, width)), np.empty((height, width))
        mean_hw, mean_squared_hw, mean_product_hw = np.empty((height, width)), np.empty((height, width)), np.empty((height, width))
        rows_hw = np.empty((height, width))
        summed_hw = np.zeros((height, width), dtype=np.float32)
        count_hw = np.zeros((height, width), dtype=np.int64)
        for n in range(n_size):
            src_hw = src_bnhw[b, n]
            for v in range(height):
                row_source_grid(H_bnd33[b, n, d], v, src_height, src_width, gx_w, gy_w, valid_hw[v])
                for u in range(width):
                    x0, x1, wx = bilinear_axis(gx_w[u], src_width)
                    y0, y1, wy = bilinear_axis(gy_w[u], src_height)
                    sample = ((1 - wx) * (1 - wy) * src_hw[y0, x0] + wx * (1 - wy) * src_hw[y0, x1]
                              + (1 - wx) * wy * src_hw[y1, x0] + wx * wy * src_hw[y1, x1])
                    warped_hw[v, u] = sample
                    squared_hw[v, u] = sample * sample
                    product_hw[v, u] = sample * ref_bhw[b, v, u]
            box_mean_hw(warped_hw, radius, rows_hw, mean_hw)
            box_mean_hw(squared_hw, radius, rows_hw, mean_squared_hw)
            box_mean_hw(product_hw, radius, rows_hw, mean_product_hw)
            for v in range(height):
                for u in range(width):
                    if not valid_hw[v, u]:
                        continue
                    mean = mean_hw[v, u]
                    variance = max(mean_squared_hw[v, u] - mean * mean, 0.0)
                    covariance = mean_product_hw[v, u] - mean * mean_ref_bhw[b, v, u]
                    zncc = covariance / math.sqrt((var_ref_bhw[b, v, u] + variance_floor) * (variance + variance_floor))
                    summed_hw[v, u] += np.float32(1.0 - zncc)
                    count_hw[v, u] += 1
        for v in range(height):
            for u in range(width):
                count = count_hw[v, u]
                cost_bdhw[b, d, v, u] = summed_hw[v, u] / count if count > 0 else neutral_cost
                count_bdhw[b, d, v, u] = count
