"""`python -m mvs.batch SEQUENCE... [-- MVS.RUN FLAGS]`: reconstruct many sequences on Ray.

SEQUENCE is a folder or file as `mvs.run --sequence` takes it, a glob ("sequences/scannet/
scene0*"), or a list file (.txt, one sequence per line, e.g. a ScanNet split file). Each
scene is one Ray task that runs the `mvs.run` pipeline in a worker process of its own and
writes to outputs/<scene>/ as `mvs.run` would; the flags after `--` go to every scene's
`mvs.run`. Scenes whose report.json says complete are skipped unless --force; the summary is
outputs/batch/summary.csv and summary.html.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path

from mvs.batch.driver import BatchSettings, import_ray, run_batch
from mvs.batch.scenes import expand_entries, make_scenes
from mvs.batch.summary import totals
from mvs.pipeline import OUTPUTS_DIR
from mvs.run import parse_args as parse_run_args
from mvs.run import raise_keyboard_interrupt

MEMORY_PATTERN = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt])i?b?", re.IGNORECASE)
BATCH_OWNED_FLAGS = {"sequence": "--sequence", "out": "--out", "view": "--view"}


def parse_memory(text: str) -> int:
    """Bytes from a size with a binary unit: "512M", "4G", "4GiB", "1.5GB"."""
    match = MEMORY_PATTERN.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 4G, got '{text}'")
    return int(float(match.group(1)) * 1024 ** ("kmgt".index(match.group(2).lower()) + 1))


def parse_args(argv: list[str]) -> argparse.Namespace:
    own, run_flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m mvs.batch", description=__doc__.splitlines()[0],
                                     usage="%(prog)s SEQUENCE... [options] [-- MVS.RUN FLAGS]")
    parser.add_argument("sequences", nargs="+", metavar="SEQUENCE",
                        help="sequence folder or file, glob, or list file (.txt, one per line)")
    parser.add_argument("--root", type=Path, help="folder the relative lines of a list file are in")
    parser.add_argument("--outputs", type=Path, default=OUTPUTS_DIR,
                        help="folder of the scenes' outputs and of batch/ (default outputs; on a cluster, "
                             "a path every node can write)")
    parser.add_argument("--eval", action="store_true", help="run mvs.eval after each scene")
    parser.add_argument("--force", action="store_true", help="rerun scenes that are already complete")
    parser.add_argument("--address", help="join this Ray cluster (e.g. auto, or ray://head:10001) instead of "
                                          "starting Ray on this machine")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--cpus-per-scene", type=float, default=1.0, help="Ray num_cpus of each scene (default 1)")
    parser.add_argument("--gpus-per-scene", type=float, default=0.0, help="Ray num_gpus of each scene (default 0)")
    parser.add_argument("--memory-per-scene", type=parse_memory, help="Ray memory of each scene, e.g. 4G")
    args = parser.parse_args(own)
    args.run_flags = run_flags
    return args


def check_run_flags(flags: list[str]) -> None:
    """Parse the flags for `mvs.run` as it would (exits on a bad one) and refuse those the
    batch sets for each scene."""
    run_args = parse_run_args(flags)
    owned = [flag for name, flag in BATCH_OWNED_FLAGS.items() if getattr(run_args, name) not in (None, False)]
    if owned:
        raise ValueError(f"{', '.join(owned)}: set by mvs.batch for each scene, not a flag to pass through "
                         "(--outputs chooses where scenes write)")


def settings_from(args: argparse.Namespace) -> BatchSettings:
    if args.address and args.num_cpus is not None:
        raise ValueError("--num-cpus sizes a local Ray instance; a cluster at --address has its own CPUs")
    return BatchSettings(outputs_root=args.outputs, run_flags=tuple(args.run_flags), evaluate=args.eval,
                         force=args.force, address=args.address, num_cpus=args.num_cpus,
                         cpus_per_scene=args.cpus_per_scene, gpus_per_scene=args.gpus_per_scene,
                         memory_per_scene=args.memory_per_scene)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import_ray()
        check_run_flags(args.run_flags)
        settings = settings_from(args)
        scenes = make_scenes(expand_entries(args.sequences, args.root), args.outputs)
    except (ImportError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    where = f"the Ray cluster at {args.address}" if args.address else "a local Ray instance"
    print(f"{len(scenes)} scenes on {where}, {args.cpus_per_scene:g} CPU(s) each; "
          f"mvs.run flags: {' '.join(args.run_flags) or '(none)'}", flush=True)
    try:
        outcome = run_batch(scenes, settings)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    total = totals(outcome.results, outcome.elapsed_seconds)
    print(f"{len(scenes)} scenes: {total.status_text()}; {total.elapsed_seconds:.0f} s, "
          f"{total.scenes_per_hour:.1f} scenes/hour")
    failed = [r for r in outcome.results if r.status == "failed"]
    for result in failed:
        print(f"failed: {result.scene}: {result.error} (log: {Path(result.out_dir) / 'batch.log'})", file=sys.stderr)
    print("wrote:")
    for path in outcome.written:
        print(f"  {path}")
    print(f"  each scene's outputs in {args.outputs}/<scene>/ (report.json, mesh.ply, trajectory.txt, batch.log)")
    if outcome.interrupted:
        print("interrupted: the running scenes were cancelled; run the same command again to continue",
              file=sys.stderr)
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
