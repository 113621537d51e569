"""From the monocular tracker's map to its result: the main map, its poses and points, and
the runs of frames tracked without a break with how each joined the main map.

The main map is the piece that posed the most frames. A frame is posed relative to a
keyframe (its anchor), so it lands in the piece of that keyframe, in that piece's frame and
scale as they are now (merges and loop closures moved them since).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mvs.geometry import invert_pose_44, transform_n3
from slam.map import SparseMap
from slam.result import TRACKING_UNITS, TrackedPiece, TrackingResult


@dataclass
class Run:
    """Frames tracked without a break, from `first_frame`, which started them by `how`
    ("initialised" or "relocalised") in `piece` (the piece's id at that time)."""

    first_frame: int
    how: str
    piece: int


@dataclass
class TrackingHistory:
    """What the tracker saw besides its map: `anchors` maps each posed frame's dataset index
    to (keyframe position, kf_T_cam (4, 4)); `lost` the frames that could not be posed;
    `frame_order` every frame in playback order; `runs` the runs of tracked frames;
    `merged_into` the piece each merged piece moved into."""

    anchors: dict[int, tuple[int, np.ndarray]]
    lost: list[int]
    frame_order: list[int]
    runs: list[Run]
    merged_into: dict[int, int]


def pieces_of_frames(world: SparseMap, history: TrackingHistory) -> tuple[dict[int, int], int]:
    """The piece of every posed frame (by dataset index), and the main map: the piece that
    posed the most frames (-1 when none was posed)."""
    piece_of_frame = {index: world.keyframes[position].piece for index, (position, _) in history.anchors.items()}
    main = int(np.argmax(np.bincount(list(piece_of_frame.values())))) if piece_of_frame else -1
    return piece_of_frame, main


def main_map_result(world: SparseMap, history: TrackingHistory) -> TrackingResult:
    """Poses of the frames posed in the main map (the piece that posed the most frames), its
    sparse map (tracking units), and every run of tracked frames."""
    piece_of_frame, main = pieces_of_frames(world, history)
    world_T_cam_44 = {}
    for frame_index, (position, kf_T_cam_44) in history.anchors.items():
        if piece_of_frame[frame_index] == main:
            world_T_cam_44[frame_index] = invert_pose_44(world.keyframes[position].cam_T_world_44) @ kf_T_cam_44
    main_positions = [k for k, kf in enumerate(world.keyframes) if kf.piece == main]
    ok_ids_n = world.observed_point_ids_n(main_positions)
    row_of_id_n = np.full(len(world.points.ok_n), -1, dtype=np.int64)
    row_of_id_n[ok_ids_n] = np.arange(len(ok_ids_n))
    keyframe_point_ids = {}
    depths = [np.zeros(0)]
    for position in main_positions:
        kf = world.keyframes[position]
        ids_n = world.point_ids_n(kf)
        keyframe_point_ids[kf.frame_index] = row_of_id_n[ids_n]
        depths.append(transform_n3(kf.cam_T_world_44, world.points.xyz_n3[ids_n])[:, 2])
    depth_n = np.concatenate(depths)
    return TrackingResult(
        world_T_cam_44=dict(sorted(world_T_cam_44.items())),
        lost=sorted(set(history.lost) - set(history.anchors)),
        map_points_n3=world.points.xyz_n3[ok_ids_n].copy(),
        median_depth=float(np.median(depth_n[depth_n > 0])) if np.any(depth_n > 0) else 0.0,
        scale=TRACKING_UNITS,
        keyframe_point_ids=keyframe_point_ids,
        unjoined=sorted(set(history.anchors) - set(world_T_cam_44)),
        pieces=tracked_pieces(history, piece_of_frame, main),
    )


def tracked_pieces(history: TrackingHistory, piece_of_frame: dict[int, int], main: int) -> list[TrackedPiece]:
    """The runs of frames tracked without a break, in playback order, and how each joined the
    main map: it started it ("main"), was relocalised in it ("relocalised"), started a piece
    later merged with it ("merged"), or "not joined"."""
    starts = {run.first_frame: run for run in history.runs}
    pieces: list[TrackedPiece] = []
    current = None  # the piece of the last posed frame of the current run
    for index in history.frame_order:
        piece = piece_of_frame.get(index)
        # A run also splits where its frames change piece: a keyframe relocalised into the
        # main map after the last frame (`MapJoiner.rejoin`) leaves its run's others behind.
        if index in starts or (piece is not None and current is not None and piece != current):
            run = starts.get(index)
            if piece != main:
                joined = "not joined"
            elif run is None or run.how == "relocalised":
                joined = "relocalised"
            else:
                joined = "merged" if run.piece in history.merged_into else "main"
            pieces.append(TrackedPiece(index, index, 0, joined))
            current = None
        if pieces and piece is not None:
            pieces[-1].last = index
            pieces[-1].frames += 1
            current = piece
    return pieces
