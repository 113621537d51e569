"""The few lines a run prints before it starts: the input found, the sources and settings
chosen and why, where the outputs go (the full configuration goes to config.yaml)."""

from __future__ import annotations

from pathlib import Path

import yaml

from mvs.adapt import describe_adaptation
from mvs.config import RunConfig, fusion_config
from mvs.io.settings import describe_capture
from mvs.poses import NORMALISED_UNITS, refined_to_colour_wanted
from mvs.types import Sequence

AUTO_REASONS = {
    "gt": "the sequence has poses",
    "rgbd": "the sequence has sensor depth but no poses",
    "track": "the sequence has neither poses nor sensor depth",
    "sensor": "the sequence has sensor depth",
    "learned": "the sequence has no sensor depth",
}
"""Why `resolve_sources` turns an `auto` pose or depth source into each source."""


def describe_run(requested: RunConfig, config: RunConfig, sequence: Sequence, out_dir: Path) -> str:
    """The few lines the console shows before a run: the input found, the sources and
    settings chosen (with the reason for the `auto` sources of `requested`), where the
    outputs go."""
    camera, tracking, depth = sequence.camera, config.tracking, config.depth
    yes_no = {True: "yes", False: "no"}
    selection = "" if config.sequence.frames == ":" else f" (--frames {config.sequence.frames})"
    lines = [
        f"input:   {sequence.root} ({sequence.layout} layout): {len(sequence)} frames{selection} of "
        f"{camera.width}x{camera.height}, fx {camera.fx:.1f} fy {camera.fy:.1f}; "
        f"sensor depth: {describe_capture(sequence)}, poses: {yes_no[sequence.has_poses]}"
    ]
    if sequence.skipped:
        lines.append(
            f"skipped: {len(sequence.skipped)} frame(s), {len(sequence.unreadable)} of them unreadable; "
            "report.json lists each with the reason"
        )
    why_poses = f" (auto: {AUTO_REASONS[tracking.poses]})" if requested.tracking.poses == "auto" else ""
    why_depth = f" (auto: {AUTO_REASONS[depth.source]})" if requested.depth.source == "auto" else ""
    if tracking.poses in ("gt", "rgbd"):
        units = "metres"
    elif tracking.scale in ("sensor", "gt"):
        units = f"metres, scale from the {'depth sensor' if tracking.scale == 'sensor' else 'ground truth'}"
    else:
        units = "metres as imported" if tracking.poses == "import" else NORMALISED_UNITS
    refined = ", refined to the colour images" if refined_to_colour_wanted(config) else ""
    lines.append(f"poses:   {tracking.poses}{why_poses}{refined}; units: {units}")
    if depth.source == "sensor":
        lines.append(f"depth:   sensor{why_depth}")
    else:
        model = f"model {depth.weights}" if depth.source == "learned" else f"{depth.num_hypotheses} planes"
        if depth.source == "learned" and depth.adapt.enabled:
            model += f", {describe_adaptation(depth.adapt)}"
        lines.append(
            f"depth:   {depth.source}{why_depth}: keyframes {depth.keyframes}, "
            f"at {depth.working_width}x{depth.working_height}, {model}"
        )
    lines.append(describe_settings(config))
    fusion = fusion_config(config)
    voxels = f"TSDF voxels of {fusion.voxel_size:g} m"
    if depth.source != "sensor" and "fusion.voxel_size" not in config.listed_keys:
        voxels += (
            f" for a room at {depth.keyframe.reference_depth:g} m, scaled to the scene's depth where it is measured"
        )
    lines += [
        f"fusion:  {voxels}, truncation {fusion.sdf_trunc_voxels:g} voxels, "
        f"depth up to {fusion.depth_max:g} m; device {config.device}",
        f"outputs: {out_dir} (the full configuration in config.yaml)",
    ]
    return "\n".join(lines)


def describe_settings(config: RunConfig) -> str:
    """One line: the settings the input chose (their reasons are in config.yaml and
    report.json), and how many the --config file and the flags set."""
    chosen = [s for s in config.settings if s.source == "input"]
    words = ", ".join(f"{s.key} {yaml_scalar(s.value)}" for s in chosen)
    line = f"settings: from the input: {words} (reasons in config.yaml)" if chosen else "settings: the defaults"
    by_user = [f"{sum(s.source == source for s in config.settings)} from {name}"
               for source, name in (("config", "--config"), ("flag", "flags"))
               if any(s.source == source for s in config.settings)]
    return f"{line}; {', '.join(by_user)}" if by_user else line


def yaml_scalar(value: object) -> str:
    """`value` as YAML writes it, on one line: true, 4.0, [6, 3, 1]."""
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
