"""RGB-D odometry (`--poses rgbd`): Open3D's multi-scale hybrid (depth + colour) odometry.

Each frame is registered to the current keyframe, starting from its predecessor's pose
relative to that keyframe; a new keyframe is taken when the camera has moved or turned
far enough from the last one. Registering to a keyframe rather than to the previous
frame keeps the error from piling up frame by frame. When the keyframe registration
fails, the frame is registered to its predecessor instead; when that fails too, the frame
is lost and the next frame starts a new keyframe at the last known pose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d
from tqdm import tqdm

from mvs.geometry import is_valid_pose_44
from mvs.types import Camera, Sequence
from slam.result import METRES, TrackingFailed, TrackingResult
from slam.trajectory import rotation_angle_deg

METHODS = {"hybrid": "Hybrid", "point_to_plane": "PointToPlane", "intensity": "Intensity"}


@dataclass
class RGBDConfig:
    """RGB-D odometry settings.

    max_width: frames wider than this are downscaled (pixels); depth_max: depth beyond
    this is ignored (metres); iterations: Gauss-Newton iterations per pyramid level, from
    coarse to fine (each level halves the size); method: "hybrid", "point_to_plane" or
    "intensity"; depth_outlier_trunc, depth_huber_delta (metres) and intensity_huber_delta
    (intensity in [0, 1]): the robust loss; min_fitness: the smallest share of pixels that
    must find a correspondence for a registration to count; keyframe_translation_m and
    keyframe_rotation_deg: motion from the keyframe that triggers a new one.
    """

    max_width: int = 160
    depth_max: float = 4.0
    iterations: tuple[int, ...] = (20, 10, 5)
    method: str = "hybrid"
    depth_outlier_trunc: float = 0.07
    depth_huber_delta: float = 0.05
    intensity_huber_delta: float = 0.1
    min_fitness: float = 0.3
    keyframe_translation_m: float = 0.1
    keyframe_rotation_deg: float = 10.0


class RGBDOdometry:
    """Feed frames in order with `process`; read metric poses with `result`."""

    def __init__(self, camera: Camera, config: RGBDConfig | None = None):
        self.config = config or RGBDConfig()
        if self.config.method not in METHODS:
            raise ValueError(f"RGBDConfig.method: expected one of {sorted(METHODS)}, got {self.config.method!r}")
        width = min(camera.width, self.config.max_width)
        height = int(round(camera.height * width / camera.width))
        self.size_wh = (width, height)
        self.K_33 = camera.scaled(width, height).K_33
        self.intrinsics = o3d.core.Tensor(self.K_33, dtype=o3d.core.Dtype.Float64)
        self.criteria = [
            o3d.t.pipelines.odometry.OdometryConvergenceCriteria(count) for count in self.config.iterations
        ]
        self.params = o3d.t.pipelines.odometry.OdometryLossParams(
            self.config.depth_outlier_trunc, self.config.depth_huber_delta, self.config.intensity_huber_delta
        )
        self.method = getattr(o3d.t.pipelines.odometry.Method, METHODS[self.config.method])
        self.world_T_cam_44: dict[int, np.ndarray] = {}
        self.lost: list[int] = []
        self.keyframe: o3d.t.geometry.RGBDImage | None = None
        self.world_T_keyframe_44 = np.eye(4)
        self.previous: o3d.t.geometry.RGBDImage | None = None
        self.keyframe_T_previous_44 = np.eye(4)
        self.keyframe_depths: list[np.ndarray] = []

    def _rgbd(self, image_hw3: np.ndarray, depth_hw: np.ndarray) -> o3d.t.geometry.RGBDImage:
        if image_hw3.shape[1] != self.size_wh[0]:
            image_hw3 = cv2.resize(image_hw3, self.size_wh, interpolation=cv2.INTER_AREA)
            depth_hw = cv2.resize(depth_hw, self.size_wh, interpolation=cv2.INTER_NEAREST)
        return o3d.t.geometry.RGBDImage(
            o3d.t.geometry.Image(np.ascontiguousarray(image_hw3)),
            o3d.t.geometry.Image(np.ascontiguousarray(depth_hw, dtype=np.float32)),
        )

    def _register(
        self, source: o3d.t.geometry.RGBDImage, target: o3d.t.geometry.RGBDImage, target_T_source_44: np.ndarray
    ) -> np.ndarray | None:
        """target_T_source refined from an initial guess, or None when the registration fails."""
        result = o3d.t.pipelines.odometry.rgbd_odometry_multi_scale(
            source,
            target,
            self.intrinsics,
            o3d.core.Tensor(target_T_source_44, dtype=o3d.core.Dtype.Float64),
            1.0,
            self.config.depth_max,
            self.criteria,
            self.method,
            self.params,
        )
        target_T_source_44 = result.transformation.numpy()
        if result.fitness < self.config.min_fitness or not is_valid_pose_44(target_T_source_44):
            return None
        return target_T_source_44

    def process(self, frame_index: int, image_hw3: np.ndarray, depth_hw: np.ndarray) -> None:
        """Register one frame: uint8 RGB (H, W, 3) and depth (H, W) in metres, 0 invalid."""
        rgbd = self._rgbd(image_hw3, depth_hw)
        if self.keyframe is None:
            self._new_keyframe(frame_index, rgbd, self.world_T_keyframe_44, depth_hw)
            return
        keyframe_T_cam_44 = self._register(rgbd, self.keyframe, self.keyframe_T_previous_44)
        if keyframe_T_cam_44 is None:
            previous_T_cam_44 = self._register(rgbd, self.previous, np.eye(4))
            if previous_T_cam_44 is None:
                self.lost.append(frame_index)
                self.keyframe = None
                self.world_T_keyframe_44 = self.world_T_keyframe_44 @ self.keyframe_T_previous_44
                return
            keyframe_T_cam_44 = self.keyframe_T_previous_44 @ previous_T_cam_44
        world_T_cam_44 = self.world_T_keyframe_44 @ keyframe_T_cam_44
        self.world_T_cam_44[frame_index] = world_T_cam_44
        moved = np.linalg.norm(keyframe_T_cam_44[:3, 3]) > self.config.keyframe_translation_m
        turned = rotation_angle_deg(keyframe_T_cam_44[:3, :3]) > self.config.keyframe_rotation_deg
        if moved or turned:
            self._new_keyframe(frame_index, rgbd, world_T_cam_44, depth_hw)
        else:
            self.previous = rgbd
            self.keyframe_T_previous_44 = keyframe_T_cam_44

    def _new_keyframe(
        self, frame_index: int, rgbd: o3d.t.geometry.RGBDImage, world_T_cam_44: np.ndarray, depth_hw: np.ndarray
    ) -> None:
        self.keyframe = self.previous = rgbd
        self.world_T_keyframe_44 = world_T_cam_44
        self.keyframe_T_previous_44 = np.eye(4)
        self.world_T_cam_44[frame_index] = world_T_cam_44
        valid_hw = (depth_hw > 0) & (depth_hw <= self.config.depth_max)
        self.keyframe_depths.append(depth_hw[valid_hw][::97])

    def result(self) -> TrackingResult:
        """Metric poses of the registered frames; the map is empty (dense depth is the sensor's)."""
        depth_n = np.concatenate(self.keyframe_depths) if self.keyframe_depths else np.zeros(0)
        return TrackingResult(
            world_T_cam_44=dict(self.world_T_cam_44),
            lost=sorted(self.lost),
            map_points_n3=np.zeros((0, 3)),
            median_depth=float(np.median(depth_n)) if len(depth_n) else 0.0,
            scale=METRES,
        )


def track_rgbd_sequence(sequence: Sequence, config: RGBDConfig | None = None, progress: bool = True) -> TrackingResult:
    """RGB-D odometry over every frame of `sequence`; poses in metres.

    Frames without depth are lost. Raises TrackingFailed (carrying the partial result)
    when the sequence has no depth at all.
    """
    odometry = RGBDOdometry(sequence.camera, config)
    seconds = 0.0
    for frame in tqdm(sequence, total=len(sequence), desc="rgbd odometry", unit="frame", disable=not progress):
        if frame.depth_hw is None:
            odometry.lost.append(frame.index)
            continue
        start = time.perf_counter()
        odometry.process(frame.index, frame.image_hw3, frame.depth_hw)
        seconds += time.perf_counter() - start
    result = odometry.result()
    result.tracking_seconds = seconds
    if not result.world_T_cam_44:
        raise TrackingFailed(f"{sequence.root}: RGB-D odometry needs depth maps and no frame had one", result)
    return result
