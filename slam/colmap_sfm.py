"""COLMAP structure from motion (pycolmap, CPU) over the colour frames of a sequence.

SIFT features, sequential or exhaustive matching and incremental mapping, with one shared
PINHOLE camera fixed to the sequence's intrinsics. The poses are those of the largest
model, in COLMAP's arbitrary world frame and scale. pycolmap is an optional dependency:
`pip install -e '.[colmap]'`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mvs.geometry import invert_pose_44
from mvs.io.colmap_model import PIXEL_CENTRE_OFFSET, ColmapModel, read_model
from mvs.types import Sequence

INSTALL_HINT = (
    "COLMAP structure from motion needs pycolmap, an optional dependency: pip install -e '.[colmap]' "
    "(or pip install pycolmap)"
)


@dataclass
class ColmapSettings:
    """SIFT features per image; `matching`: `sequential` (each frame with the next `overlap`
    frames, for video), `exhaustive` (every pair, for unordered photos) or `auto`
    (exhaustive up to `exhaustive_max_images` images, else sequential); CPU threads (-1: all)."""

    max_num_features: int = 2048
    matching: str = "auto"
    overlap: int = 10
    exhaustive_max_images: int = 100
    num_threads: int = -1


@dataclass
class ColmapResult:
    """The largest reconstructed model (None when COLMAP built none) with the poses of its
    images as world_T_cam_44 by dataset index, images given, models built, wall seconds
    per stage."""

    model: ColmapModel | None
    world_T_cam_44: dict[int, np.ndarray]
    images: int
    models: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def registered(self) -> int:
        return len(self.world_T_cam_44)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def import_pycolmap():
    """The pycolmap module, or an ImportError that says how to install it."""
    try:
        import pycolmap
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return pycolmap


def image_name(index: int) -> str:
    """File name of dataset frame `index` in COLMAP's image folder."""
    return f"{index:06d}.png"


def index_from_name(name: str) -> int:
    """Dataset frame index of an image written by `write_images`."""
    return int(Path(name).stem)


def world_T_cam_from_cam_from_world_44(cam_from_world_34: np.ndarray) -> np.ndarray:
    """COLMAP's `cam_from_world` (3, 4) [R | t] as our camera-to-world 4x4 pose."""
    cam_T_world_44 = np.eye(4)
    cam_T_world_44[:3, :] = cam_from_world_34
    return invert_pose_44(cam_T_world_44)


def write_images(sequence: Sequence, image_dir: Path) -> list[str]:
    """The decoded colour frames of `sequence` as lossless PNGs; returns their names."""
    image_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for frame in sequence:
        name = image_name(frame.index)
        if not cv2.imwrite(str(image_dir / name), cv2.cvtColor(frame.image_hw3, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{image_dir / name}: could not write image")
        names.append(name)
    return names


def run_colmap(sequence: Sequence, work_dir: Path, settings: ColmapSettings) -> ColmapResult:
    """Structure from motion on the frames of `sequence`; `work_dir` is emptied first.

    Image writing is not timed; feature extraction, matching and mapping are. COLMAP's
    log goes to `work_dir/colmap.log.*`, its models to `work_dir/sparse/<k>`.
    """
    pycolmap = import_pycolmap()
    if settings.matching not in ("auto", "sequential", "exhaustive"):
        raise ValueError(f"tracking.colmap.matching: expected auto, sequential or exhaustive, got '{settings.matching}'")
    if work_dir.exists():
        shutil.rmtree(work_dir)
    image_dir, database, model_dir = work_dir / "images", work_dir / "database.db", work_dir / "sparse"
    names = write_images(sequence, image_dir)
    model_dir.mkdir()
    pycolmap.logging.logtostderr = False
    pycolmap.logging.alsologtostderr = False
    pycolmap.logging.set_log_destination(pycolmap.logging.INFO, str(work_dir / "colmap.log."))
    camera = sequence.camera
    fx_fy_cx_cy = (camera.fx, camera.fy, camera.cx + PIXEL_CENTRE_OFFSET, camera.cy + PIXEL_CENTRE_OFFSET)
    reader = pycolmap.ImageReaderOptions(camera_model="PINHOLE", camera_params=",".join(map(str, fx_fy_cx_cy)))
    extraction = pycolmap.FeatureExtractionOptions(num_threads=settings.num_threads)
    extraction.sift.max_num_features = settings.max_num_features
    matching = pycolmap.FeatureMatchingOptions(num_threads=settings.num_threads)
    mapping = pycolmap.IncrementalPipelineOptions(
        num_threads=settings.num_threads, ba_refine_focal_length=False, ba_refine_extra_params=False
    )
    mapping.mapper.abs_pose_refine_focal_length = False
    mapping.mapper.abs_pose_refine_extra_params = False
    exhaustive = settings.matching == "exhaustive" or (
        settings.matching == "auto" and len(names) <= settings.exhaustive_max_images
    )
    seconds = {}
    print(f"    COLMAP: features of {len(names)} images", flush=True)
    start = time.perf_counter()
    pycolmap.extract_features(database, image_dir, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
    seconds["features"] = time.perf_counter() - start
    print(f"    COLMAP: {'exhaustive' if exhaustive else 'sequential'} matching "
          f"({seconds['features']:.0f} s so far)", flush=True)
    start = time.perf_counter()
    if exhaustive:
        pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
    else:
        pairing = pycolmap.SequentialPairingOptions(overlap=settings.overlap, quadratic_overlap=False)
        pycolmap.match_sequential(database, matching_options=matching, pairing_options=pairing,
                                  device=pycolmap.Device.cpu)
    seconds["matching"] = time.perf_counter() - start
    print(f"    COLMAP: incremental mapping ({sum(seconds.values()):.0f} s so far)", flush=True)
    start = time.perf_counter()
    models = pycolmap.incremental_mapping(database, image_dir, model_dir, options=mapping)
    seconds["mapping"] = time.perf_counter() - start
    if not models:
        return ColmapResult(None, {}, len(names), 0, seconds)
    largest = max(models, key=lambda k: models[k].num_reg_images())
    model = read_model(model_dir / str(largest))
    world_T_cam_44 = {
        index_from_name(image.name): world_T_cam_from_cam_from_world_44(image.cam_T_world_44[:3])
        for image in model.images.values()
    }
    return ColmapResult(model, world_T_cam_44, len(names), len(models), seconds)
