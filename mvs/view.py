"""`python -m mvs.view PATH`: look at a reconstruction in Open3D's viewer, or render it to a PNG.

PATH is an output folder of `mvs.run` (its `mesh.ply`, else `cloud.ply`, with the cameras of
`trajectory.txt` drawn as frustums, using the intrinsics in `report.json`) or a `.ply` file
(a mesh or a point cloud). `--screenshot FILE.png` renders an overview from above without a
screen, on the CPU (a ray caster; see `mvs.render`): no GPU, display or graphics driver needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d

from fusion.export import write_image_png
from mvs.render import View, cull_back_faces, frustum_lines, overview_view, render_image_hw3
from mvs.types import Camera
from slam.trajectory import read_tum_trajectory

MAX_FRUSTUMS = 25
FRUSTUM_DEPTH_SHARE = 0.03  # frustum depth as a share of the scene's diagonal


class DisplayUnavailable(RuntimeError):
    """No screen to open a window on."""


@dataclass
class Scene:
    """What the viewer shows: a surface (world metres) and, when known, the capturing cameras.

    source: the output folder or PLY file the scene was read from.

    world_T_cam_n44: (N, 4, 4) camera-to-world poses of `trajectory.txt`, or None.
    camera: the run's intrinsics (needed for frustums), or None.
    """

    source: Path
    surface: o3d.geometry.TriangleMesh | o3d.geometry.PointCloud
    world_T_cam_n44: np.ndarray | None = None
    camera: Camera | None = None

    @property
    def points_n3(self) -> np.ndarray:
        """Vertices of the mesh or points of the cloud."""
        if isinstance(self.surface, o3d.geometry.TriangleMesh):
            return np.asarray(self.surface.vertices)
        return np.asarray(self.surface.points)


def read_surface(path: Path) -> o3d.geometry.TriangleMesh | o3d.geometry.PointCloud:
    """A mesh (when the PLY has triangles) or a point cloud from `path`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if path.suffix.lower() != ".ply":
        raise ValueError(f"{path}: expected a .ply mesh or point cloud, or an output folder")
    mesh = o3d.io.read_triangle_mesh(str(path))
    if len(mesh.triangles) > 0:
        if not mesh.has_vertex_normals():
            mesh.compute_vertex_normals()
        return mesh
    cloud = o3d.io.read_point_cloud(str(path))
    if not cloud.has_points():
        raise ValueError(f"{path}: neither a mesh with triangles nor a point cloud with points")
    return cloud


def read_run_camera(report_path: Path) -> Camera | None:
    """The colour camera a run recorded in its `report.json`; None when it recorded none."""
    if not report_path.is_file():
        return None
    try:
        record = json.loads(report_path.read_text()).get("camera")
    except json.JSONDecodeError as error:
        raise ValueError(f"{report_path}: not valid JSON ({error})") from error
    if record is None:
        return None
    return Camera(np.array(record["K_33"], dtype=np.float64), int(record["width"]), int(record["height"]))


def load_scene(path: Path) -> Scene:
    """The scene of an output folder (surface, trajectory, camera) or of a single PLY file."""
    path = Path(path)
    if not path.is_dir():
        return Scene(path, read_surface(path))
    for name in ("mesh.ply", "cloud.ply"):
        if (path / name).is_file():
            surface = read_surface(path / name)
            break
    else:
        raise FileNotFoundError(f"{path}: no mesh.ply or cloud.ply here; run `python -m mvs.run --out {path}` first")
    scene = Scene(path, surface, camera=read_run_camera(path / "report.json"))
    if (path / "trajectory.txt").is_file():
        _, scene.world_T_cam_n44 = read_tum_trajectory(path / "trajectory.txt")
    return scene


def scene_frustums(scene: Scene) -> list[o3d.geometry.LineSet]:
    """Up to MAX_FRUSTUMS evenly spaced camera frustums, or none without poses and intrinsics."""
    if scene.world_T_cam_n44 is None or scene.camera is None or len(scene.world_T_cam_n44) == 0:
        return []
    step = -(-len(scene.world_T_cam_n44) // MAX_FRUSTUMS)
    points_n3 = scene.points_n3
    diagonal = float(np.linalg.norm(points_n3.max(axis=0) - points_n3.min(axis=0)))
    return [frustum_lines(scene.camera, scene.world_T_cam_n44[::step], FRUSTUM_DEPTH_SHARE * diagonal)]


def screenshot_view(scene: Scene, width: int, height: int) -> View:
    """The overview `--screenshot` renders: from above, behind the cameras when known,
    framing the surface, the camera centres and the frustums."""
    framed = [np.zeros((0, 3))]
    if scene.world_T_cam_n44 is not None:
        framed.append(scene.world_T_cam_n44[:, :3, 3])
    framed += [np.asarray(frustums.points) for frustums in scene_frustums(scene)]
    return overview_view(scene.points_n3, scene.world_T_cam_n44, width, height, np.concatenate(framed))


def screenshot(scene: Scene, png_path: Path, width: int, height: int) -> Path:
    """Render the overview of `scene` into `png_path` without a screen."""
    view = screenshot_view(scene, width, height)
    surface = scene.surface
    if isinstance(surface, o3d.geometry.TriangleMesh):
        surface = cull_back_faces(surface, view.world_T_cam_44[:3, 3])
    image_hw3 = render_image_hw3([surface, *scene_frustums(scene)], view)
    return write_image_png(png_path, image_hw3)


def show_window(scene: Scene) -> None:
    """Open Open3D's interactive viewer on the scene; raises DisplayUnavailable without a screen."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DisplayUnavailable(
            "no display to open a window on (DISPLAY is not set); "
            f"render without a screen instead: python -m mvs.view {scene.source} --screenshot FILE.png"
        )
    o3d.visualization.draw_geometries([scene.surface, *scene_frustums(scene)], window_name=f"mvs.view {scene.source}")


def parse_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT in pixels."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x960, got {text!r}") from error
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"expected at least 16x16 pixels, got {text!r}")
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvs.view", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="output folder of a run, or a .ply mesh or point cloud")
    parser.add_argument("--screenshot", type=Path, metavar="FILE.png", help="render to a PNG without a screen")
    parser.add_argument("--size", type=parse_size, default=(1280, 960), help="screenshot WIDTHxHEIGHT (default 1280x960)")
    args = parser.parse_args(argv)
    try:
        scene = load_scene(args.path)
        if args.screenshot is None:
            show_window(scene)
            return 0
        written = screenshot(scene, args.screenshot, *args.size)
    except (ValueError, FileNotFoundError, DisplayUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written} ({args.size[0]}x{args.size[1]}, {scene.source})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
