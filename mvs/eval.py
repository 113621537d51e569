"""`python -m mvs.eval --out DIR`: score a run's outputs against the sequence's ground truth.

The sequence and frame selection default to those in `DIR/config.yaml`. Mesh metrics compare
`DIR/mesh.ply` with the reference: the synthetic room's `mesh.ply`, or for real RGB-D
sequences a mesh fused from sensor depth with ground-truth poses (cached as
`DIR/reference.ply`); the reference is culled to the surfaces the cameras saw.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import open3d as o3d

from fusion.export import write_json_atomic, write_ply
from fusion.metrics import MeshMetrics, mesh_metrics
from fusion.reference import reference_mesh
from mvs.config import RunConfig, load_yaml, update_dataclass
from mvs.pipeline import load_sequence
from mvs.types import Sequence


@dataclass
class EvalReport:
    """Every metric the run could be scored on; None where the ground truth is missing."""

    sequence: str
    mesh: MeshMetrics | None = None


def read_mesh(path: Path) -> o3d.geometry.TriangleMesh:
    """A triangle mesh from a PLY file, with an error naming the file when it is unusable."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mesh not found; run `python -m mvs.run` first")
    mesh = o3d.io.read_triangle_mesh(str(path))
    if len(mesh.triangles) == 0:
        raise ValueError(f"{path}: mesh has no triangles")
    return mesh


def evaluate_mesh(sequence: Sequence, config: RunConfig, out_dir: Path) -> MeshMetrics | None:
    """Mesh metrics at 5 cm against the (cached) reference; None without ground truth."""
    if not (sequence.has_mesh or (sequence.has_depth and sequence.has_poses)):
        return None
    cached = out_dir / "reference.ply"
    if cached.is_file():
        reference = read_mesh(cached)
    else:
        reference = reference_mesh(sequence, config.fusion)
        write_ply(cached, reference)
    return mesh_metrics(read_mesh(out_dir / "mesh.ply"), reference, threshold=0.05)


def evaluate(config: RunConfig, out_dir: Path) -> EvalReport:
    """Score the outputs in `out_dir` of a run made with `config`; writes `eval.json`."""
    sequence = load_sequence(config)
    report = EvalReport(sequence=str(sequence.root), mesh=evaluate_mesh(sequence, config, out_dir))
    write_json_atomic(out_dir / "eval.json", asdict(report))
    return report


def format_table(report: EvalReport) -> str:
    """The metrics as an aligned text table."""
    rows = [("sequence", report.sequence)]
    if report.mesh is not None:
        m = report.mesh
        rows += [
            ("mesh accuracy (m)", f"{m.accuracy:.4f}"),
            ("mesh completeness (m)", f"{m.completeness:.4f}"),
            (f"mesh precision @ {m.threshold * 100:.0f} cm", f"{m.precision:.3f}"),
            (f"mesh recall @ {m.threshold * 100:.0f} cm", f"{m.recall:.3f}"),
            (f"mesh F-score @ {m.threshold * 100:.0f} cm", f"{m.fscore:.3f}"),
        ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mvs.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder of a run")
    parser.add_argument("--sequence", help="sequence (default: the one in OUT/config.yaml)")
    parser.add_argument("--frames", help="START:STOP:STEP (default: the run's selection)")
    args = parser.parse_args(argv)
    config = RunConfig()
    try:
        saved = args.out / "config.yaml"
        if saved.is_file():
            update_dataclass(config, load_yaml(saved), str(saved))
        if args.sequence is not None:
            config.sequence.name = args.sequence
        if args.frames is not None:
            config.sequence.frames = args.frames
        report = evaluate(config, args.out)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"wrote {args.out / 'eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
