"""Trajectory metrics (ATE, RPE), TUM-format trajectory files and a top-view plot.

Trajectories are camera-to-world poses `world_T_cam_44` keyed by dataset frame index.
TUM format: one line per pose, `timestamp tx ty tz qx qy qz qw` of world_T_cam.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mvs.geometry import (
    invert_pose_44,
    make_pose_44,
    matrix_to_quaternion_xyzw,
    quaternion_to_matrix_33,
)
from slam.alignment import Similarity, umeyama_alignment


@dataclass
class TrajectoryMetrics:
    """Accuracy of an estimated trajectory against ground truth.

    ate_*: absolute trajectory error of camera centres after alignment (ground-truth
    units, metres for real data). rpe_translation_rmse: RMS of relative translation
    errors over `rpe_delta` frames (ground-truth units, after the alignment scale);
    rpe_rotation_rmse_deg: RMS of relative rotation errors (degrees). alignment: "se3"
    or "sim3"; scale: ground-truth units per estimated unit (1 for se3).
    frames_matched: frames posed in both; frames_ground_truth: frames with ground truth.
    """

    ate_rmse: float
    ate_mean: float
    ate_median: float
    ate_max: float
    rpe_translation_rmse: float
    rpe_rotation_rmse_deg: float
    rpe_delta: int
    alignment: str
    scale: float
    frames_matched: int
    frames_ground_truth: int


def ate_errors_n(est_n3: np.ndarray, gt_n3: np.ndarray, with_scale: bool) -> tuple[np.ndarray, Similarity]:
    """Per-frame distances (N,) between aligned estimated and ground-truth camera centres.

    The estimated centres `est_n3` are mapped onto `gt_n3` by Umeyama alignment: Sim(3)
    when `with_scale` (monocular), SE(3) otherwise. Distances in ground-truth units.
    """
    alignment = umeyama_alignment(est_n3, gt_n3, with_scale)
    errors_n = np.linalg.norm(alignment.apply_n3(est_n3) - gt_n3, axis=1)
    return errors_n, alignment


def ate_rmse(est_n3: np.ndarray, gt_n3: np.ndarray, with_scale: bool) -> float:
    """Root-mean-square absolute trajectory error of camera centres after alignment."""
    errors_n, _ = ate_errors_n(est_n3, gt_n3, with_scale)
    return float(np.sqrt(np.mean(errors_n**2)))


def rotation_angle_deg(R_33: np.ndarray) -> float:
    """Angle (degrees) of a rotation matrix, accurate for small angles.

    atan2 of the antisymmetric part against the trace: arccos of the trace alone loses
    about a degree near zero when the matrix is orthonormal only to 1e-8 (as stored poses
    are).
    """
    sin_term = np.linalg.norm([R_33[2, 1] - R_33[1, 2], R_33[0, 2] - R_33[2, 0], R_33[1, 0] - R_33[0, 1]]) / 2
    cos_term = (np.trace(R_33) - 1.0) / 2
    return float(np.degrees(np.arctan2(sin_term, cos_term)))


def relative_pose_errors(
    est_world_T_cam_n44: np.ndarray, gt_world_T_cam_n44: np.ndarray, delta: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Relative pose errors between frames i and i + delta.

    The relative motion cam_i_T_cam_j of the estimate (translation multiplied by `scale`,
    ground-truth units per estimated unit) is compared with that of ground truth.
    Returns translation errors (M,) in ground-truth units and rotation errors (M,) in
    degrees, M = N - delta.
    """
    if est_world_T_cam_n44.shape != gt_world_T_cam_n44.shape:
        raise ValueError(
            f"relative_pose_errors: expected equal shapes, got {est_world_T_cam_n44.shape} "
            f"and {gt_world_T_cam_n44.shape}"
        )
    if delta < 1:
        raise ValueError(f"relative_pose_errors: expected delta >= 1, got {delta}")
    count = len(est_world_T_cam_n44) - delta
    translation_m = np.zeros(max(count, 0))
    rotation_deg_m = np.zeros(max(count, 0))
    for i in range(count):
        est_i_T_j_44 = invert_pose_44(est_world_T_cam_n44[i]) @ est_world_T_cam_n44[i + delta]
        est_i_T_j_44[:3, 3] *= scale
        gt_i_T_j_44 = invert_pose_44(gt_world_T_cam_n44[i]) @ gt_world_T_cam_n44[i + delta]
        error_44 = invert_pose_44(gt_i_T_j_44) @ est_i_T_j_44
        translation_m[i] = np.linalg.norm(error_44[:3, 3])
        rotation_deg_m[i] = rotation_angle_deg(error_44[:3, :3])
    return translation_m, rotation_deg_m


def evaluate_trajectory(
    est_world_T_cam_44: dict[int, np.ndarray],
    gt_world_T_cam_44: dict[int, np.ndarray],
    with_scale: bool,
    rpe_delta: int = 1,
) -> TrajectoryMetrics:
    """ATE and RPE of the frames posed in both trajectories (keyed by frame index).

    RPE compares consecutive matched frames `rpe_delta` apart in index order.
    """
    common = sorted(set(est_world_T_cam_44) & set(gt_world_T_cam_44))
    if len(common) < 3:
        raise ValueError(
            f"evaluate_trajectory: expected at least 3 frames posed in both trajectories, got {len(common)}"
        )
    est_n44 = np.stack([est_world_T_cam_44[i] for i in common])
    gt_n44 = np.stack([gt_world_T_cam_44[i] for i in common])
    errors_n, alignment = ate_errors_n(est_n44[:, :3, 3], gt_n44[:, :3, 3], with_scale)
    translation_m, rotation_deg_m = relative_pose_errors(est_n44, gt_n44, rpe_delta, alignment.scale)
    return TrajectoryMetrics(
        ate_rmse=float(np.sqrt(np.mean(errors_n**2))),
        ate_mean=float(np.mean(errors_n)),
        ate_median=float(np.median(errors_n)),
        ate_max=float(np.max(errors_n)),
        rpe_translation_rmse=float(np.sqrt(np.mean(translation_m**2))) if len(translation_m) else 0.0,
        rpe_rotation_rmse_deg=float(np.sqrt(np.mean(rotation_deg_m**2))) if len(rotation_deg_m) else 0.0,
        rpe_delta=rpe_delta,
        alignment="sim3" if with_scale else "se3",
        scale=alignment.scale,
        frames_matched=len(common),
        frames_ground_truth=len(gt_world_T_cam_44),
    )


def format_tum_trajectory(timestamps: list[float], world_T_cam_44s: list[np.ndarray]) -> str:
    """TUM-format text, one `timestamp tx ty tz qx qy qz qw` line per camera-to-world pose."""
    if len(timestamps) != len(world_T_cam_44s):
        raise ValueError(
            f"format_tum_trajectory: expected one timestamp per pose, got {len(timestamps)} "
            f"timestamps and {len(world_T_cam_44s)} poses"
        )
    lines = []
    for timestamp, world_T_cam_44 in zip(timestamps, world_T_cam_44s):
        t_3 = world_T_cam_44[:3, 3]
        q_xyzw = matrix_to_quaternion_xyzw(world_T_cam_44[:3, :3])
        values = " ".join(f"{value:.9f}" for value in (*t_3, *q_xyzw))
        lines.append(f"{timestamp:.6f} {values}")
    return "\n".join(lines) + "\n"


def parse_tum_trajectory(text: str, source: str = "<text>") -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (N,) and camera-to-world poses (N, 4, 4) from TUM-format text.

    Blank lines and lines starting with '#' are ignored; `source` names the text in errors.
    """
    timestamps = []
    world_T_cam_44s = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.replace(",", " ").split()
        if len(tokens) != 8:
            raise ValueError(
                f"{source}:{line_number}: expected 8 values 'timestamp tx ty tz qx qy qz qw', "
                f"got {len(tokens)}"
            )
        try:
            values = [float(token) for token in tokens]
        except ValueError as error:
            raise ValueError(f"{source}:{line_number}: expected numbers, got {line!r}") from error
        timestamps.append(values[0])
        world_T_cam_44s.append(make_pose_44(quaternion_to_matrix_33(np.array(values[4:8])), values[1:4]))
    return np.array(timestamps), np.array(world_T_cam_44s).reshape(-1, 4, 4)


def write_tum_trajectory(path: Path, timestamps: list[float], world_T_cam_44s: list[np.ndarray]) -> Path:
    """Write camera-to-world poses to `path` in TUM format; returns `path`."""
    path = Path(path)
    path.write_text(format_tum_trajectory(timestamps, world_T_cam_44s))
    return path


def read_tum_trajectory(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (N,) and camera-to-world poses (N, 4, 4) from a TUM-format file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: trajectory file not found")
    return parse_tum_trajectory(path.read_text(), str(path))


PLOT_SIZE_PX = 800
PLOT_MARGIN_PX = 60
GT_COLOUR_BGR = (60, 60, 60)
EST_COLOUR_BGR = (200, 90, 20)


def plot_trajectory_png(path: Path, est_n3: np.ndarray, gt_n3: np.ndarray, units: str = "m") -> Path:
    """Draw estimated and ground-truth camera centres seen from above into a PNG.

    "Above" is the direction of least spread of the ground-truth centres (the normal of
    the plane a hand-held camera walks in); the view axes are the two principal
    directions. Both trajectories are drawn in the same (aligned) frame, in `units`.
    The canvas has axes with ticks, a scale bar and a legend. Returns `path`.
    """
    est_n3 = np.asarray(est_n3, dtype=np.float64).reshape(-1, 3)
    gt_n3 = np.asarray(gt_n3, dtype=np.float64).reshape(-1, 3)
    if len(gt_n3) < 2:
        raise ValueError(f"plot_trajectory_png: expected at least 2 ground-truth centres, got {len(gt_n3)}")
    centre_3 = gt_n3.mean(axis=0)
    _, _, Vt_33 = np.linalg.svd(gt_n3 - centre_3, full_matrices=False)
    gt_n2 = (gt_n3 - centre_3) @ Vt_33[:2].T
    est_n2 = (est_n3 - centre_3) @ Vt_33[:2].T
    all_n2 = np.concatenate([gt_n2, est_n2])
    low_2, high_2 = all_n2.min(axis=0), all_n2.max(axis=0)
    extent = max(float(np.max(high_2 - low_2)), 1e-9)
    pixels_per_unit = (PLOT_SIZE_PX - 2 * PLOT_MARGIN_PX) / extent
    mid_2 = (low_2 + high_2) / 2

    def to_px_n2(points_n2: np.ndarray) -> np.ndarray:
        px_n2 = (points_n2 - mid_2) * pixels_per_unit
        px_n2[:, 1] *= -1
        return np.rint(px_n2 + PLOT_SIZE_PX / 2).astype(np.int32)

    canvas_hw3 = np.full((PLOT_SIZE_PX, PLOT_SIZE_PX, 3), 255, dtype=np.uint8)
    _draw_axes(canvas_hw3, low_2, high_2, to_px_n2)
    cv2.polylines(canvas_hw3, [to_px_n2(gt_n2)], False, GT_COLOUR_BGR, 2, cv2.LINE_AA)
    if len(est_n2) >= 2:
        cv2.polylines(canvas_hw3, [to_px_n2(est_n2)], False, EST_COLOUR_BGR, 2, cv2.LINE_AA)
    _draw_scale_bar(canvas_hw3, extent, pixels_per_unit, units)
    _draw_legend(canvas_hw3)
    path = Path(path)
    if not cv2.imwrite(str(path), canvas_hw3):
        raise ValueError(f"{path}: could not write the PNG (does the folder exist?)")
    return path


def _nice_step(span: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about five ticks over `span`."""
    raw = span / 5
    power = 10 ** np.floor(np.log10(raw))
    return float(min((m * power for m in (1, 2, 5, 10) if m * power >= raw), default=10 * power))


def _draw_axes(canvas_hw3: np.ndarray, low_2: np.ndarray, high_2: np.ndarray, to_px_n2) -> None:
    """Light grid lines with tick labels along the two principal axes."""
    step = _nice_step(float(np.max(high_2 - low_2)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for axis in (0, 1):
        for value in np.arange(np.ceil(low_2[axis] / step) * step, high_2[axis] + step / 2, step):
            ends_22 = np.array([[low_2[0], low_2[1]], [high_2[0], high_2[1]]])
            ends_22[:, axis] = value
            (x0, y0), (x1, y1) = to_px_n2(ends_22)
            cv2.line(canvas_hw3, (int(x0), int(y0)), (int(x1), int(y1)), (225, 225, 225), 1)
            label = f"{value:g}"
            anchor = (int(x0) - 10, PLOT_SIZE_PX - PLOT_MARGIN_PX // 2) if axis == 0 else (8, int(y0) + 4)
            cv2.putText(canvas_hw3, label, anchor, font, 0.4, (120, 120, 120), 1, cv2.LINE_AA)


def _draw_scale_bar(canvas_hw3: np.ndarray, extent: float, pixels_per_unit: float, units: str) -> None:
    """A bar of round length in the lower right corner."""
    length = _nice_step(extent)
    bar_px = int(round(length * pixels_per_unit))
    x1, y = PLOT_SIZE_PX - PLOT_MARGIN_PX, PLOT_SIZE_PX - 20
    cv2.line(canvas_hw3, (x1 - bar_px, y), (x1, y), (0, 0, 0), 3)
    cv2.putText(canvas_hw3, f"{length:g} {units}", (x1 - bar_px, y - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)


def _draw_legend(canvas_hw3: np.ndarray) -> None:
    """Colour key in the upper left corner."""
    for row, (label, colour_bgr) in enumerate((("ground truth", GT_COLOUR_BGR), ("estimate", EST_COLOUR_BGR))):
        y = 24 + 22 * row
        cv2.line(canvas_hw3, (PLOT_MARGIN_PX, y), (PLOT_MARGIN_PX + 30, y), colour_bgr, 3)
        cv2.putText(canvas_hw3, label, (PLOT_MARGIN_PX + 40, y + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
