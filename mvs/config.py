"""Configuration: one dataclass per stage, defaults in code, then a YAML file, then the CLI.

Every key of a YAML preset in `configs/` maps to a field of `RunConfig` or of one of its
stage dataclasses; an unknown key is an error, not silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from fusion.consistency import ConsistencyConfig
from mvs.adapt import AdaptConfig
from mvs.local_sweep import LocalSweepConfig
from mvs.regressors import ClassicRegressorConfig
from slam.vo_config import VOConfig
from slam.colmap_sfm import ColmapSettings
from slam.keyframes import KeyframeConfig
from slam.refine import PoseRefineConfig
from slam.rgbd import RGBDConfig
from slam.scale import SensorScaleConfig


@dataclass
class SequenceConfig:
    """Which frames to read. `frames` is START:STOP:STEP over dataset frame indices.

    `intrinsics` overrides the colour camera of the sequence: "fx,fy,cx,cy" (pixels at
    the input's resolution) or a calibration YAML file (see mvs/io/intrinsics.py); "" keeps
    the layout's own. Where the layout has none (videos, image folders without K.txt), or
    with "auto", a run estimates the focal length from the frames (principal point at the
    image centre, slam/self_calibration.py) and records the values here.
    """

    name: str = "synthetic/room0"
    frames: str = ":"
    intrinsics: str = ""


@dataclass
class TrackingConfig:
    """Where camera poses come from: `gt` (dataset), `track` (monocular VO), `rgbd`,
    `import` (the COLMAP model folder or nerfstudio transforms.json `pose_file`, taken to be
    in metres; mvs/io/imported_poses.py), `colmap` (COLMAP structure from motion with the
    `colmap` settings, pycolmap), or `auto`: the dataset's poses when it has them, else
    `rgbd` with sensor depth, else `track`.
    `refine_gt`: dataset poses are refined to the colour images (`refine`, slam/refine.py)
    before a plane sweep uses them; sensor depth keeps the dataset poses, which belong to it.

    `scale` fixes the unknown scale of monocular tracking, COLMAP and imported poses:
    `sensor` (depth sensor, as `sensor_scale` says), `gt` (ground-truth poses, for evaluation
    only) or `none` (tracking units; imported poses are kept as they are).
    """

    poses: str = "auto"
    pose_file: str = ""
    scale: str = "none"
    refine_gt: bool = False
    refine: PoseRefineConfig = field(default_factory=PoseRefineConfig)
    vo: VOConfig = field(default_factory=VOConfig)
    rgbd: RGBDConfig = field(default_factory=RGBDConfig)
    sensor_scale: SensorScaleConfig = field(default_factory=SensorScaleConfig)
    colmap: ColmapSettings = field(default_factory=ColmapSettings)

    @property
    def in_metres(self) -> bool:
        """Whether the run's poses are in metres: all but monocular tracking and COLMAP
        structure from motion with no `scale`, which are in tracking units."""
        return self.poses not in ("track", "colmap") or self.scale != "none"


@dataclass
class DepthConfig:
    """Where per-frame depth comes from: `sensor`, a `classic` or `learned` plane sweep, or
    `auto`: the sensor's depth when the sequence has it, else `learned`.

    keyframes: `auto` (a depth map per keyframe) or `all` (every selected frame).
    near, far: depth range of the sweep (metres); estimates outside it are dropped. A run
        chooses them, and `keyframe.overlap_depths`, from the scene's depth unless the
        --config file or a flag sets them (mvs/depth_range.py); these defaults, the learned
        model's trained range, stay when too few depths are found.
    num_hypotheses: fronto-parallel planes of the classic sweep, uniform in inverse depth
        (a learned model keeps the hypotheses it was trained with).
    working_width, working_height: resolution (pixels) inputs are resized to.
    classic_downscale: the classic cost volume is built at the working size over this factor.
    zncc_window: ZNCC patch size (pixels at the cost volume's resolution).
    learned_min_confidence: learned pixels with a lower confidence get no depth.
    fuse_min_confidence: pixels whose confidence is not above this are not fused (either
        regressor; confidence 0 marks depth kept in the saved map but not confirmed).
    local_sweep: the photometric refinement of learned depth at the working resolution.
    consistency: the multi-view check estimated depth passes before it is fused.
    weights: the learned model: a name under mvs/weights/ or a path to a .pt file.
    adapt: self-supervised fine-tuning of the learned model on the sequence's own frames
        and poses before depth is estimated (`--adapt`, mvs/adapt.py).
    """

    source: str = "auto"
    keyframes: str = "auto"
    near: float = 0.25
    far: float = 20.0
    num_hypotheses: int = 64
    working_width: int = 320
    working_height: int = 240
    classic_downscale: int = 2
    zncc_window: int = 5
    learned_min_confidence: float = 0.0
    fuse_min_confidence: float = 0.0
    weights: str = "depthnet"
    classic: ClassicRegressorConfig = field(default_factory=ClassicRegressorConfig)
    local_sweep: LocalSweepConfig = field(default_factory=LocalSweepConfig)
    keyframe: KeyframeConfig = field(default_factory=KeyframeConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)


@dataclass
class FusionConfig:
    """TSDF fusion in an Open3D VoxelBlockGrid (metres).

    voxel_size: edge of a voxel (metres, or the poses' units): for a room seen from about
        `depth.keyframe.reference_depth`; a plane sweep's run scales it with the scene's
        median depth unless a --config file or `--voxel-size` sets it (mvs/io/settings.py),
        the truncations below scaling with it.
    sdf_trunc_voxels: truncation of the signed distance (voxels) for sensor depth, which is
        also what evaluation references are fused with.
    sweep_sdf_trunc_voxels: the truncation for plane-sweep depth. Its errors are a few per
        cent of the depth (5-10 cm at 2 m on real rooms), so each map is spread over a wider
        band and the average over many keyframes sets the surface (redkitchen 0:1000:2,
        learned depth: mesh F-score at 5 cm 0.38 at 4 voxels, 0.43 at 10, 0.44 at 13-16).
    """

    voxel_size: float = 0.02
    sdf_trunc_voxels: float = 4.0
    sweep_sdf_trunc_voxels: float = 13.0
    depth_max: float = 5.0
    block_resolution: int = 8
    block_count: int = 8000
    min_observations: int = 2


@dataclass
class ReportConfig:
    """report.html: `render_mesh` renders the view of the mesh it shows (`mesh.png`)."""

    render_mesh: bool = True


@dataclass
class Setting:
    """A setting chosen other than by its default: the dotted `key` of a `RunConfig` field
    ("fusion.depth_max"), its `value`, who chose it (`source`: the `input`, the `config`
    file or a `flag`) and why (`reason`: for a config file, its path)."""

    key: str
    value: Any
    source: str
    reason: str


@dataclass
class RunConfig:
    """Everything `python -m mvs.run` needs; saved as `config.yaml` next to the outputs.

    `settings` records what was chosen other than by default and why: the `--config` file's
    and the flags' keys (`mvs.run.build_config`), then what the input chose for the others
    (`mvs.io.settings`). The input chooses no key that is listed already.
    """

    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    out: str = ""
    device: str = "auto"
    settings: list[Setting] = field(default_factory=list, metadata={"item": Setting})

    @property
    def listed_keys(self) -> set[str]:
        """The dotted keys `settings` lists: set by the --config file, a flag or the input."""
        return {setting.key for setting in self.settings}


def update_dataclass(obj: Any, values: dict[str, Any], source: str) -> None:
    """Set fields of a (nested) dataclass from a dict; unknown keys raise naming `source`."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"{source}: unknown key '{key}'; expected one of {sorted(names)}")
        current = getattr(obj, key)
        item_type = names[key].metadata.get("item")
        if item_type is not None:
            setattr(obj, key, _dataclass_items(item_type, value, f"{source}:{key}"))
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{source}: '{key}' must be a mapping, got {value!r}")
            update_dataclass(current, value, f"{source}:{key}")
        else:
            setattr(obj, key, type(current)(value) if current is not None else value)


def _dataclass_items(item_type: type, values: Any, source: str) -> list[Any]:
    """A list of `item_type` from a list of mappings of its fields; errors name `source`."""
    fields = sorted(f.name for f in dataclasses.fields(item_type))
    if not isinstance(values, list) or not all(isinstance(v, dict) and sorted(v) == fields for v in values):
        raise ValueError(f"{source}: expected a list of mappings with the keys {fields}, got {values!r}")
    return [item_type(**v) for v in values]


def flat_keys(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The leaves of nested mappings by dotted key: {"fusion": {"depth_max": 4}} gives
    {"fusion.depth_max": 4}."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path`, with errors that name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(values).__name__}")
    return values


def to_yaml(config: Any) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


def resolve_device(name: str) -> str:
    """The torch device to run on: `auto` picks CUDA when present, else the CPU."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device: expected auto, cpu or cuda, got '{name}'")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available; use --device cpu or auto")
    return name


def fusion_config(config: RunConfig) -> FusionConfig:
    """The TSDF settings for the run's depth source: plane-sweep depth is truncated at
    `sweep_sdf_trunc_voxels`, sensor depth at `sdf_trunc_voxels`."""
    if config.depth.source == "sensor":
        return config.fusion
    return replace(config.fusion, sdf_trunc_voxels=config.fusion.sweep_sdf_trunc_voxels)
