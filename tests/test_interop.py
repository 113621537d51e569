"""COLMAP and nerfstudio interop: exported models and transforms.json read back to the same
poses, pycolmap reads our export and projects like our cameras, imported poses drive a run."""

import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest

from mvs.config import TrackingConfig
from mvs.geometry import invert_pose_44, look_at_world_T_cam_44, project_n2, transform_n3
from mvs.io.colmap_model import qt_from_cam_T_world, read_model, write_text_model
from mvs.io.export import frame_image_names, write_interop
from mvs.io.imported_poses import imported_poses, match_frames, read_pose_file
from mvs.io.layout import open_sequence
from mvs.io.nerfstudio import read_transforms, write_transforms
from mvs.poses import estimate_poses
from mvs.run import main
from mvs.types import Camera, Sequence
from slam.result import METRES
from slam.trajectory import evaluate_trajectory, read_tum_trajectory

CAMERA = Camera(np.array([[100.0, 0.0, 79.5], [0.0, 101.0, 59.5], [0.0, 0.0, 1.0]]), 160, 120)
UP_3 = np.array([0.0, 0.0, 1.0])
NEEDS_PYCOLMAP = "pycolmap is not installed (the optional extra: pip install -e '.[colmap]')"


def run_cli(*args: str) -> int:
    return main(["--device", "cpu", "--no-render", *args])


def ring_world_T_cam_n44(count: int = 6) -> np.ndarray:
    """Cameras on a circle of radius 2 m, 1.2 m up, looking at a point off the origin."""
    angles = np.linspace(0.0, 2 * np.pi, count, endpoint=False)
    return np.stack([
        look_at_world_T_cam_44(np.array([2 * np.cos(a), 2 * np.sin(a), 1.2]), np.array([0.1, -0.2, 0.3]), UP_3)
        for a in angles
    ])


def fake_sequence(indices: list[int], image_names: dict[int, str]) -> Sequence:
    """A sequence of `indices` whose frames are never loaded."""
    return Sequence(name="fake", root=Path("/data/fake"), layout="folder", camera=CAMERA, indices=indices,
                    load_frame=lambda index: None, has_depth=False, has_poses=False, image_names=image_names)


def write_binary_model(folder: Path, text_model_dir: Path) -> None:
    """The text model in `text_model_dir` as COLMAP's binary files (little-endian, as
    COLMAP's reconstruction_io writes them), with a SIMPLE_RADIAL camera added (id 2, model
    id 2, 4 parameters) and the 2D points of image 1 pointing at 3D point 1 and at none."""
    model = read_model(text_model_dir)
    folder.mkdir(parents=True)
    camera = model.cameras[1]
    with open(folder / "cameras.bin", "wb") as file:
        file.write(struct.pack("<Q", 2))
        file.write(struct.pack("<iiQQ4d", 1, 1, camera.width, camera.height, *camera.params))
        file.write(struct.pack("<iiQQ4d", 2, 2, 640, 480, 500.0, 320.0, 240.0, -0.01))
    with open(folder / "images.bin", "wb") as file:
        file.write(struct.pack("<Q", len(model.images)))
        for image in model.images.values():
            q_wxyz, t_3 = qt_from_cam_T_world(image.cam_T_world_44)
            file.write(struct.pack("<i7di", image.image_id, *q_wxyz, *t_3, image.camera_id))
            file.write(image.name.encode() + b"\0")
            points = [(10.0, 20.0, 1), (30.0, 40.0, -1)] if image.image_id == 1 else []
            file.write(struct.pack("<Q", len(points)))
            for x, y, point_id in points:
                file.write(struct.pack("<ddq", x, y, point_id))
    with open(folder / "points3D.bin", "wb") as file:
        file.write(struct.pack("<Q", len(model.point_ids_n)))
        for point_id, xyz, rgb in zip(model.point_ids_n, model.points_n3, model.colours_n3):
            track = [(1, 0)] if point_id == 1 else []
            file.write(struct.pack("<Q3d3BdQ", point_id, *xyz, *rgb, 0.5, len(track)))
            for image_id, point2D_index in track:
                file.write(struct.pack("<ii", image_id, point2D_index))


@pytest.fixture
def text_model(tmp_path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A COLMAP text model of the ring cameras and three coloured points that they all see."""
    world_T_cam_n44 = ring_world_T_cam_n44()
    points_n3 = np.array([[0.1, 0.2, 0.3], [-0.4, 0.5, 0.25], [0.3, -0.2, 0.0]])
    colours_n3 = np.array([[255, 0, 0], [0, 128, 0], [1, 2, 3]], dtype=np.uint8)
    names = [f"images/frame_{k:03d}.jpg" for k in range(len(world_T_cam_n44))]
    cam_T_world_n44 = np.stack([invert_pose_44(pose_44) for pose_44 in world_T_cam_n44])
    write_text_model(tmp_path / "sparse" / "0", CAMERA, names, cam_T_world_n44, points_n3, colours_n3)
    return tmp_path / "sparse" / "0", world_T_cam_n44, points_n3, colours_n3


def test_colmap_text_model_reads_back_the_poses_camera_and_points(text_model) -> None:
    folder, world_T_cam_n44, points_n3, colours_n3 = text_model
    model = read_model(folder)
    assert not model.binary and list(model.images) == [1, 2, 3, 4, 5, 6]
    for k, image in enumerate(model.images.values()):
        assert image.name == f"images/frame_{k:03d}.jpg" and image.camera_id == 1 and len(image.point3D_ids_m) == 0
        np.testing.assert_allclose(invert_pose_44(image.cam_T_world_44), world_T_cam_n44[k], atol=1e-12)
    camera = model.cameras[1]
    assert (camera.model, camera.width, camera.height) == ("PINHOLE", 160, 120)
    # COLMAP puts the first pixel's centre at 0.5: the principal point moves by half a pixel.
    np.testing.assert_allclose(camera.params, [100.0, 101.0, 80.0, 60.0])
    np.testing.assert_array_equal(model.point_ids_n, [1, 2, 3])
    np.testing.assert_allclose(model.points_n3, points_n3, atol=1e-6)
    np.testing.assert_array_equal(model.colours_n3, colours_n3)


def test_colmap_binary_model_reads_like_the_text_one(text_model, tmp_path) -> None:
    folder, world_T_cam_n44, points_n3, colours_n3 = text_model
    write_binary_model(tmp_path / "binary", folder)
    model = read_model(tmp_path / "binary")
    assert model.binary and [image.name for image in model.images.values()] == [
        f"images/frame_{k:03d}.jpg" for k in range(6)
    ]
    for k, image in enumerate(model.images.values()):
        np.testing.assert_allclose(invert_pose_44(image.cam_T_world_44), world_T_cam_n44[k], atol=1e-9)
    np.testing.assert_array_equal(model.images[1].point3D_ids_m, [1, -1])
    assert model.cameras[2].model == "SIMPLE_RADIAL" and model.cameras[2].params.tolist() == [500.0, 320.0, 240.0, -0.01]
    np.testing.assert_allclose(model.points_n3, points_n3, atol=1e-6)
    np.testing.assert_array_equal(model.colours_n3, colours_n3)
    # The observation of point 1 makes image 1 a keyframe of the imported poses.
    pose_file = read_pose_file(tmp_path / "binary")
    np.testing.assert_array_equal(pose_file.images[0].point_rows_m, [0])


def test_truncated_binary_model_names_the_file(text_model, tmp_path) -> None:
    write_binary_model(tmp_path / "binary", text_model[0])
    images_bin = tmp_path / "binary" / "images.bin"
    images_bin.write_bytes(images_bin.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{images_bin}: .*truncated"):
        read_model(tmp_path / "binary")


def test_malformed_text_model_and_parent_folder_errors_name_the_file(text_model) -> None:
    folder = text_model[0]
    with pytest.raises(FileNotFoundError, match=f"{folder.parent}: no COLMAP model here; .*the models inside it are {folder}"):
        read_model(folder.parent)
    images_txt = folder / "images.txt"
    lines = images_txt.read_text().splitlines()
    lines[6] = lines[6].replace(" 1 images/frame_001.jpg", " one images/frame_001.jpg")
    images_txt.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=f"{images_txt}: line 7: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME"):
        read_model(folder)


def test_a_pose_file_camera_of_another_focal_length_is_warned_about(tmp_path, caplog) -> None:
    sequence = fake_sequence([0, 1], {0: "a.png", 1: "b.png"})
    path = tmp_path / "transforms.json"
    # 220 px at 320 px wide is 110 px at the sequence's 160: 10 % above its 100 px.
    wide = Camera(np.array([[220.0, 0.0, 159.5], [0.0, 220.0, 119.5], [0.0, 0.0, 1.0]]), 320, 240)
    write_transforms(path, wide, ["a.png", "b.png"], ring_world_T_cam_n44(2), None)
    with caplog.at_level("WARNING"):
        imported_poses(sequence, str(path), "none")
    assert "focal length (110.0 px at 160 px wide) differs from the sequence camera's (100.0 px) by 10 %" in caplog.text
    caplog.clear()
    write_transforms(path, Camera(wide.K_33 * [[0.93], [0.93], [1.0]], 320, 240), ["a.png", "b.png"],
                     ring_world_T_cam_n44(2), None)
    with caplog.at_level("WARNING"):
        imported_poses(sequence, str(path), "none")
    assert caplog.text == ""


def test_pycolmap_binary_model_gives_the_same_poses(text_model, tmp_path) -> None:
    pycolmap = pytest.importorskip("pycolmap", reason=NEEDS_PYCOLMAP)
    folder, world_T_cam_n44, _, _ = text_model
    (tmp_path / "binary").mkdir()
    pycolmap.Reconstruction(str(folder)).write_binary(str(tmp_path / "binary"))
    model = read_model(tmp_path / "binary")
    assert model.binary and len(model.images) == 6 and len(model.points_n3) == 3
    for k, image in enumerate(sorted(model.images.values(), key=lambda image: image.image_id)):
        np.testing.assert_allclose(invert_pose_44(image.cam_T_world_44), world_T_cam_n44[k], atol=1e-6)


def test_pycolmap_projects_our_export_like_our_camera(text_model) -> None:
    pycolmap = pytest.importorskip("pycolmap", reason=NEEDS_PYCOLMAP)
    folder, world_T_cam_n44, points_n3, _ = text_model
    reconstruction = pycolmap.Reconstruction(str(folder))
    assert reconstruction.num_reg_images() == 6 and reconstruction.num_points3D() == 3
    for k in range(6):
        image = reconstruction.find_image_with_name(f"images/frame_{k:03d}.jpg")
        colmap_uv_n2 = np.array([
            reconstruction.cameras[image.camera_id].img_from_cam(image.cam_from_world() * point_3)
            for point_3 in points_n3
        ])
        our_uv_n2, _ = project_n2(transform_n3(invert_pose_44(world_T_cam_n44[k]), points_n3), CAMERA.K_33)
        np.testing.assert_allclose(colmap_uv_n2, our_uv_n2 + 0.5, atol=1e-6)


def test_transforms_json_round_trips_in_the_opengl_camera_convention(tmp_path) -> None:
    world_T_cam_n44 = ring_world_T_cam_n44()
    paths = [f"images/{k}.jpg" for k in range(6)]
    write_transforms(tmp_path / "transforms.json", CAMERA, paths, world_T_cam_n44, "cloud.ply")
    content = json.loads((tmp_path / "transforms.json").read_text())
    assert (content["fl_x"], content["fl_y"], content["cx"], content["cy"], content["w"], content["h"]) == (
        100.0, 101.0, 80.0, 60.0, 160, 120)
    assert content["ply_file_path"] == "cloud.ply"
    matrix_44 = np.array(content["frames"][2]["transform_matrix"])
    # OpenGL cameras look down their -z axis with y up: our +z (forward) and +y (down) flip.
    np.testing.assert_allclose(matrix_44[:3, 2], -world_T_cam_n44[2][:3, 2], atol=1e-12)
    np.testing.assert_allclose(matrix_44[:3, 1], -world_T_cam_n44[2][:3, 1], atol=1e-12)
    np.testing.assert_allclose(matrix_44[:3, [0, 3]], world_T_cam_n44[2][:3, [0, 3]], atol=1e-12)
    transforms = read_transforms(tmp_path / "transforms.json")
    assert [frame.file_path for frame in transforms.frames] == paths
    assert (transforms.fl_x, transforms.w) == (100.0, 160)
    for frame, world_T_cam_44 in zip(transforms.frames, world_T_cam_n44):
        np.testing.assert_allclose(frame.world_T_cam_44, world_T_cam_44, atol=1e-12)


def test_a_non_rigid_transform_matrix_names_the_file_and_frame(tmp_path) -> None:
    path = tmp_path / "transforms.json"
    path.write_text(json.dumps({"frames": [{"file_path": "a.jpg", "transform_matrix": np.eye(4).tolist()},
                                           {"file_path": "b.jpg", "transform_matrix": (2 * np.eye(4)).tolist()}]}))
    with pytest.raises(ValueError, match=f"{path}: frame 1 \\(b.jpg\\): transform_matrix must be a rigid"):
        read_transforms(path)


def test_images_match_frames_by_file_name_else_by_index(tmp_path) -> None:
    world_T_cam_n44 = ring_world_T_cam_n44()
    sequence = fake_sequence([3, 4, 5, 6], {3: "c.png", 4: "d.png", 5: "e.png", 6: "f.png"})
    by_name = tmp_path / "by_name.json"
    write_transforms(by_name, CAMERA, ["images/e.png", "x/d.png", "q.png"], world_T_cam_n44[:3], None)
    matched, how = match_frames(sequence, read_pose_file(by_name))
    assert (matched, how) == ({5: 0, 4: 1}, "image file name")
    by_index = tmp_path / "by_index.json"
    write_transforms(by_index, CAMERA, ["000004.jpg", "6.jpg", "9.jpg", "frame_3.jpg"], world_T_cam_n44[:4], None)
    matched, how = match_frames(sequence, read_pose_file(by_index))
    assert (matched, how) == ({4: 0, 6: 1}, "frame index")
    result = imported_poses(sequence, str(by_index), "none")
    assert result.lost == [3, 5] and result.scale == METRES
    np.testing.assert_allclose(result.world_T_cam_44[6], world_T_cam_n44[1], atol=1e-12)
    nothing = tmp_path / "nothing.json"
    write_transforms(nothing, CAMERA, ["a.jpg"], world_T_cam_n44[:1], None)
    with pytest.raises(ValueError, match=f"{nothing}: none of its 1 images matches a selected frame .* 'a.jpg', .* 'c.png'"):
        match_frames(sequence, read_pose_file(nothing))
    twice = tmp_path / "twice.json"
    write_transforms(twice, CAMERA, ["left/e.png", "right/e.png"], world_T_cam_n44[:2], None)
    with pytest.raises(ValueError, match="images 'left/e.png' and 'right/e.png' both match frame 5"):
        match_frames(sequence, read_pose_file(twice))


def test_frames_without_image_files_are_named_by_index() -> None:
    assert frame_image_names(fake_sequence([7, 8], {})) == {7: "7.jpg", 8: "8.jpg"}
    assert frame_image_names(fake_sequence([7, 8], {7: "a.png", 8: "a.png"})) == {7: "7.jpg", 8: "8.jpg"}
    assert frame_image_names(fake_sequence([7, 8], {7: "a.png", 8: "b.png", 9: "c.png"})) == {7: "a.png", 8: "b.png"}


def test_export_without_a_cloud_has_no_points_and_a_big_cloud_is_subsampled(tmp_path) -> None:
    sequence = fake_sequence([2, 5, 9], {})
    poses = dict(zip([9, 2], ring_world_T_cam_n44(2)))
    write_interop(tmp_path / "none", sequence, poses, None)
    model = read_model(tmp_path / "none" / "sparse" / "0")
    assert [image.name for image in model.images.values()] == ["2.jpg", "9.jpg"] and len(model.points_n3) == 0
    transforms = json.loads((tmp_path / "none" / "transforms.json").read_text())
    assert "ply_file_path" not in transforms
    assert [frame["file_path"] for frame in transforms["frames"]] == ["images/2.jpg", "images/9.jpg"]
    points_n3 = np.random.default_rng(0).uniform(-1, 1, (120_000, 3))
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points_n3))
    cloud.colors = o3d.utility.Vector3dVector(np.full((120_000, 3), 0.25))
    write_interop(tmp_path / "big", sequence, poses, cloud)
    model = read_model(tmp_path / "big" / "sparse" / "0")
    assert len(model.points_n3) == 50_000 and np.all(model.colours_n3 == 64)
    np.testing.assert_allclose(model.points_n3[[0, -1]], points_n3[[0, -1]], atol=1e-6)
    assert json.loads((tmp_path / "big" / "transforms.json").read_text())["ply_file_path"] == "cloud.ply"


def test_scale_flags_rescale_imported_poses(small_room, tmp_path) -> None:
    sequence = open_sequence(str(small_room), frames="0:40:4")
    indices = sequence.indices
    half_n44 = np.stack([sequence.gt_world_T_cam_44[i] for i in indices])
    half_n44[:, :3, 3] *= 0.5
    cam_T_world_n44 = np.stack([invert_pose_44(pose_44) for pose_44 in half_n44])
    model = tmp_path / "half"
    write_text_model(model, sequence.camera, [f"{i}.jpg" for i in indices], cam_T_world_n44, np.zeros((0, 3)), np.zeros((0, 3)))
    kept = estimate_poses(sequence, TrackingConfig(poses="import", pose_file=str(model)))
    np.testing.assert_allclose(kept.world_T_cam_44[indices[3]], half_n44[3], atol=1e-9)
    metric = estimate_poses(sequence, TrackingConfig(poses="import", pose_file=str(model), scale="gt"))
    for index in indices:
        np.testing.assert_allclose(metric.world_T_cam_44[index], sequence.gt_world_T_cam_44[index], atol=1e-6)
    with pytest.raises(ValueError, match="--scale sensor compares sensor depth with the depth of the 3D points"):
        estimate_poses(sequence, TrackingConfig(poses="import", pose_file=str(model), scale="sensor"))


def test_pose_file_flags_are_checked(small_room, tmp_path, capsys) -> None:
    assert run_cli("--sequence", str(small_room), "--out", str(tmp_path / "o1"), "--poses", "import") == 2
    assert "--poses import needs --pose-file PATH" in capsys.readouterr().err
    assert run_cli("--sequence", str(small_room), "--out", str(tmp_path / "o2"), "--pose-file", str(tmp_path)) == 2
    assert "is read only with --poses import, not --poses gt" in capsys.readouterr().err
    assert run_cli("--sequence", str(small_room), "--out", str(tmp_path / "o3"), "--poses", "import",
                   "--pose-file", str(tmp_path)) == 2
    assert f"{tmp_path}: no COLMAP model here" in capsys.readouterr().err


def test_poses_colmap_without_pycolmap_says_how_to_install_it(small_room, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pycolmap", None)
    assert run_cli("--sequence", str(small_room), "--out", str(tmp_path / "out"), "--poses", "colmap") == 2
    assert "pip install -e '.[colmap]'" in capsys.readouterr().err


def test_run_exports_colmap_and_nerfstudio_and_a_second_run_imports_them(small_room, tmp_path) -> None:
    first = tmp_path / "first"
    assert run_cli("--sequence", str(small_room), "--out", str(first), "--voxel-size", "0.05") == 0
    report = json.loads((first / "report.json").read_text())
    for name in ("sparse/0/cameras.txt", "sparse/0/images.txt", "sparse/0/points3D.txt", "transforms.json"):
        assert str(first / name) in report["outputs"], name
    _, first_n44 = read_tum_trajectory(first / "trajectory.txt")
    model = read_model(first / "sparse" / "0")
    assert [image.name for image in model.images.values()] == [f"{i}.jpg" for i in range(40)]
    cloud = o3d.io.read_point_cloud(str(first / "cloud.ply"))
    assert len(model.points_n3) == min(len(cloud.points), 50_000) > 1000
    # The exported points lie on the fused surface (a subset of cloud.ply, to 1e-6 m).
    distances_n = np.asarray(o3d.geometry.PointCloud(o3d.utility.Vector3dVector(model.points_n3))
                             .compute_point_cloud_distance(cloud))
    assert distances_n.max() < 1e-5
    try:
        import pycolmap
    except ImportError:
        pycolmap = None
    if pycolmap is not None:
        reconstruction = pycolmap.Reconstruction(str(first / "sparse" / "0"))
        assert reconstruction.num_reg_images() == 40 and reconstruction.num_points3D() == len(model.points_n3)

    # Frames 5 and 6 have no pose in the imported model: skipped, with the file as the reason.
    partial = tmp_path / "partial"
    shutil.copytree(first / "sparse" / "0", partial)
    lines = (partial / "images.txt").read_text().splitlines()
    (partial / "images.txt").write_text("\n".join(l for l in lines if not l.endswith((" 5.jpg", " 6.jpg"))) + "\n")
    second = tmp_path / "second"
    assert run_cli("--sequence", str(small_room), "--out", str(second), "--voxel-size", "0.05", "--frames", "0:20",
                   "--poses", "import", "--pose-file", str(partial)) == 0
    report = json.loads((second / "report.json").read_text())
    assert report["poses"] == "import" and report["frames_posed"] == 18 and report["units"] == "metres"
    assert report["skipped"] == {"5": f"no pose in {partial}", "6": f"no pose in {partial}"}
    timestamps_n, second_n44 = read_tum_trajectory(second / "trajectory.txt")
    kept = [i for i in range(20) if i not in (5, 6)]
    np.testing.assert_array_equal(timestamps_n, kept)
    np.testing.assert_allclose(second_n44, first_n44[kept], atol=1e-6)

    third = tmp_path / "third"
    assert run_cli("--sequence", str(small_room), "--out", str(third), "--voxel-size", "0.05",
                   "--poses", "import", "--pose-file", str(first / "transforms.json")) == 0
    np.testing.assert_allclose(read_tum_trajectory(third / "trajectory.txt")[1], first_n44, atol=1e-6)


def test_colmap_structure_from_motion_poses_the_room(small_room) -> None:
    pytest.importorskip("pycolmap", reason=NEEDS_PYCOLMAP)
    sequence = open_sequence(str(small_room), frames="0:20")
    result = estimate_poses(sequence, TrackingConfig(poses="colmap", scale="gt"))
    assert len(result.world_T_cam_44) >= 18 and result.scale == METRES
    assert set(result.lost) == set(sequence.indices) - set(result.world_T_cam_44)
    # 160x120 renders, SIFT on a textured room: camera centres within 3 cm of the truth.
    assert evaluate_trajectory(result.world_T_cam_44, sequence.gt_world_T_cam_44, with_scale=False).ate_rmse < 0.03
