"""TSDF fusion, mesh and point-cloud extraction, PLY export, reconstruction metrics."""
