"""COLMAP sparse models: the text format written, the text and binary formats read.

A model folder (e.g. `sparse/0`) holds `cameras`, `images` and `points3D`, as `.txt` or
`.bin`. Image poses are `cam_T_world` (world to camera) as a unit quaternion (qw, qx, qy,
qz) and a translation; cameras look down +z with x right and y down, as ours do. Pixel
coordinates differ by half a pixel: COLMAP puts the centre of the top-left pixel at
(0.5, 0.5), we put it at (0, 0), so a principal point is ours + 0.5 in COLMAP.

The binary reader follows COLMAP's `reconstruction_io` (little-endian): cameras.bin is
uint64 count, then per camera int32 id, int32 model id, uint64 width, uint64 height and the
model's float64 parameters; images.bin is uint64 count, then per image int32 id, float64
qw qx qy qz tx ty tz, int32 camera id, a NUL-terminated name, uint64 number of 2D points
and per point float64 x, y and int64 3D point id (-1: none); points3D.bin is uint64
count, then per point uint64 id, float64 x y z, uint8 r g b, float64 error, uint64 track
length and per track element int32 image id, int32 2D point index.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.export import write_text_atomic
from mvs.geometry import make_pose_44, matrix_to_quaternion_xyzw, quaternion_to_matrix_33
from mvs.types import Camera

PIXEL_CENTRE_OFFSET = 0.5
"""COLMAP pixel coordinate of our pixel coordinate 0 (the centre of the first pixel)."""

CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16), 12: ("SIMPLE_DIVISION", 4), 13: ("DIVISION", 5),
    14: ("SIMPLE_FISHEYE", 3), 15: ("FISHEYE", 4), 16: ("EUCM", 6),
}
"""COLMAP camera model id: (name, number of parameters). Every model's first parameter
is its focal length in x (pixels)."""

REQUIRED_FILES = ("cameras", "images")
"""The files a model folder must hold (as .txt or .bin); points3D is optional."""


@dataclass(frozen=True)
class ColmapCamera:
    """One camera of a model: `params` (P,) as COLMAP's `model` orders them (pixels, in
    COLMAP's pixel convention), for images of `width` x `height` pixels."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray


@dataclass(frozen=True)
class ColmapImage:
    """One posed image: `cam_T_world_44` (world to camera, the model's units) and the
    3D point id each of its 2D points observes, `point3D_ids_m` (M,) int64 (-1: none)."""

    image_id: int
    camera_id: int
    name: str
    cam_T_world_44: np.ndarray
    point3D_ids_m: np.ndarray


@dataclass(frozen=True)
class ColmapModel:
    """A sparse model: cameras and images by id; 3D points `points_n3` (model units) with
    their ids `point_ids_n` (N,) and colours `colours_n3` (N, 3) uint8 RGB; `path` the
    folder it was read from and `binary` whether from .bin files."""

    path: Path
    binary: bool
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    point_ids_n: np.ndarray
    points_n3: np.ndarray
    colours_n3: np.ndarray


def cam_T_world_from_qt_44(q_wxyz: np.ndarray, t_3: np.ndarray) -> np.ndarray:
    """World-to-camera 4x4 transform of a COLMAP quaternion (qw, qx, qy, qz) and translation."""
    return make_pose_44(quaternion_to_matrix_33(np.asarray(q_wxyz, dtype=np.float64)[[1, 2, 3, 0]]), t_3)


def qt_from_cam_T_world(cam_T_world_44: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COLMAP's (qw, qx, qy, qz) with qw >= 0 and translation (3,) of a world-to-camera transform."""
    return matrix_to_quaternion_xyzw(cam_T_world_44[:3, :3])[[3, 0, 1, 2]], cam_T_world_44[:3, 3].copy()


def floats_text(values: np.ndarray | list[float]) -> str:
    """Floats as COLMAP writes them: 17 significant digits, so that they read back exactly."""
    return " ".join(f"{value:.17g}" for value in np.asarray(values, dtype=np.float64).ravel())


def write_text_model(
    folder: Path,
    camera: Camera,
    names: list[str],
    cam_T_world_n44: np.ndarray,
    points_n3: np.ndarray,
    colours_n3: np.ndarray,
) -> list[Path]:
    """Write `cameras.txt`, `images.txt` and `points3D.txt` into `folder` (created).

    One PINHOLE camera (id 1) for every image; image k (id k + 1) is `names[k]` with pose
    `cam_T_world_n44[k]` and no 2D points; `points_n3` (N, 3) with `colours_n3` (N, 3)
    uint8 RGB become points without tracks (error 0). Returns the paths written.
    """
    if len(names) != len(cam_T_world_n44):
        raise ValueError(f"{folder}: {len(names)} image names for {len(cam_T_world_n44)} poses")
    folder.mkdir(parents=True, exist_ok=True)
    params = [camera.fx, camera.fy, camera.cx + PIXEL_CENTRE_OFFSET, camera.cy + PIXEL_CENTRE_OFFSET]
    cameras = (
        "# Camera list with one line of data per camera:\n"
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        "# Number of cameras: 1\n"
        f"1 PINHOLE {camera.width} {camera.height} {floats_text(params)}\n"
    )
    image_lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(names)}, mean observations per image: 0",
    ]
    for k, (name, cam_T_world_44) in enumerate(zip(names, cam_T_world_n44)):
        q_wxyz, t_3 = qt_from_cam_T_world(cam_T_world_44)
        image_lines += [f"{k + 1} {floats_text(q_wxyz)} {floats_text(t_3)} 1 {name}", ""]
    point_lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
        f"# Number of points: {len(points_n3)}, mean track length: 0",
    ]
    rgb_n3 = np.asarray(colours_n3, dtype=np.uint8).tolist()
    point_lines += [
        f"{k + 1} {x:.6f} {y:.6f} {z:.6f} {r} {g} {b} 0"
        for k, ((x, y, z), (r, g, b)) in enumerate(zip(np.asarray(points_n3).tolist(), rgb_n3))
    ]
    return [
        write_text_atomic(folder / "cameras.txt", cameras),
        write_text_atomic(folder / "images.txt", "\n".join(image_lines) + "\n"),
        write_text_atomic(folder / "points3D.txt", "\n".join(point_lines) + "\n"),
    ]


def read_model(folder: Path) -> ColmapModel:
    """The COLMAP model in `folder`, from its .bin files when cameras.bin and images.bin
    are there, else from its .txt files; a missing points3D file reads as no points."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder; expected a COLMAP model folder such as sparse/0")
    for suffix, read in ((".bin", _read_binary), (".txt", _read_text)):
        if _holds_model(folder, suffix):
            return read(folder)
    inside = sorted(
        str(sub) for sub in folder.iterdir() if sub.is_dir() and (_holds_model(sub, ".bin") or _holds_model(sub, ".txt"))
    )
    raise FileNotFoundError(
        f"{folder}: no COLMAP model here; expected cameras.txt and images.txt (or cameras.bin and images.bin)"
        + (f"; the models inside it are {', '.join(inside)}" if inside else "")
    )


def _holds_model(folder: Path, suffix: str) -> bool:
    """True when `folder` has the cameras and images files of a model with `suffix`."""
    return all((folder / f"{name}{suffix}").is_file() for name in REQUIRED_FILES)


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line of `path`, comments dropped, blank lines kept."""
    return [
        (number, line.strip())
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if not line.lstrip().startswith("#")
    ]


def _parse(path: Path, number: int, tokens: list[str], what: str, kinds: str) -> list:
    """`tokens` converted by `kinds` ("i" int, "f" float, "s" kept), with an error naming
    the file, the line and `what` was expected."""
    try:
        if len(tokens) < len(kinds):
            raise ValueError("too few fields")
        return [int(t) if k == "i" else float(t) if k == "f" else t for t, k in zip(tokens, kinds)]
    except ValueError as error:
        raise ValueError(f"{path}: line {number}: expected {what}, got '{' '.join(tokens)}' ({error})") from error


def _read_text(folder: Path) -> ColmapModel:
    cameras = {}
    path = folder / "cameras.txt"
    for number, line in _data_lines(path):
        if line:
            tokens = line.split()
            camera_id, model, width, height = _parse(path, number, tokens, "CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]", "isii")
            params = _parse(path, number, tokens[4:], "numeric PARAMS[]", "f" * len(tokens[4:]))
            cameras[camera_id] = ColmapCamera(camera_id, model, width, height, np.array(params))
    images = {}
    path = folder / "images.txt"
    lines = _data_lines(path)
    position = 0
    while position < len(lines):
        number, line = lines[position]
        position += 1
        if not line:
            continue
        tokens = line.split()
        what = "IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"
        image_id, *qt, camera_id, _ = _parse(path, number, tokens, what, "ifffffffis")
        points_number, points_text = lines[position] if position < len(lines) else (number + 1, "")
        position += 1
        id_tokens = points_text.split()[2::3]
        point3D_ids_m = np.array(
            _parse(path, points_number, id_tokens, "POINTS2D[] as (X, Y, POINT3D_ID)", "i" * len(id_tokens)), dtype=np.int64
        )
        images[image_id] = ColmapImage(
            image_id, camera_id, " ".join(tokens[9:]), cam_T_world_from_qt_44(qt[:4], qt[4:]), point3D_ids_m
        )
    path = folder / "points3D.txt"
    rows = []
    if path.is_file():
        for number, line in _data_lines(path):
            if line:
                rows.append(_parse(path, number, line.split(), "POINT3D_ID X Y Z R G B ERROR TRACK[]", "ifffiii"))
    rows_n7 = np.array(rows, dtype=np.float64).reshape(-1, 7)
    return ColmapModel(
        folder, False, cameras, images,
        rows_n7[:, 0].astype(np.int64), rows_n7[:, 1:4], rows_n7[:, 4:7].astype(np.uint8),
    )


class _BinaryReader:
    """Sequential little-endian reads from one binary model file, with errors naming it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.offset = 0

    def unpack(self, layout: str) -> tuple:
        size = struct.calcsize("<" + layout)
        if self.offset + size > len(self.data):
            raise ValueError(f"{self.path}: file ends at byte {len(self.data)}, inside a record; the model is truncated")
        values = struct.unpack_from("<" + layout, self.data, self.offset)
        self.offset += size
        return values

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if self.offset + size > len(self.data):
            raise ValueError(f"{self.path}: file ends at byte {len(self.data)}, inside a record; the model is truncated")
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += size
        return values

    def name(self) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            raise ValueError(f"{self.path}: an image name is not NUL-terminated; the model is truncated")
        name = self.data[self.offset:end].decode("utf-8")
        self.offset = end + 1
        return name


def _read_binary(folder: Path) -> ColmapModel:
    cameras = {}
    reader = _BinaryReader(folder / "cameras.bin")
    for _ in range(reader.unpack("Q")[0]):
        camera_id, model_id, width, height = reader.unpack("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise ValueError(f"{reader.path}: camera {camera_id} has unknown camera model id {model_id}")
        model, count = CAMERA_MODELS[model_id]
        cameras[camera_id] = ColmapCamera(camera_id, model, width, height, reader.array(np.float64, count).copy())
    images = {}
    reader = _BinaryReader(folder / "images.bin")
    for _ in range(reader.unpack("Q")[0]):
        image_id, *qt, camera_id = reader.unpack("idddddddi")
        name = reader.name()
        points_m3 = reader.array(np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")]), reader.unpack("Q")[0])
        images[image_id] = ColmapImage(
            image_id, camera_id, name, cam_T_world_from_qt_44(qt[:4], qt[4:]), points_m3["id"].astype(np.int64)
        )
    point_ids, points, colours = [], [], []
    if (folder / "points3D.bin").is_file():
        reader = _BinaryReader(folder / "points3D.bin")
        for _ in range(reader.unpack("Q")[0]):
            point_id, x, y, z, r, g, b, _error, track_length = reader.unpack("QdddBBBdQ")
            reader.array(np.int32, 2 * track_length)
            point_ids.append(point_id)
            points.append((x, y, z))
            colours.append((r, g, b))
    return ColmapModel(
        folder, True, cameras, images, np.array(point_ids, dtype=np.int64),
        np.array(points, dtype=np.float64).reshape(-1, 3), np.array(colours, dtype=np.uint8).reshape(-1, 3),
    )
