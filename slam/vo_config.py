"""Settings of the monocular tracker (front-end, map, relocalisation and back-end)."""

from __future__ import annotations

from dataclasses import dataclass, field

from slam.bundle_problem import BundleConfig
from slam.features import DescriptorConfig
from slam.image_features import ImageFeatureConfig
from slam.klt import KLTConfig
from slam.loop_closure import LoopConfig
from slam.places import PlaceConfig
from slam.relocalise import RelocaliseConfig


@dataclass
class VOConfig:
    """Monocular tracker settings; pixel values refer to the tracking image, which is the
    input downscaled to at most `max_width` pixels wide.

    init_*: two-view initialisation is tried once the median flow from the reference frame
    exceeds `init_min_flow_px`, and succeeds with at least `init_min_points` points and a
    median triangulation angle of `init_min_parallax_deg`; the reference frame is replaced
    when fewer than `init_min_tracks` tracks survive or after `init_max_frames` frames.
    pnp_*: RANSAC threshold, the fewest inliers and the smallest share of the tracked map
    points that are inliers for a frame to count as tracked (below the share, most tracks
    disagree with the pose: the frame is relocalised instead; on the rendered room at 14 cm
    and 9 degrees a frame, frame 237 was posed 34 cm off from 28 of 80).
    triangulation_*: the smallest ray angle and largest reprojection error of a new point.
    keyframe_*: a keyframe is inserted when the camera moved `keyframe_baseline_ratio`
    times the median scene depth from the last keyframe, turned by `keyframe_rotation_deg`,
    tracks fewer than `keyframe_min_tracked` map points, or after `keyframe_max_gap` frames.
    window: keyframes optimised by bundle adjustment, with up to `window_fixed` older ones
    fixed. global_adjustment: at the end, bundle-adjust all keyframes of each segment at
    once (`global_bundle`), after searching every keyframe for the map points of keyframes
    more than `loop_min_gap` keyframes away whose camera is within `loop_max_distance_ratio`
    times its median scene depth, within `loop_radius_px` of their projection
    (which ties revisited places together; keyframe images are kept for it); where frames come with sensor depth, the depths of the
    keyframes' points join it as measurements with a standard deviation of
    `depth_sigma_relative` times the depth, which holds the scale along the trajectory
    (a point's depth is read where the sensor's 3x3 neighbourhood spreads by at most
    `depth_max_spread` of it). reacquire_*: at a keyframe, untracked points of the last
    `reacquire_keyframes` keyframes are searched for within `reacquire_radius_px` of their
    projection. descriptors, image_features, places, relocalise: the descriptors of keyframe
    observations, the whole-image features of keyframes and lost frames, the place
    recognition and the relocaliser that pose a frame KLT could not (wide-baseline
    association, recovery after tracking is lost, merging of pieces); a frame to relocalise
    is described at up to `relocalise_corners` corners. predict_min_px: KLT starts each
    track at its position predicted by the constant-velocity motion model when that moves
    the tracks by this much (median), which keeps large motions within its search. loop:
    each new keyframe looks for a part of its piece more than `loop_min_gap` keyframes
    older and corrects the drift between the two (`slam/loop_closure.py`). lift_depth (RGB-D
    tracking, frames with sensor depth): a piece starts at a single frame, its corners lifted
    to 3D by their depth (metres, no two-view wait), every keyframe lifts its tracks that have
    no point yet, and the windowed adjustment fits the depths too.
    """

    max_width: int = 640
    klt: KLTConfig = field(default_factory=KLTConfig)
    bundle: BundleConfig = field(default_factory=lambda: BundleConfig(iterations=6, rounds=2))
    init_min_tracks: int = 80
    init_min_points: int = 60
    init_min_flow_px: float = 20.0
    init_min_parallax_deg: float = 1.5
    init_ransac_px: float = 1.0
    init_max_frames: int = 60
    pnp_threshold_px: float = 2.0
    pnp_min_inliers: int = 25
    pnp_min_inlier_share: float = 0.5
    triangulation_min_angle_deg: float = 1.0
    triangulation_max_error_px: float = 2.0
    keyframe_baseline_ratio: float = 0.05
    keyframe_rotation_deg: float = 10.0
    keyframe_min_tracked: int = 100
    keyframe_max_gap: int = 20
    window: int = 6
    window_fixed: int = 4
    global_bundle: BundleConfig = field(default_factory=lambda: BundleConfig(iterations=10, rounds=2))
    global_adjustment: bool = True
    loop_min_gap: int = 15
    loop_max_distance_ratio: float = 0.5
    loop_radius_px: float = 40.0
    depth_sigma_relative: float = 0.005
    depth_max_spread: float = 0.03
    reacquire_keyframes: int = 10
    reacquire_radius_px: float = 4.0
    descriptors: DescriptorConfig = field(default_factory=DescriptorConfig)
    image_features: ImageFeatureConfig = field(default_factory=ImageFeatureConfig)
    places: PlaceConfig = field(default_factory=PlaceConfig)
    relocalise: RelocaliseConfig = field(default_factory=RelocaliseConfig)
    relocalise_corners: int = 600
    predict_min_px: float = 2.0
    loop: LoopConfig = field(default_factory=LoopConfig)
    lift_depth: bool = False
