"""Camera poses from other tools: a COLMAP model (text or binary) or nerfstudio's
transforms.json (`--poses import --pose-file PATH`), or COLMAP's structure from motion run
on the frames (`--poses colmap`).

Images are matched to the selected frames by image file name (without folders; see
`export.frame_image_names` for the frames' names), else, when no name matches, by the
frame index that the name's stem spells (`12.jpg`, `000012.png`). Frames left without a
pose are the result's `lost` frames.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from mvs.geometry import invert_pose_44, transform_n3
from mvs.io.colmap_model import ColmapModel, read_model
from mvs.io.export import frame_image_names
from mvs.io.nerfstudio import NerfstudioTransforms, read_transforms
from mvs.types import Camera, Sequence
from slam.colmap_sfm import ColmapSettings, index_from_name, run_colmap
from slam.result import METRES, TRACKING_UNITS, TrackingFailed, TrackingResult

logger = logging.getLogger(__name__)

FOCAL_TOLERANCE = 0.05
"""Relative difference between a pose file's focal length and the sequence camera's above
which a warning says the two cameras differ."""


@dataclass(frozen=True)
class PosedImage:
    """One image of a pose file: its name as the file gives it, camera-to-world pose (the
    file's units) and the rows (M,) of the file's points it observes (none without tracks)."""

    name: str
    world_T_cam_44: np.ndarray
    point_rows_m: np.ndarray


@dataclass(frozen=True)
class PoseFile:
    """Posed images read from `path`, the file's 3D points (N, 3), and the (focal length
    in x, image width) in pixels of each of its cameras."""

    path: Path
    images: list[PosedImage]
    points_n3: np.ndarray
    focal_widths: list[tuple[float, int]]


def pose_file_from_model(model: ColmapModel) -> PoseFile:
    """The images of a COLMAP model in image id order, with the points they observe."""
    row_of = {point_id: row for row, point_id in enumerate(model.point_ids_n.tolist())}
    images = []
    for image in sorted(model.images.values(), key=lambda image: image.image_id):
        rows_m = np.unique([row_of[i] for i in image.point3D_ids_m.tolist() if i in row_of]).astype(np.int64)
        images.append(PosedImage(image.name, invert_pose_44(image.cam_T_world_44), rows_m))
    focal_widths = [(float(camera.params[0]), camera.width) for camera in model.cameras.values()]
    return PoseFile(model.path, images, model.points_n3, focal_widths)


def pose_file_from_transforms(transforms: NerfstudioTransforms) -> PoseFile:
    """The frames of a transforms.json, in file order (no points)."""
    images = [PosedImage(frame.file_path, frame.world_T_cam_44, np.zeros(0, np.int64)) for frame in transforms.frames]
    focal_widths = [] if transforms.fl_x is None or transforms.w is None else [(transforms.fl_x, transforms.w)]
    return PoseFile(transforms.path, images, np.zeros((0, 3)), focal_widths)


def read_pose_file(path: Path) -> PoseFile:
    """Posed images from a COLMAP model folder or a transforms.json at `path`."""
    if path.is_dir():
        return pose_file_from_model(read_model(path))
    if not path.exists():
        raise FileNotFoundError(f"{path}: pose file not found")
    if path.suffix.lower() == ".json":
        return pose_file_from_transforms(read_transforms(path))
    raise ValueError(f"{path}: expected a COLMAP model folder (such as sparse/0) or a nerfstudio transforms.json")


def base_name(name: str) -> str:
    """An image name without its folders (`images/12.jpg` -> `12.jpg`)."""
    return PurePosixPath(name.replace("\\", "/")).name


def index_in_name(name: str) -> int | None:
    """The frame index an image name's stem spells (`000012.png` -> 12), else None."""
    stem = PurePosixPath(base_name(name)).stem
    return int(stem) if stem.isdigit() else None


def match_frames(sequence: Sequence, pose_file: PoseFile) -> tuple[dict[int, int], str]:
    """Position in `pose_file.images` of the image of each selected frame that has one, by
    dataset index, and how they were matched ("image file name" or "frame index")."""
    if not pose_file.images:
        raise ValueError(f"{pose_file.path}: has no posed images")
    frame_names = frame_image_names(sequence)
    index_of_name = {name: index for index, name in frame_names.items()}
    for how, index_of in (("image file name", lambda name: index_of_name.get(base_name(name))), ("frame index", index_in_name)):
        matched: dict[int, int] = {}
        for position, image in enumerate(pose_file.images):
            index = index_of(image.name)
            if index is None or index not in frame_names:
                continue
            if index in matched:
                raise ValueError(
                    f"{pose_file.path}: images '{pose_file.images[matched[index]].name}' and '{image.name}' "
                    f"both match frame {index} by {how}"
                )
            matched[index] = position
        if matched:
            return matched, how
    raise ValueError(
        f"{pose_file.path}: none of its {len(pose_file.images)} images matches a selected frame of {sequence.root} "
        f"by image file name or frame index (its first image is '{pose_file.images[0].name}', the first frame's "
        f"image '{frame_names[sequence.indices[0]]}')"
    )


def warn_if_focal_differs(pose_file: PoseFile, camera: Camera) -> None:
    """Log a warning when a camera of the pose file, scaled to the sequence's image width,
    has a focal length more than FOCAL_TOLERANCE away from the sequence camera's."""
    for fx, width in pose_file.focal_widths:
        scaled_fx = fx * camera.width / width
        if abs(scaled_fx / camera.fx - 1.0) > FOCAL_TOLERANCE:
            logger.warning(
                "%s: its camera's focal length (%.1f px at %d px wide) differs from the sequence camera's "
                "(%.1f px) by %.0f %%; depth is estimated with the sequence camera (--intrinsics sets it)",
                pose_file.path, scaled_fx, camera.width, camera.fx, 100 * abs(scaled_fx / camera.fx - 1.0),
            )


def tracking_result(sequence: Sequence, pose_file: PoseFile, matched: dict[int, int], scale: str) -> TrackingResult:
    """The poses of the `matched` frames (dataset index -> image position) as a tracking
    result labelled `scale`: the file's points are the map, each posed frame that observes
    points is a keyframe, and the other selected frames are lost."""
    world_T_cam_44 = {index: pose_file.images[position].world_T_cam_44 for index, position in matched.items()}
    keyframe_point_ids = {
        index: pose_file.images[position].point_rows_m
        for index, position in matched.items()
        if len(pose_file.images[position].point_rows_m)
    }
    depth_n = np.concatenate([np.zeros(0)] + [
        transform_n3(invert_pose_44(world_T_cam_44[index]), pose_file.points_n3[rows_m])[:, 2]
        for index, rows_m in keyframe_point_ids.items()
    ])
    median_depth = float(np.median(depth_n[depth_n > 0])) if np.any(depth_n > 0) else float("nan")
    lost = [index for index in sequence.indices if index not in matched]
    return TrackingResult(world_T_cam_44, lost, pose_file.points_n3, median_depth, scale, keyframe_point_ids)


def imported_poses(sequence: Sequence, pose_file_path: str, scale: str) -> TrackingResult:
    """`--poses import`: the poses of a COLMAP model folder or transforms.json, taken to be
    in metres; `scale` is the `--scale` that will rescale them, checked against what the
    file holds (`sensor` needs the points its images observe)."""
    if not pose_file_path:
        raise ValueError("--poses import needs --pose-file PATH: a COLMAP model folder (such as sparse/0) or a transforms.json")
    pose_file = read_pose_file(Path(pose_file_path))
    matched, how = match_frames(sequence, pose_file)
    warn_if_focal_differs(pose_file, sequence.camera)
    print(f"poses: {len(matched)} of {len(sequence)} frames from {pose_file.path} (matched by {how})")
    result = tracking_result(sequence, pose_file, matched, METRES)
    if scale == "sensor" and not result.keyframe_point_ids:
        raise ValueError(
            f"{pose_file.path}: --scale sensor compares sensor depth with the depth of the 3D points the images "
            "observe, and no matched image observes any (a COLMAP model from structure from motion has them); "
            "use --scale gt, or --scale none to keep the poses' own units"
        )
    return result


def colmap_sfm_poses(sequence: Sequence, settings: ColmapSettings) -> TrackingResult:
    """`--poses colmap`: COLMAP's structure from motion on the frames (in a temporary
    folder), in COLMAP's arbitrary scale; raises TrackingFailed when it builds no model."""
    print(f"poses: COLMAP structure from motion on {len(sequence)} frames")
    with tempfile.TemporaryDirectory(prefix="mvs-colmap-") as work_dir:
        result = run_colmap(sequence, Path(work_dir), settings)
    if result.model is None:
        empty = TrackingResult({}, list(sequence.indices), np.zeros((0, 3)), float("nan"), TRACKING_UNITS)
        raise TrackingFailed(f"COLMAP built no model from the {len(sequence)} frames", empty)
    pose_file = pose_file_from_model(result.model)
    matched = {index_from_name(image.name): position for position, image in enumerate(pose_file.images)}
    print(f"    COLMAP registered {len(matched)} of {len(sequence)} frames in {result.total_seconds:.0f} s "
          f"({result.models} model(s); the poses are those of the largest)")
    return tracking_result(sequence, pose_file, matched, TRACKING_UNITS)
