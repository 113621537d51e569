"""COLMAP as a peer for pose accuracy and speed: the structure from motion of
`slam/colmap_sfm.py` (pycolmap, CPU), which `--poses colmap` also runs. Install with
`pip install -e .[bench]` (or `pip install pycolmap`)."""

from slam.colmap_sfm import (
    ColmapResult,
    ColmapSettings,
    image_name,
    import_pycolmap,
    index_from_name,
    run_colmap,
    world_T_cam_from_cam_from_world_44,
)

__all__ = [
    "ColmapResult",
    "ColmapSettings",
    "image_name",
    "import_pycolmap",
    "index_from_name",
    "run_colmap",
    "world_T_cam_from_cam_from_world_44",
]
