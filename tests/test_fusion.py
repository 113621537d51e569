"""Fusion package: TSDF integration, metrics, view culling, export and reference meshes.

Synthetic ground truth: a 1.0 x 0.8 x 0.6 m box (z up) rendered to exact z-depth maps.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from fusion.export import write_json_atomic, write_ply, write_text_atomic
from fusion.metrics import (
    MeshMetrics,
    cull_to_views,
    mesh_metrics,
    render_depth_hw,
    sample_surface_n3,
    subdivide_to_edge_length,
)
from fusion.reference import fuse_reference_mesh, reference_mesh
from fusion.tsdf import TSDFVolume
from mvs.config import FusionConfig, RunConfig
from mvs.config import fusion_config as run_fusion_config
from mvs.geometry import invert_pose_44, look_at_world_T_cam_44
from mvs.types import Camera, Frame, Sequence

VOXEL = 0.015
BOX_SIZE_3 = np.array([1.0, 0.8, 0.6])
BOX_COLOR_3 = np.array([200, 120, 40], dtype=np.uint8)
UP_3 = np.array([0.0, 0.0, 1.0])
CAMERA = Camera(np.array([[120.0, 0.0, 79.5], [0.0, 120.0, 59.5], [0.0, 0.0, 1.0]]), 160, 120)


def box_mesh() -> o3d.geometry.TriangleMesh:
    """The box centred on the origin, 12 triangles."""
    mesh = o3d.geometry.TriangleMesh.create_box(*BOX_SIZE_3)
    mesh.translate(-BOX_SIZE_3 / 2)
    return mesh


def seen_box_mesh() -> o3d.geometry.TriangleMesh:
    """The faces the ring cameras see: all cameras are above the box, so all but the bottom."""
    mesh = box_mesh()
    mesh.remove_triangles_by_mask(faces_of(mesh)[1][:, 2] < -0.99)
    return mesh


def scene_of(mesh: o3d.geometry.TriangleMesh) -> o3d.t.geometry.RaycastingScene:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    return scene


def ring_world_T_cam_44_list(count: int = 12, radius: float = 2.0, height: float = 1.2) -> list[np.ndarray]:
    """Cameras on a circle around the box, above it, looking at its centre."""
    angles = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
    return [
        look_at_world_T_cam_44(np.array([radius * np.cos(a), radius * np.sin(a), height]), np.zeros(3), UP_3)
        for a in angles
    ]


def box_frame(index: int, world_T_cam_44: np.ndarray, scene: o3d.t.geometry.RaycastingScene) -> Frame:
    depth_hw = render_depth_hw(scene, CAMERA, world_T_cam_44)
    image_hw3 = np.broadcast_to(BOX_COLOR_3, (CAMERA.height, CAMERA.width, 3)).copy()
    return Frame(index, float(index), image_hw3, depth_hw, world_T_cam_44)


def box_sequence(root: Path, has_mesh: bool = False, has_depth: bool = True) -> Sequence:
    scene = scene_of(box_mesh())
    world_T_cam_44_list = ring_world_T_cam_44_list()
    return Sequence(
        name="box",
        root=root,
        layout="synthetic",
        camera=CAMERA,
        indices=list(range(len(world_T_cam_44_list))),
        load_frame=lambda index: box_frame(index, world_T_cam_44_list[index], scene),
        has_depth=has_depth,
        has_poses=True,
        has_mesh=has_mesh,
    )


def fusion_config(voxel_size: float = VOXEL, block_count: int = 4000) -> FusionConfig:
    return FusionConfig(voxel_size=voxel_size, sdf_trunc_voxels=3.0, depth_max=5.0, block_count=block_count)


def fused_box(config: FusionConfig) -> TSDFVolume:
    scene = scene_of(box_mesh())
    volume = TSDFVolume(config)
    for index, world_T_cam_44 in enumerate(ring_world_T_cam_44_list()):
        frame = box_frame(index, world_T_cam_44, scene)
        volume.integrate(frame.depth_hw, frame.image_hw3, CAMERA, invert_pose_44(world_T_cam_44))
    return volume


def faces_of(mesh: o3d.geometry.TriangleMesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids (T, 3), unit normals (T, 3) and areas (T,) of the triangles."""
    corners_t33 = np.asarray(mesh.vertices)[np.asarray(mesh.triangles)]
    cross_t3 = np.cross(corners_t33[:, 1] - corners_t33[:, 0], corners_t33[:, 2] - corners_t33[:, 0])
    norm_t = np.linalg.norm(cross_t3, axis=1)
    return corners_t33.mean(axis=1), cross_t3 / norm_t[:, None], 0.5 * norm_t


def square_mesh(side: float, z: float) -> o3d.geometry.TriangleMesh:
    """A horizontal square of `side` metres centred on the z axis at height `z`, 2 triangles."""
    h = side / 2
    vertices_v3 = np.array([[-h, -h, z], [h, -h, z], [h, h, z], [-h, h, z]])
    return o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(vertices_v3), o3d.utility.Vector3iVector(np.array([[0, 1, 2], [0, 2, 3]]))
    )


@pytest.fixture(scope="module")
def box_volume() -> TSDFVolume:
    return fused_box(fusion_config())


# Rendering


def test_render_depth_is_z_depth_of_a_fronto_parallel_plane():
    world_T_cam_44 = look_at_world_T_cam_44(np.array([0.0, 0.0, 2.5]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
    depth_hw = render_depth_hw(scene_of(square_mesh(20.0, 0.0)), CAMERA, world_T_cam_44)
    np.testing.assert_allclose(depth_hw, 2.5, atol=1e-5)


# TSDF


def test_tsdf_box_vertices_lie_within_one_voxel_of_the_surface(box_volume):
    mesh = box_volume.mesh()
    vertices_v3 = np.asarray(mesh.vertices, dtype=np.float32)
    assert len(vertices_v3) > 1000
    distance_v = scene_of(box_mesh()).compute_distance(o3d.core.Tensor(vertices_v3)).numpy()
    # Marching cubes puts a vertex on a voxel edge that crosses the surface: at most one
    # voxel away (1 mm of float32 slack); flat faces are unbiased to well under a voxel.
    assert distance_v.max() < VOXEL + 1e-3
    assert np.median(distance_v) < 0.1 * VOXEL
    # The top face (z = 0.3 m) is seen obliquely: a half-pixel error in the projection
    # would move it by ~8 mm here.
    top_v = np.all(np.abs(vertices_v3[:, :2]) < [0.4, 0.3], axis=1) & (vertices_v3[:, 2] > 0.2)
    assert abs(vertices_v3[top_v, 2].mean() - 0.3) < 1e-3
    assert box_volume.frames_integrated == 12
    assert mesh.has_vertex_normals()
    assert np.abs(np.asarray(mesh.vertex_colors) - BOX_COLOR_3 / 255.0).max() < 1e-3


def test_tsdf_box_covers_the_seen_faces(box_volume):
    metrics = mesh_metrics(box_volume.mesh(), seen_box_mesh(), threshold=VOXEL, num_points=50_000)
    assert metrics.recall > 0.98
    assert metrics.precision > 0.99


def test_tsdf_point_cloud_lies_on_the_surface(box_volume):
    cloud = box_volume.point_cloud()
    points_n3 = np.asarray(cloud.points, dtype=np.float32)
    assert len(points_n3) > 1000
    distance_n = scene_of(box_mesh()).compute_distance(o3d.core.Tensor(points_n3)).numpy()
    # Points need weight on two voxels only (mesh vertices on all eight cube corners), so
    # a few near the box's edges lie further out.
    assert np.mean(distance_n < VOXEL) > 0.999
    assert distance_n.max() < 1.5 * VOXEL
    assert np.abs(np.asarray(cloud.colors) - BOX_COLOR_3 / 255.0).max() < 1e-3


def test_tsdf_block_map_grows_past_its_initial_capacity(box_volume):
    small = fused_box(fusion_config(block_count=16))
    assert small.block_count == box_volume.block_count > 16
    assert len(small.mesh().vertices) == len(box_volume.mesh().vertices)


def test_sweep_truncation_wider_than_the_depth_spread_fuses_the_mean_depth():
    # Five maps of a wall 2 m away, each off by a whole-map bias (plane-sweep errors are
    # correlated over a map): +8 %, then -2 % four times, so the mean depth is 2 m. Where every
    # map's signed distance stays inside the truncation band the TSDF average is linear in
    # them and its zero crossing is their mean; 4 voxels (8 cm) clip the +16 cm map instead.
    camera_z_m, biases_k = 2.0, [0.08, -0.02, -0.02, -0.02, -0.02]
    cam_T_world_44 = np.eye(4)
    image_hw3 = np.full((CAMERA.height, CAMERA.width, 3), 128, dtype=np.uint8)

    def fused_wall_depth_m(sdf_trunc_voxels: float) -> float:
        config = FusionConfig(voxel_size=0.02, sdf_trunc_voxels=sdf_trunc_voxels, depth_max=5.0, block_count=4000)
        volume = TSDFVolume(config)
        for bias in biases_k:
            depth_hw = np.full((CAMERA.height, CAMERA.width), camera_z_m * (1 + bias), dtype=np.float32)
            volume.integrate(depth_hw, image_hw3, CAMERA, cam_T_world_44)
        points_n3 = np.asarray(volume.point_cloud().points)
        central_n = np.hypot(points_n3[:, 0], points_n3[:, 1]) < 0.3
        return float(np.median(points_n3[central_n, 2]))

    sweep_trunc = FusionConfig().sweep_sdf_trunc_voxels
    assert abs(fused_wall_depth_m(sweep_trunc) - camera_z_m) < 0.01
    assert abs(fused_wall_depth_m(4.0) - camera_z_m) > 0.015


def test_plane_sweep_runs_fuse_with_the_sweep_truncation():
    config = RunConfig()
    for source, expected in [("sensor", config.fusion.sdf_trunc_voxels), ("learned", config.fusion.sweep_sdf_trunc_voxels),
                             ("classic", config.fusion.sweep_sdf_trunc_voxels)]:
        chosen = run_fusion_config(replace(config, depth=replace(config.depth, source=source)))
        assert chosen.sdf_trunc_voxels == expected
        assert replace(chosen, sdf_trunc_voxels=config.fusion.sdf_trunc_voxels) == config.fusion


def test_tsdf_empty_volume_and_bad_input():
    volume = TSDFVolume(fusion_config())
    assert len(volume.mesh().vertices) == 0
    assert len(volume.point_cloud().points) == 0
    world_T_cam_44 = ring_world_T_cam_44_list()[0]
    frame = box_frame(0, world_T_cam_44, scene_of(box_mesh()))
    volume.integrate(np.zeros_like(frame.depth_hw), frame.image_hw3, CAMERA, invert_pose_44(world_T_cam_44))
    volume.integrate(frame.depth_hw + 5.0, frame.image_hw3, CAMERA, invert_pose_44(world_T_cam_44))
    off_grid_hw = np.zeros_like(frame.depth_hw)
    off_grid_hw[1::4, 1::4] = 2.0  # Open3D allocates blocks from pixels (4i, 4j) only
    volume.integrate(off_grid_hw, frame.image_hw3, CAMERA, invert_pose_44(world_T_cam_44))
    assert volume.frames_integrated == 0 and volume.block_count == 0
    with pytest.raises(ValueError, match="camera's resolution"):
        volume.integrate(np.ones((10, 10), np.float32), np.zeros((10, 10, 3), np.uint8), CAMERA, np.eye(4))
    with pytest.raises(ValueError, match="device"):
        TSDFVolume(fusion_config(), device="tpu")
    with pytest.raises(ValueError, match="positive"):
        TSDFVolume(fusion_config(voxel_size=0.0))


# Metrics


def test_sample_surface_is_uniform_by_area_and_deterministic():
    # Two triangles of areas 0.5 and 4.5 m^2: 10% of the points fall on the first.
    vertices_v3 = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [10, 0, 0], [13, 0, 0], [10, 3, 0]], float)
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(vertices_v3), o3d.utility.Vector3iVector(np.array([[0, 1, 2], [3, 4, 5]]))
    )
    points_n3 = sample_surface_n3(mesh, 100_000, seed=3)
    np.testing.assert_array_equal(points_n3, sample_surface_n3(mesh, 100_000, seed=3))
    first_n = points_n3[:, 0] < 5
    assert abs(first_n.mean() - 0.1) < 0.005  # binomial std 0.001
    assert np.all(points_n3[first_n, 0] + points_n3[first_n, 1] <= 1 + 1e-12)
    np.testing.assert_array_equal(points_n3[:, 2], 0.0)
    assert sample_surface_n3(o3d.geometry.TriangleMesh(), 10, seed=0).shape == (0, 3)


def test_metrics_of_a_mesh_against_itself():
    metrics = mesh_metrics(box_mesh(), box_mesh())
    assert metrics.fscore == 1.0
    # Two independent 200k samples of 4.6 m^2 lie ~5 mm apart: nearest neighbours ~2 mm.
    assert metrics.accuracy < 0.003 and metrics.completeness < 0.003


def test_metrics_of_a_plane_shifted_along_its_normal():
    shifted = mesh_metrics(square_mesh(2.0, 0.03), square_mesh(2.0, 0.0), threshold=0.05)
    # Point-sample spacing adds sqrt(0.03^2 + ~0.002^2) - 0.03 < 0.1 mm to the 3 cm offset.
    assert shifted.accuracy == pytest.approx(0.03, abs=5e-4)
    assert shifted.completeness == pytest.approx(0.03, abs=5e-4)
    assert shifted.fscore == 1.0 and shifted.threshold == 0.05
    tight = mesh_metrics(square_mesh(2.0, 0.03), square_mesh(2.0, 0.0), threshold=0.01)
    assert tight.precision == tight.recall == tight.fscore == 0.0


def test_metrics_of_an_empty_prediction():
    metrics = mesh_metrics(o3d.geometry.TriangleMesh(), box_mesh())
    assert metrics == MeshMetrics(math.inf, math.inf, 0.0, 0.0, 0.0, 0.05)
    with pytest.raises(ValueError, match="reference"):
        mesh_metrics(box_mesh(), o3d.geometry.TriangleMesh())


# Culling


def test_subdivision_bounds_edges_and_keeps_area_and_colours():
    mesh = square_mesh(2.0, 0.0)
    colors_43 = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    mesh.vertex_colors = o3d.utility.Vector3dVector(colors_43)
    fine = subdivide_to_edge_length(mesh, 0.05)
    corners_t33 = np.asarray(fine.vertices)[np.asarray(fine.triangles)]
    assert np.linalg.norm(corners_t33 - np.roll(corners_t33, 1, axis=1), axis=2).max() <= 0.05
    assert faces_of(fine)[2].sum() == pytest.approx(4.0, rel=1e-9)
    # Colours interpolate linearly: red = (x + 1) / 2, green = (y + 1) / 2 on this square.
    vertices_v3, colors_v3 = np.asarray(fine.vertices), np.asarray(fine.vertex_colors)
    np.testing.assert_allclose(colors_v3[:, :2], (vertices_v3[:, :2] + 1) / 2, atol=1e-12)


def test_culling_drops_the_floor_under_a_box():
    box = o3d.geometry.TriangleMesh.create_box(1.0, 1.0, 0.5)
    box.translate(np.array([-0.5, -0.5, 0.0]))
    camera = Camera(np.array([[80.0, 0.0, 79.5], [0.0, 80.0, 59.5], [0.0, 0.0, 1.0]]), 160, 120)
    side_views = [
        look_at_world_T_cam_44(np.array([2.5 * np.cos(a), 2.5 * np.sin(a), 3.0]), np.zeros(3), UP_3)
        for a in np.linspace(0.0, 2 * np.pi, 4, endpoint=False)
    ]
    top_view = look_at_world_T_cam_44(np.array([0.0, 0.0, 3.0]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
    culled = cull_to_views(square_mesh(4.0, 0.0) + box, camera, [*side_views, top_view])

    centroids_t3, normals_t3, area_t = faces_of(culled)
    horizontal_t = np.abs(normals_t3[:, 2]) > 0.99
    ground_t = horizontal_t & (centroids_t3[:, 2] < 0.01)
    inside_t = ground_t & np.all(np.abs(centroids_t3[:, :2]) < 0.5, axis=1)
    top_t = horizontal_t & (centroids_t3[:, 2] > 0.49)
    assert area_t[ground_t & ~inside_t].sum() == pytest.approx(15.0, abs=0.01)
    assert area_t[top_t].sum() == pytest.approx(1.0, abs=0.01)
    assert area_t[~horizontal_t].sum() == pytest.approx(4 * 0.5, abs=0.05)
    # Under the box only a rim survives, where the floor and the box bottom lie within the
    # 5 cm occlusion tolerance of the box's sides seen at 50 degrees: under 3 cm wide.
    rim_t = 0.5 - np.abs(centroids_t3[inside_t, :2]).max(axis=1)
    assert rim_t.max() < 0.03


def test_culling_respects_depth_max_and_the_image():
    world_T_cam_44 = look_at_world_T_cam_44(np.array([0.0, 0.0, 3.0]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
    assert len(cull_to_views(square_mesh(1.0, 0.0), CAMERA, [world_T_cam_44], depth_max=2.0).triangles) == 0
    with pytest.raises(ValueError, match="camera pose"):
        cull_to_views(square_mesh(1.0, 0.0), CAMERA, [])
    # The camera sees +-2 m x +-1.5 m of a 10 m floor at 3 m: 12 m^2.
    culled = cull_to_views(square_mesh(10.0, 0.0), CAMERA, [world_T_cam_44], max_edge_length=0.1)
    assert faces_of(culled)[2].sum() == pytest.approx(12.0, rel=0.03)


# Export


def test_write_ply_is_atomic_and_round_trips(tmp_path):
    mesh = subdivide_to_edge_length(box_mesh(), 0.2)
    path = write_ply(tmp_path / "mesh.ply", mesh)
    assert path == tmp_path / "mesh.ply"
    assert len(o3d.io.read_triangle_mesh(str(path)).vertices) == len(mesh.vertices)
    cloud = o3d.geometry.PointCloud(mesh.vertices)
    write_ply(tmp_path / "cloud.ply", cloud)
    assert len(o3d.io.read_point_cloud(str(tmp_path / "cloud.ply")).points) == len(mesh.vertices)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud.ply", "mesh.ply"]


def test_write_ply_errors_name_the_path(tmp_path):
    missing = tmp_path / "no_such_folder" / "mesh.ply"
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        write_ply(missing, box_mesh())
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError, match="file/mesh.ply"):
        write_ply(tmp_path / "file" / "mesh.ply", box_mesh())
    (tmp_path / "file").unlink()
    with pytest.raises(ValueError, match="mesh.obj"):
        write_ply(tmp_path / "mesh.obj", box_mesh())
    with pytest.raises(ValueError, match="empty"):
        write_ply(tmp_path / "mesh.ply", o3d.geometry.TriangleMesh())
    assert list(tmp_path.iterdir()) == []


def test_write_text_and_json_atomic(tmp_path):
    metrics = MeshMetrics(0.01, 0.02, 0.9, 0.8, 0.85, 0.05)
    write_json_atomic(tmp_path / "report.json", {"mesh": metrics, "t_3": np.array([1.0, 2.0, 3.0])})
    loaded = json.loads((tmp_path / "report.json").read_text())
    assert loaded["t_3"] == [1.0, 2.0, 3.0]
    assert MeshMetrics(**loaded["mesh"]) == metrics
    write_text_atomic(tmp_path / "notes.txt", "first")
    write_text_atomic(tmp_path / "notes.txt", "second")
    assert (tmp_path / "notes.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "report.json"]


# Reference


def test_fused_reference_of_a_box_sequence(tmp_path, box_volume):
    mesh = fuse_reference_mesh(box_sequence(tmp_path), fusion_config(), progress=False)
    # The same frames fused the same way: the same vertices (extraction order varies).
    np.testing.assert_array_equal(
        np.unique(np.asarray(mesh.vertices), axis=0),
        np.unique(np.asarray(box_volume.mesh().vertices), axis=0),
    )
    strided = fuse_reference_mesh(box_sequence(tmp_path), fusion_config(), stride=3, progress=False)
    distance_v = scene_of(box_mesh()).compute_distance(
        o3d.core.Tensor(np.asarray(strided.vertices, dtype=np.float32))
    ).numpy()
    # Four views 90 degrees apart: fewer observations, the same one-voxel bound.
    assert len(distance_v) > 1000 and distance_v.max() < VOXEL + 1e-3
    with pytest.raises(ValueError, match=str(tmp_path)):
        fuse_reference_mesh(box_sequence(tmp_path, has_depth=False), fusion_config(), progress=False)


def test_reference_mesh_culls_the_ground_truth_mesh(tmp_path):
    write_ply(tmp_path / "mesh.ply", box_mesh())
    culled = reference_mesh(box_sequence(tmp_path, has_mesh=True), fusion_config(), stride=2, progress=False)
    # Six cameras above the box see its top and four sides (2.96 m^2), of its bottom only a
    # rim within the occlusion tolerance of the sides.
    centroids_t3, normals_t3, area_t = faces_of(culled)
    bottom_t = normals_t3[:, 2] < -0.99
    assert area_t[~bottom_t].sum() == pytest.approx(3.76 - 0.8, abs=0.01)
    rim_t = (BOX_SIZE_3[:2] / 2 - np.abs(centroids_t3[bottom_t, :2])).min(axis=1)
    assert rim_t.max() < 0.03


def test_reference_mesh_takes_poses_without_loading_images(tmp_path):
    write_ply(tmp_path / "mesh.ply", box_mesh())
    world_T_cam_44_list = ring_world_T_cam_44_list()
    sequence = replace(
        box_sequence(tmp_path, has_mesh=True),
        load_frame=lambda index: pytest.fail(f"frame {index} was loaded"),
        gt_world_T_cam_44=dict(enumerate(world_T_cam_44_list)),
    )
    culled = reference_mesh(sequence, fusion_config(), stride=2, progress=False)
    assert faces_of(culled)[2].sum() > 2.96


def test_reference_mesh_fuses_sensor_depth_without_a_mesh(tmp_path):
    culled = reference_mesh(box_sequence(tmp_path), fusion_config(), progress=False)
    metrics = mesh_metrics(culled, seen_box_mesh(), threshold=VOXEL, num_points=50_000)
    assert metrics.precision > 0.99 and metrics.recall > 0.98
