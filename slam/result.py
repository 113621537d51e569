"""What a tracker returns: camera poses by frame index, the lost frames, the sparse map."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

TRACKING_UNITS = "tracking units"
METRES = "metres"


@dataclass
class TrackedPiece:
    """Frames tracked without a break: dataset indices `first` to `last` in playback order,
    `frames` of them posed, and how the piece joined the main map: "main" (it started it),
    "relocalised" (posed against the map after tracking was lost), "merged" (a map of its own,
    merged when it saw a place of the main one), or "not joined" (its frames are not posed)."""

    first: int
    last: int
    frames: int
    joined: str


@dataclass
class TrackingResult:
    """Camera poses and sparse map of one tracked sequence.

    world_T_cam_44: camera-to-world (4, 4) pose of every posed frame, keyed by dataset
    frame index; lost: dataset indices of the frames that could not be posed; map_points_n3:
    (N, 3) world points of the sparse map; median_depth: median depth of the map points
    seen from the keyframes; scale: "metres" or "tracking units" (monocular, arbitrary
    scale); keyframe_point_ids: for each keyframe's dataset index, the rows (M,) of
    map_points_n3 it observes; tracking_seconds: compute time spent tracking (frame
    loading excluded); unjoined: frames posed in a piece that never joined the main map
    (not in world_T_cam_44); pieces: the runs of tracked frames and how each joined.
    """

    world_T_cam_44: dict[int, np.ndarray]
    lost: list[int]
    map_points_n3: np.ndarray
    median_depth: float
    scale: str
    keyframe_point_ids: dict[int, np.ndarray] = field(default_factory=dict)
    tracking_seconds: float = 0.0
    unjoined: list[int] = field(default_factory=list)
    pieces: list[TrackedPiece] = field(default_factory=list)

    @property
    def length_unit(self) -> str:
        """"m" where the poses are in metres, else "tracking units"."""
        return "m" if self.scale == METRES else "tracking units"

    def scaled(self, factor: float, scale: str) -> TrackingResult:
        """The same result with translations, map points and depths multiplied by `factor`,
        labelled with the unit `scale`."""
        if not (np.isfinite(factor) and factor > 0):
            raise ValueError(f"TrackingResult.scaled: expected a positive finite factor, got {factor}")
        world_T_cam_44 = {}
        for index, pose_44 in self.world_T_cam_44.items():
            scaled_44 = pose_44.copy()
            scaled_44[:3, 3] *= factor
            world_T_cam_44[index] = scaled_44
        return replace(
            self,
            world_T_cam_44=world_T_cam_44,
            map_points_n3=self.map_points_n3 * factor,
            median_depth=self.median_depth * factor,
            scale=scale,
        )


class TrackingFailed(RuntimeError):
    """Tracking could not (re)initialise; `partial` holds the poses found before failing."""

    def __init__(self, message: str, partial: TrackingResult):
        super().__init__(message)
        self.partial = partial
