"""`python -m mvs.run`: reconstruct a sequence into a mesh, a point cloud and a trajectory.

With no arguments it generates (once, then cached) and reconstructs `synthetic/room0`.
Settings come from the dataclass defaults, then what the input is (`mvs/io/settings.py`), then
`--config YAML`, then the flags below.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from mvs.config import RunConfig, Setting, flat_keys, load_yaml, resolve_device, update_dataclass
from mvs.pipeline import output_dir, run
from mvs.view import DisplayUnavailable, load_scene, show_window
from slam.result import TrackingFailed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mvs.run", description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", help="name under sequences/ or a path (default synthetic/room0)")
    parser.add_argument("--out", help="output folder (default outputs/<sequence>)")
    parser.add_argument("--poses", choices=["auto", "gt", "track", "rgbd", "colmap", "import"],
                        help="where camera poses come from")
    parser.add_argument("--pose-file", help="with --poses import: a COLMAP model folder (sparse/0) or a transforms.json")
    parser.add_argument("--scale", choices=["none", "sensor", "gt"],
                        help="how the scale of track, colmap or imported poses is fixed")
    parser.add_argument("--depth", choices=["auto", "sensor", "classic", "learned"], help="where depth comes from")
    parser.add_argument("--frames", help="START:STOP:STEP over dataset frame indices")
    parser.add_argument("--intrinsics", help="camera intrinsics: fx,fy,cx,cy (pixels) or a calibration YAML; auto: "
                        "the focal length estimated from the frames (the default where the input has none)")
    parser.add_argument("--keyframes", choices=["auto", "all"], help="which frames get a depth map")
    parser.add_argument("--weights", help="the learned depth model: a name under mvs/weights/ or a .pt file "
                        "(such as a run's adapted.pt)")
    parser.add_argument("--adapt", action="store_true",
                        help="fine-tune the learned depth model on the sequence's own frames and poses first")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="torch device")
    parser.add_argument("--voxel-size", type=float, help="TSDF voxel size in metres")
    parser.add_argument("--config", type=Path, help="YAML file overriding the defaults")
    parser.add_argument("--no-render", action="store_true", help="leave the rendered mesh view out of report.html")
    parser.add_argument("--view", action="store_true", help="open the viewer on the result at the end")
    parser.add_argument("--verbose", action="store_true",
                        help="also print the full resolved configuration (always saved to config.yaml)")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> RunConfig:
    """Defaults, then the YAML file, then the command line; `settings` lists the keys the
    file and the flags set, which the input's choices (made when the sequence is opened,
    `mvs.io.settings`) leave alone."""
    config = RunConfig()
    file_values = {} if args.config is None else load_yaml(args.config)
    update_dataclass(config, file_values, str(args.config))
    overrides = {
        "sequence": {"name": args.sequence, "frames": args.frames, "intrinsics": args.intrinsics},
        "tracking": {"poses": args.poses, "pose_file": args.pose_file, "scale": args.scale},
        "depth": {
            "source": args.depth,
            "keyframes": args.keyframes,
            "weights": args.weights,
            "adapt": {"enabled": True if args.adapt else None},
        },
        "fusion": {"voxel_size": args.voxel_size},
        "report": {"render_mesh": False if args.no_render else None},
        "out": args.out,
        "device": args.device,
    }
    flag_values = drop_unset(overrides)
    update_dataclass(config, flag_values, "command line")
    chosen = {key: Setting(key, value, "config", str(args.config)) for key, value in flat_keys(file_values).items()}
    chosen.pop("settings", None)  # a saved config.yaml's record of an earlier run
    chosen.update({key: Setting(key, value, "flag", "command line") for key, value in flat_keys(flag_values).items()})
    config.settings = list(chosen.values())
    config.device = resolve_device(config.device)
    return config


def drop_unset(values: dict) -> dict:
    """The flags that were given: nested mappings without their None entries."""
    kept = {}
    for key, value in values.items():
        if isinstance(value, dict):
            value = drop_unset(value)
            if value:
                kept[key] = value
        elif value is not None:
            kept[key] = value
    return kept


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        args = parse_args(argv)
        config = build_config(args)
        report = run(config, verbose=args.verbose)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrackingFailed as failure:
        print(f"error: {failure}; the poses found so far are in trajectory.txt", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: wrote what was fused so far (see report.json)", file=sys.stderr)
        return 130
    print(f"fused {report.frames_fused} of {report.frames_selected} frames "
          f"({report.fusion_frames_per_second:.0f} frames/s); units: {report.units}")
    if report.skipped:
        print(f"skipped {len(report.skipped)} frame(s); report.json lists each with the reason")
    print("wrote:")
    for path in report.outputs:
        print(f"  {path}")
    if args.view:
        try:
            show_window(load_scene(output_dir(config)))
        except DisplayUnavailable as error:
            print(f"not opening the viewer: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
