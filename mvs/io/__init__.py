"""Everything that reads a capture, and what other tools exchange.

Reading: layout detection and opening (`layout`), one reader per layout family (`scannet`,
`sens`, `seven_scenes`, `tum`, `folder`, `video`) over shared pieces (`image_files`,
`frames`), the user's intrinsics (`intrinsics`), and the settings chosen from what the input
is and what its frames show (`settings`). Interop: COLMAP models and nerfstudio's
transforms.json, written (`export`) and read as a pose source (`imported_poses`).
"""
