"""Multi-view geometric consistency of estimated depth maps, checked before fusion.

A pixel of a reference depth map is confirmed by a neighbouring depth map when its 3D
point, moved into the neighbour's camera, lands on a pixel whose depth agrees with the
point's z there to within a share of that depth. Estimated depth that no neighbour
confirms is mostly a matching failure (textureless walls, occlusion edges, reflections)
and would carve or thicken the fused surface, so it is not fused. Poses are
`world_T_cam_44` (camera-to-world, metres); depths are z in metres, 0 where empty.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Iterable, Iterator, TypeVar

import numpy as np

from mvs.geometry import backproject_depth_hw3, invert_pose_44, project_n2, transform_n3
from mvs.types import Camera


@dataclass
class ConsistencyConfig:
    """Which estimated depth is fused.

    neighbours: each depth map is checked against this many estimated depth maps nearest
        to it in the sequence, half before and half after (0 turns the check off).
    max_relative_error: a neighbour confirms a pixel where |z - d| <= this share of d, with
        z the point's depth in the neighbour and d the neighbour's depth at its pixel.
    min_confirmations: pixels confirmed by fewer neighbours are not fused (a depth map with
        fewer neighbours than this, as in a sequence of few keyframes, needs all of them).
    """

    neighbours: int = 4
    max_relative_error: float = 0.05
    min_confirmations: int = 1


def confirmations_hw(
    depth_hw: np.ndarray,
    world_T_cam_44: np.ndarray,
    neighbours: list[tuple[np.ndarray, np.ndarray]],
    camera: Camera,
    max_relative_error: float,
) -> np.ndarray:
    """(H, W) int32 number of `neighbours` (depth_hw, world_T_cam_44) that confirm each pixel
    of `depth_hw`, all depth maps at `camera`'s resolution; empty pixels get 0."""
    valid_hw = depth_hw > 0
    points_n3 = backproject_depth_hw3(depth_hw, camera.K_33)[valid_hw]
    count_n = np.zeros(len(points_n3), dtype=np.int32)
    for neighbour_depth_hw, world_T_neighbour_44 in neighbours:
        neighbour_T_cam_44 = invert_pose_44(world_T_neighbour_44) @ world_T_cam_44
        uv_n2, z_n = project_n2(transform_n3(neighbour_T_cam_44, points_n3), camera.K_33)
        u_n, v_n = np.rint(uv_n2[:, 0]), np.rint(uv_n2[:, 1])  # behind the camera: inf, outside
        inside_n = (u_n >= 0) & (u_n < camera.width) & (v_n >= 0) & (v_n < camera.height)
        seen_n = np.zeros(len(points_n3), dtype=np.float64)
        seen_n[inside_n] = neighbour_depth_hw[v_n[inside_n].astype(np.int64), u_n[inside_n].astype(np.int64)]
        count_n += (seen_n > 0) & (np.abs(z_n - seen_n) <= max_relative_error * seen_n)
    count_hw = np.zeros(depth_hw.shape, dtype=np.int32)
    count_hw[valid_hw] = count_n
    return count_hw


T = TypeVar("T")


@dataclass
class EstimatedDepth(Generic[T]):
    """An estimated depth map in flight: `depth_hw` (metres, 0 = empty) seen from
    `world_T_cam_44`, with `item`, whatever the caller fuses it as."""

    depth_hw: np.ndarray
    world_T_cam_44: np.ndarray
    item: T


def filter_consistent(
    estimates: Iterable[EstimatedDepth[T]], camera: Camera, config: ConsistencyConfig
) -> Iterator[tuple[EstimatedDepth[T], np.ndarray]]:
    """Each estimate with its depth kept only where at least `config.min_confirmations` of
    its nearest estimates in sequence order confirm it: (estimate, filtered depth_hw).

    Streams: an estimate comes out once the `neighbours // 2` after it have arrived, so at
    most `neighbours + 1` depth maps are held; when `estimates` raises (a failure, Ctrl-C),
    the held ones come out before the error does. With `neighbours` 0 the depth passes as it is.
    """
    if config.neighbours < 0 or config.min_confirmations < 0 or config.max_relative_error <= 0:
        raise ValueError(
            "depth consistency: expected neighbours >= 0, min_confirmations >= 0 and "
            f"max_relative_error > 0, got {config.neighbours}, {config.min_confirmations}, "
            f"{config.max_relative_error}"
        )
    if config.neighbours == 0:
        for estimate in estimates:
            yield estimate, estimate.depth_hw
        return
    after = config.neighbours // 2
    before = config.neighbours - after
    window: deque[EstimatedDepth[T]] = deque(maxlen=before + 1 + after)
    pending = 0  # estimates in `window` not yet emitted, the newest ones

    def emit(position: int) -> tuple[EstimatedDepth[T], np.ndarray]:
        estimate = window[position]
        others = [(e.depth_hw, e.world_T_cam_44) for i, e in enumerate(window) if i != position]
        count_hw = confirmations_hw(
            estimate.depth_hw, estimate.world_T_cam_44, others, camera, config.max_relative_error
        )
        needed = min(config.min_confirmations, len(others))
        return estimate, np.where(count_hw >= needed, estimate.depth_hw, 0.0).astype(np.float32)

    def held() -> Iterator[tuple[EstimatedDepth[T], np.ndarray]]:
        for position in range(len(window) - pending, len(window)):
            yield emit(position)

    try:
        for estimate in estimates:
            window.append(estimate)
            pending = min(pending + 1, len(window))
            if pending > after:
                yield emit(len(window) - 1 - after)
                pending -= 1
    except (Exception, KeyboardInterrupt):
        # The estimates made before a failure or an interrupt still come out, then it goes on.
        yield from held()
        raise
    yield from held()
