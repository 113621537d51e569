"""Reading and writing what other tools exchange: COLMAP models, nerfstudio's transforms.json."""
