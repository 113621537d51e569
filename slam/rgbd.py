"""RGB-D odometry (`--poses rgbd`): Open3D's multi-scale odometry, frame to keyframe or
frame to model.

Frame to keyframe (`reference: keyframe`): each frame is registered to the current
keyframe, starting from its predecessor's pose relative to that keyframe; a new keyframe
is taken when the camera has moved or turned far enough from the last one. Registering to
a keyframe rather than to the previous frame keeps the error from piling up frame by
frame. When the keyframe registration fails, the frame is registered to its predecessor
instead; when that fails too, the frame is lost and the next frame starts a new keyframe
at the last known pose.

Frame to model (`reference: model`, KinectFusion-style): every tracked frame's depth is
fused into a TSDF volume (Open3D's `t.pipelines.slam.Model`), and each new frame is
registered to the model's depth ray-cast at the pose predicted from the last motion.
Surfaces seen many frames ago keep anchoring the pose, so the drift grows far more slowly
than from keyframe to keyframe. A frame whose registration fails is lost, not fused, and
the next frame is predicted from the last tracked one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d
from tqdm import tqdm

from mvs.geometry import invert_pose_44, is_valid_pose_44
from mvs.types import Camera, Sequence
from slam.result import METRES, TrackingFailed, TrackingResult
from slam.trajectory import rotation_angle_deg

METHODS = {"hybrid": "Hybrid", "point_to_plane": "PointToPlane", "intensity": "Intensity"}
REFERENCES = ("keyframe", "model")
TRACKERS = ("map", "odometry")


@dataclass
class RGBDConfig:
    """RGB-D tracking settings. tracker: "map" (the default: the keyframe map of
    `slam/frontend.py` with its points lifted by the sensor's depth and the depths in its
    adjustments, so relocalisation, merging and loop closure keep one map across fast
    motion, cuts and revisits; `tracking.vo` sets it) or "odometry" (this module's dense
    odometry, which the rest of these settings tune: no map to return to, so a failed
    registration loses the frame and drift is never corrected).

    max_width: frames wider than this are downscaled (pixels); depth_max: depth beyond
    this is ignored (metres); iterations: Gauss-Newton iterations per pyramid level, from
    coarse to fine (each level halves the size); method: "hybrid", "point_to_plane" or
    "intensity"; depth_outlier_trunc, depth_huber_delta (metres) and intensity_huber_delta
    (intensity in [0, 1]): the robust loss; min_fitness: the smallest share of pixels that
    must find a correspondence for a registration to count; keyframe_translation_m and
    keyframe_rotation_deg: motion from the keyframe that triggers a new one.
    """

    tracker: str = "map"
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
    reference: str = "keyframe"
    model_voxel_size: float = 0.02
    model_trunc_voxels: float = 4.0
    model_block_count: int = 40000
    model_prediction: float = 0.5


def _check_config(config: RGBDConfig) -> None:
    """Raise ValueError naming the first setting of `config` that cannot be used."""
    if config.tracker not in TRACKERS:
        raise ValueError(f"RGBDConfig.tracker: expected one of {list(TRACKERS)}, got {config.tracker!r}")
    if config.method not in METHODS:
        raise ValueError(f"RGBDConfig.method: expected one of {sorted(METHODS)}, got {config.method!r}")
    if config.reference not in REFERENCES:
        raise ValueError(f"RGBDConfig.reference: expected one of {list(REFERENCES)}, got {config.reference!r}")
    if config.model_voxel_size <= 0 or config.model_trunc_voxels <= 0 or config.model_block_count < 1:
        raise ValueError(
            "RGBDConfig: model_voxel_size, model_trunc_voxels and model_block_count must be positive, got "
            f"{config.model_voxel_size}, {config.model_trunc_voxels}, {config.model_block_count}"
        )


def _tracking_size_wh(camera: Camera, max_width: int) -> tuple[int, int]:
    """The tracking image size: the camera's, downscaled to at most `max_width` pixels wide."""
    width = min(camera.width, max_width)
    return width, int(round(camera.height * width / camera.width))


def _resized(image_hw3: np.ndarray, depth_hw: np.ndarray, size_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Colour (area) and depth (nearest) resized to `size_wh` when they differ from it."""
    if image_hw3.shape[1] != size_wh[0]:
        image_hw3 = cv2.resize(image_hw3, size_wh, interpolation=cv2.INTER_AREA)
        depth_hw = cv2.resize(depth_hw, size_wh, interpolation=cv2.INTER_NEAREST)
    return image_hw3, depth_hw


def _has_depth(depth_hw: np.ndarray, depth_max: float) -> bool:
    """Whether a depth map (metres) has valid depth within `depth_max` on a 4-pixel grid
    (where Open3D allocates the model's voxel blocks)."""
    grid_hw = depth_hw[::4, ::4]
    return bool(np.any((grid_hw > 0) & (grid_hw <= depth_max)))


def _sampled_depths_n(depth_hw: np.ndarray, depth_max: float) -> np.ndarray:
    """Every 97th valid depth (metres) of a map: a cheap sample for the median scene depth."""
    valid_hw = (depth_hw > 0) & (depth_hw <= depth_max)
    return depth_hw[valid_hw][::97]


class RGBDOdometry:
    """Feed frames in order with `process`; read metric poses with `result`."""

    def __init__(self, camera: Camera, config: RGBDConfig | None = None):
        self.config = config or RGBDConfig()
        _check_config(self.config)
        self.size_wh = _tracking_size_wh(camera, self.config.max_width)
        self.K_33 = camera.scaled(*self.size_wh).K_33
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
        image_hw3, depth_hw = _resized(image_hw3, depth_hw, self.size_wh)
        return o3d.t.geometry.RGBDImage(
            o3d.t.geometry.Image(np.ascontiguousarray(image_hw3)),
            o3d.t.geometry.Image(np.ascontiguousarray(depth_hw, dtype=np.float32)),
        )

    def _register(
        self, source: o3d.t.geometry.RGBDImage, target: o3d.t.geometry.RGBDImage, target_T_source_44: np.ndarray
    ) -> np.ndarray | None:
        """target_T_source refined from an initial guess, or None when the registration fails."""
        try:
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
        except RuntimeError:
            # Open3D raises when the normal equations are singular (no correspondences).
            return None
        target_T_source_44 = result.transformation.numpy().copy()
        if result.fitness < self.config.min_fitness or not is_valid_pose_44(target_T_source_44):
            return None
        return target_T_source_44

    def process(self, frame_index: int, image_hw3: np.ndarray, depth_hw: np.ndarray) -> None:
        """Register one frame: uint8 RGB (H, W, 3) and depth (H, W) in metres, 0 invalid."""
        if not _has_depth(depth_hw, self.config.depth_max):
            self.lost.append(frame_index)
            return
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
        self.keyframe_depths.append(_sampled_depths_n(depth_hw, self.config.depth_max))

    def result(self) -> TrackingResult:
        """Metric poses of the registered frames; the map is empty (dense depth is the sensor's)."""
        return _metric_result(self.world_T_cam_44, self.lost, self.keyframe_depths)


class RGBDModelOdometry:
    """Frame-to-model RGB-D odometry: feed frames in order with `process`; read metric poses
    with `result`. The world frame is the first tracked frame's camera."""

    DEPTH_SCALE = 1000.0
    """Depth reaches Open3D as uint16 millimetres."""

    def __init__(self, camera: Camera, config: RGBDConfig | None = None):
        self.config = config or RGBDConfig()
        _check_config(self.config)
        self.size_wh = _tracking_size_wh(camera, self.config.max_width)
        K_33 = o3d.core.Tensor(camera.scaled(*self.size_wh).K_33, dtype=o3d.core.Dtype.Float64)
        device = o3d.core.Device("CPU:0")
        self.model = o3d.t.pipelines.slam.Model(
            self.config.model_voxel_size, 8, self.config.model_block_count, o3d.core.Tensor(np.eye(4)), device
        )
        width, height = self.size_wh
        self.input = o3d.t.pipelines.slam.Frame(height, width, K_33, device)
        self.raycast = o3d.t.pipelines.slam.Frame(height, width, K_33, device)
        self.criteria = [
            o3d.t.pipelines.odometry.OdometryConvergenceCriteria(count) for count in self.config.iterations
        ]
        self.method = getattr(o3d.t.pipelines.odometry.Method, METHODS[self.config.method])
        self.world_T_cam_44: dict[int, np.ndarray] = {}
        self.lost: list[int] = []
        self.depth_samples: list[np.ndarray] = []
        self.world_T_last_44: np.ndarray | None = None
        self.world_T_raycast_44 = np.eye(4)
        self.velocity_44 = np.eye(4)
        self.model_poses_set = 1
        self.frames_fused = 0

    def process(self, frame_index: int, image_hw3: np.ndarray, depth_hw: np.ndarray) -> None:
        """Register one frame: uint8 RGB (H, W, 3) and depth (H, W) in metres, 0 invalid."""
        config = self.config
        image_hw3, depth_hw = _resized(image_hw3, depth_hw, self.size_wh)
        if not _has_depth(depth_hw, config.depth_max):
            self.lost.append(frame_index)
            return
        depth_mm_hw = np.rint(depth_hw * self.DEPTH_SCALE).astype(np.uint16)
        self.input.set_data_from_image("depth", o3d.t.geometry.Image(np.ascontiguousarray(depth_mm_hw)))
        self.input.set_data_from_image("color", o3d.t.geometry.Image(np.ascontiguousarray(image_hw3)))
        if self.world_T_last_44 is None:
            world_T_cam_44 = np.eye(4)
        else:
            raycast_T_cam_44 = self._register()
            if raycast_T_cam_44 is None:
                self.lost.append(frame_index)
                return
            world_T_cam_44 = self.world_T_raycast_44 @ raycast_T_cam_44
            self.velocity_44 = invert_pose_44(self.world_T_last_44) @ world_T_cam_44
        self.world_T_cam_44[frame_index] = world_T_cam_44
        self.world_T_last_44 = world_T_cam_44
        self.depth_samples.append(_sampled_depths_n(depth_hw, config.depth_max))
        self._set_model_pose(world_T_cam_44)
        self.model.integrate(self.input, self.DEPTH_SCALE, config.depth_max, config.model_trunc_voxels)
        self.world_T_raycast_44 = world_T_cam_44 @ _fraction_of_motion_44(self.velocity_44, self.config.model_prediction)
        self._set_model_pose(self.world_T_raycast_44)
        self.frames_fused += 1
        # Ray-cast surfaces through voxels seen by more than min(frames fused - 1, 3) frames,
        # the threshold Open3D's own frame-to-model pipeline uses.
        self.model.synthesize_model_frame(
            self.raycast, self.DEPTH_SCALE, 0.1, config.depth_max, config.model_trunc_voxels,
            config.method != "point_to_plane", float(min(self.frames_fused - 1, 3)),
        )

    def _set_model_pose(self, world_T_cam_44: np.ndarray) -> None:
        """The camera pose the model integrates and ray-casts at. Open3D numbers the poses it
        is given and warns unless each number is one more than the last."""
        self.model.update_frame_pose(self.model_poses_set, o3d.core.Tensor(world_T_cam_44))
        self.model_poses_set += 1

    def _register(self) -> np.ndarray | None:
        """The input frame's pose relative to the ray-cast model frame, or None on failure."""
        try:
            result = self.model.track_frame_to_model(
                self.input, self.raycast, self.DEPTH_SCALE, self.config.depth_max, self.config.depth_outlier_trunc,
                self.method, self.criteria,
            )
        except RuntimeError:
            # Open3D raises when the normal equations are singular (no correspondences).
            return None
        raycast_T_cam_44 = result.transformation.numpy().copy()
        if result.fitness < self.config.min_fitness or not is_valid_pose_44(raycast_T_cam_44):
            return None
        return raycast_T_cam_44

    def result(self) -> TrackingResult:
        """Metric poses of the registered frames; the map is empty (dense depth is the sensor's)."""
        return _metric_result(self.world_T_cam_44, self.lost, self.depth_samples)


def _fraction_of_motion_44(a_T_b_44: np.ndarray, fraction: float) -> np.ndarray:
    """The rigid motion `fraction` of the way from identity to `a_T_b_44` (rotation about the
    same axis by `fraction` of the angle, `fraction` of the translation)."""
    rotvec_31 = cv2.Rodrigues(a_T_b_44[:3, :3])[0]
    result_44 = np.eye(4)
    result_44[:3, :3] = cv2.Rodrigues(fraction * rotvec_31)[0]
    result_44[:3, 3] = fraction * a_T_b_44[:3, 3]
    return result_44


def _metric_result(world_T_cam_44: dict[int, np.ndarray], lost: list[int], depth_samples: list[np.ndarray]) -> TrackingResult:
    depth_n = np.concatenate(depth_samples) if depth_samples else np.zeros(0)
    return TrackingResult(
        world_T_cam_44=dict(world_T_cam_44),
        lost=sorted(lost),
        map_points_n3=np.zeros((0, 3)),
        median_depth=float(np.median(depth_n)) if len(depth_n) else 0.0,
        scale=METRES,
    )


def track_rgbd_sequence(sequence: Sequence, config: RGBDConfig | None = None, progress: bool = True) -> TrackingResult:
    """RGB-D odometry over every frame of `sequence`; poses in metres.

    Frames without depth are lost. Raises TrackingFailed (carrying the partial result)
    when the sequence has no depth at all.
    """
    config = config or RGBDConfig()
    odometry_class = RGBDModelOdometry if config.reference == "model" else RGBDOdometry
    odometry = odometry_class(sequence.camera, config)
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
