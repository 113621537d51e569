"""Configuration: defaults, YAML presets, command-line overrides and their errors."""

from pathlib import Path

import pytest
import yaml

from mvs.config import RunConfig, load_yaml, to_yaml, update_dataclass
from mvs.run import build_config, parse_args

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_default_yaml_matches_the_dataclass_defaults():
    config = RunConfig()
    update_dataclass(config, load_yaml(CONFIGS / "default.yaml"), "default.yaml")
    assert config == RunConfig()


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_preset_maps_onto_dataclass_fields(preset):
    config = RunConfig()
    update_dataclass(config, load_yaml(CONFIGS / preset), preset)
    assert config.fusion.voxel_size > 0


def test_no_preset_sets_the_depth_path():
    # A plane sweep's depth range and overlap depths come from the scene (mvs/depth_range.py);
    # a dataset's preset sets nothing of the depth path, and the defaults leave them out.
    for preset in sorted(CONFIGS.glob("*.yaml")):
        depth = load_yaml(preset).get("depth", {})
        if preset.name == "default.yaml":
            assert not {"near", "far", "keyframe"} & set(depth)
        else:
            assert depth == {}, f"{preset.name} sets {depth}"


def test_command_line_overrides_yaml_which_overrides_defaults(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("fusion:\n  voxel_size: 0.05\n  depth_max: 3.0\nsequence:\n  frames: '0:10'\n")
    config = build_config(parse_args(["--config", str(preset), "--voxel-size", "0.01", "--device", "cpu"]))
    assert config.fusion.voxel_size == 0.01
    assert config.fusion.depth_max == 3.0
    assert config.sequence.frames == "0:10"
    assert config.sequence.name == RunConfig().sequence.name


def test_resolved_config_round_trips_through_yaml():
    config = build_config(parse_args(["--sequence", "scannet/scene0000", "--device", "cpu"]))
    restored = RunConfig()
    update_dataclass(restored, yaml.safe_load(to_yaml(config)), "round trip")
    assert restored == config


def test_unknown_key_and_bad_file_name_the_file(tmp_path):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("fusion:\n  voxel: 0.05\n")
    with pytest.raises(ValueError, match=r"bad.yaml:fusion: unknown key 'voxel'"):
        update_dataclass(RunConfig(), load_yaml(bad_key), str(bad_key))
    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("fusion: [unclosed\n")
    with pytest.raises(ValueError, match="broken.yaml: not valid YAML"):
        load_yaml(not_yaml)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_yaml(tmp_path / "missing.yaml")
