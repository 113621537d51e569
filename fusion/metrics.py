"""Reconstruction metrics between a predicted and a reference mesh, and view culling.

All distances are in metres, in the common world frame of both meshes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import open3d as o3d
import trimesh
from scipy.spatial import cKDTree

from mvs.geometry import invert_pose_44, pixel_grid_hw2, project_n2, transform_n3
from mvs.types import Camera


@dataclass
class MeshMetrics:
    """Point-to-surface agreement of a prediction with a reference.

    accuracy: mean distance (metres) from predicted surface points to the reference.
    completeness: mean distance (metres) from reference surface points to the prediction.
    precision, recall: share of predicted / reference points within `threshold` metres.
    fscore: harmonic mean of precision and recall.
    """

    accuracy: float
    completeness: float
    precision: float
    recall: float
    fscore: float
    threshold: float


def sample_surface_n3(mesh: o3d.geometry.TriangleMesh, num_points: int, seed: int) -> np.ndarray:
    """(num_points, 3) points drawn uniformly by area on the mesh's triangles.

    Deterministic for a given `seed`; (0, 3) when the mesh has no triangle of positive area.
    """
    vertices_v3 = np.asarray(mesh.vertices, dtype=np.float64)
    triangles_t3 = np.asarray(mesh.triangles, dtype=np.int64)
    if len(triangles_t3) == 0:
        return np.zeros((0, 3))
    corners_t33 = vertices_v3[triangles_t3]
    edge1_t3 = corners_t33[:, 1] - corners_t33[:, 0]
    edge2_t3 = corners_t33[:, 2] - corners_t33[:, 0]
    area_t = 0.5 * np.linalg.norm(np.cross(edge1_t3, edge2_t3), axis=1)
    total_area = area_t.sum()
    if not total_area > 0:
        return np.zeros((0, 3))
    rng = np.random.default_rng(seed)
    chosen_n = rng.choice(len(area_t), size=num_points, p=area_t / total_area)
    r1_n, r2_n = rng.random(num_points), rng.random(num_points)
    flip_n = r1_n + r2_n > 1.0
    r1_n[flip_n], r2_n[flip_n] = 1.0 - r1_n[flip_n], 1.0 - r2_n[flip_n]
    return (
        corners_t33[chosen_n, 0]
        + r1_n[:, None] * edge1_t3[chosen_n]
        + r2_n[:, None] * edge2_t3[chosen_n]
    )


def mesh_metrics(
    pred_mesh: o3d.geometry.TriangleMesh,
    ref_mesh: o3d.geometry.TriangleMesh,
    threshold: float = 0.05,
    num_points: int = 200_000,
    seed: int = 0,
) -> MeshMetrics:
    """Accuracy, completeness, precision, recall and F-score at `threshold` metres.

    `num_points` points are sampled by area on each mesh. An empty prediction scores
    accuracy = completeness = inf and precision = recall = F = 0.
    """
    if threshold <= 0 or num_points < 1:
        raise ValueError(
            f"mesh_metrics: expected threshold > 0 and num_points >= 1, got {threshold}, {num_points}"
        )
    ref_n3 = sample_surface_n3(ref_mesh, num_points, seed)
    if len(ref_n3) == 0:
        raise ValueError("mesh_metrics: the reference mesh has no surface to compare against")
    pred_n3 = sample_surface_n3(pred_mesh, num_points, seed + 1)
    if len(pred_n3) == 0:
        return MeshMetrics(math.inf, math.inf, 0.0, 0.0, 0.0, threshold)
    pred_to_ref_n, _ = cKDTree(ref_n3).query(pred_n3)
    ref_to_pred_n, _ = cKDTree(pred_n3).query(ref_n3)
    precision = float(np.mean(pred_to_ref_n < threshold))
    recall = float(np.mean(ref_to_pred_n < threshold))
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return MeshMetrics(
        accuracy=float(pred_to_ref_n.mean()),
        completeness=float(ref_to_pred_n.mean()),
        precision=precision,
        recall=recall,
        fscore=fscore,
        threshold=threshold,
    )


def render_depth_hw(
    scene: o3d.t.geometry.RaycastingScene, camera: Camera, world_T_cam_44: np.ndarray
) -> np.ndarray:
    """(H, W) float32 z-depth (metres, along the camera's z axis) of the scene; 0 where no hit.

    H, W are `camera.height`, `camera.width`; `world_T_cam_44` is the camera-to-world pose.
    """
    depth_n = _render_depth_n(scene, _camera_rays_n3(camera), world_T_cam_44)
    return depth_n.reshape(camera.height, camera.width)


def _camera_rays_n3(camera: Camera) -> np.ndarray:
    """(H * W, 3) float32 camera-frame ray directions with unit z through every pixel centre."""
    uv_n2 = pixel_grid_hw2(camera.height, camera.width).reshape(-1, 2)
    rays_n3 = np.concatenate([uv_n2, np.ones((len(uv_n2), 1))], axis=1) @ np.linalg.inv(camera.K_33).T
    return rays_n3.astype(np.float32)


def _render_depth_n(
    scene: o3d.t.geometry.RaycastingScene, rays_cam_n3: np.ndarray, world_T_cam_44: np.ndarray
) -> np.ndarray:
    """(N,) float32 z-depth along camera-frame rays of unit z; 0 where no hit."""
    rays_n6 = np.empty((len(rays_cam_n3), 6), dtype=np.float32)
    rays_n6[:, :3] = world_T_cam_44[:3, 3]
    rays_n6[:, 3:] = rays_cam_n3 @ world_T_cam_44[:3, :3].T.astype(np.float32)
    # Ray directions have unit z in the camera frame, so the hit distance is the z-depth.
    t_hit_n = scene.cast_rays(o3d.core.Tensor(rays_n6))["t_hit"].numpy()
    return np.where(np.isfinite(t_hit_n), t_hit_n, 0.0).astype(np.float32)


def subdivide_to_edge_length(
    mesh: o3d.geometry.TriangleMesh, max_edge_length: float
) -> o3d.geometry.TriangleMesh:
    """The same surface with every edge at most `max_edge_length` metres long.

    Long edges are split at shared midpoints (no cracks); vertex colours are interpolated.
    """
    vertices_v3 = np.asarray(mesh.vertices, dtype=np.float64)
    triangles_t3 = np.asarray(mesh.triangles, dtype=np.int64)
    if len(triangles_t3) == 0:
        return o3d.geometry.TriangleMesh(mesh)
    columns_vc = _vertex_columns_vc(mesh)
    corners_t33 = vertices_v3[triangles_t3]
    longest = float(np.linalg.norm(corners_t33 - np.roll(corners_t33, 1, axis=1), axis=2).max())
    # A split can leave a median almost as long as the edge it halved: allow two rounds per halving.
    iterations = 2 * math.ceil(math.log2(max(longest / max_edge_length, 1.0))) + 2
    columns_vc, triangles_t3 = trimesh.remesh.subdivide_to_size(
        columns_vc, triangles_t3, max_edge=max_edge_length, max_iter=iterations
    )
    return _triangle_mesh(columns_vc, triangles_t3)


def _vertex_columns_vc(mesh: o3d.geometry.TriangleMesh) -> np.ndarray:
    """(V, 3) vertex positions, or (V, 6) positions and RGB colours when the mesh has them."""
    vertices_v3 = np.asarray(mesh.vertices, dtype=np.float64)
    if not mesh.has_vertex_colors():
        return vertices_v3
    return np.hstack([vertices_v3, np.asarray(mesh.vertex_colors, dtype=np.float64)])


def _triangle_mesh(columns_vc: np.ndarray, triangles_t3: np.ndarray) -> o3d.geometry.TriangleMesh:
    """Legacy mesh from vertex rows (x, y, z[, r, g, b]) and triangles, with vertex normals."""
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.ascontiguousarray(columns_vc[:, :3])),
        o3d.utility.Vector3iVector(np.ascontiguousarray(triangles_t3, dtype=np.int32)),
    )
    if columns_vc.shape[1] == 6:
        mesh.vertex_colors = o3d.utility.Vector3dVector(np.ascontiguousarray(columns_vc[:, 3:]))
    mesh.compute_vertex_normals()
    return mesh


def cull_to_views(
    mesh: o3d.geometry.TriangleMesh,
    camera: Camera,
    world_T_cam_44_list: list[np.ndarray],
    depth_max: float = 10.0,
    occlusion_tolerance: float = 0.05,
    max_edge_length: float = 0.05,
) -> o3d.geometry.TriangleMesh:
    """The part of `mesh` that at least one of the given cameras saw.

    The mesh is first subdivided so that no edge exceeds `max_edge_length` metres. A
    triangle is kept when its centroid projects inside the image of some camera, lies in
    front of it at a z-depth of at most `depth_max` metres, and is not occluded: its
    z-depth is within `occlusion_tolerance` metres of the mesh's own depth rendered at
    that view (nearest pixel). `world_T_cam_44_list` holds camera-to-world poses.
    """
    if max_edge_length <= 0 or depth_max <= 0 or occlusion_tolerance < 0:
        raise ValueError(
            "cull_to_views: expected max_edge_length > 0, depth_max > 0, occlusion_tolerance >= 0, "
            f"got {max_edge_length}, {depth_max}, {occlusion_tolerance}"
        )
    if len(world_T_cam_44_list) == 0:
        raise ValueError("cull_to_views: expected at least one camera pose, got none")
    fine = subdivide_to_edge_length(mesh, max_edge_length)
    vertices_v3 = np.asarray(fine.vertices)
    triangles_t3 = np.asarray(fine.triangles)
    if len(triangles_t3) == 0:
        return fine
    centroids_t3 = vertices_v3[triangles_t3].mean(axis=1)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(fine))
    rays_cam_n3 = _camera_rays_n3(camera)
    seen_t = np.zeros(len(triangles_t3), dtype=bool)
    for world_T_cam_44 in world_T_cam_44_list:
        rendered_hw = _render_depth_n(scene, rays_cam_n3, world_T_cam_44).reshape(camera.height, camera.width)
        uv_t2, z_t = project_n2(transform_n3(invert_pose_44(world_T_cam_44), centroids_t3), camera.K_33)
        candidate_t = (
            (z_t > 0)
            & (z_t <= depth_max)
            & (uv_t2[:, 0] >= -0.5)
            & (uv_t2[:, 0] < camera.width - 0.5)
            & (uv_t2[:, 1] >= -0.5)
            & (uv_t2[:, 1] < camera.height - 0.5)
        )
        index_c = np.flatnonzero(candidate_t)
        pixel_c2 = np.clip(np.rint(uv_t2[index_c]).astype(np.int64), 0, [camera.width - 1, camera.height - 1])
        surface_c = rendered_hw[pixel_c2[:, 1], pixel_c2[:, 0]]
        visible_c = (surface_c > 0) & (np.abs(z_t[index_c] - surface_c) <= occlusion_tolerance)
        seen_t[index_c[visible_c]] = True
    kept_k3 = triangles_t3[seen_t]
    used_u, kept_k3 = np.unique(kept_k3, return_inverse=True)
    return _triangle_mesh(_vertex_columns_vc(fine)[used_u], kept_k3.reshape(-1, 3))
