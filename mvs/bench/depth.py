"""`depth` suite: learned vs classic vs sensor depth on redkitchen, with ground-truth poses,
and the learned depth at our own monocular poses (the whole pipeline from the images); the
learned depth with and without `--adapt` on redkitchen and the tabletop sample; two views.

Every run uses default settings (no `--config`): nothing in the depth path is set per
dataset, and what the input itself calls for is chosen by `mvs.run` (mvs/io/settings.py).
Accuracy, mesh F-score, time per stage and peak memory come from `python -m mvs.run` and
`python -m mvs.eval` children; milliseconds per keyframe of each step at 320x240 input,
64 hypotheses and 2 sources are timed in this process on one keyframe (median of repeats),
and the two-view pairs run in this process too (`mvs.bench.twoview`), after the children.

Rows come in groups (`GROUPS`) that `context.only` selects.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fusion.export import DEPTH_DIR, read_depth_hw
from mvs.bench import twoview
from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext
from mvs.bench.track import MeasuredRuns, selected
from mvs.config import DepthConfig
from mvs.costvolume import inverse_depth_hypotheses_d, same_camera_sweep, zncc_cost_volume
from mvs.depth import ClassicDepthEstimator, LearnedDepthEstimator, grey_b1hw, prepare_inputs
from mvs.depth_metrics import DepthMetricsAccumulator
from mvs.io.layout import open_sequence
from mvs.local_sweep import local_sweep
from mvs.regressors import classic_regress
from mvs.types import Frame, Sequence

FRAMES = "0:1000:2"
RUNS = {
    "sensor": ("rk_sensor", ["--depth", "sensor"]),
    "classic": ("rk_classic", ["--poses", "gt", "--depth", "classic"]),
    "learned": ("rk_learned", ["--poses", "gt", "--depth", "learned"]),
    "learned, `--poses track --scale sensor`": ("rk_track_learned", ["--depth", "learned", "--poses", "track", "--scale", "sensor"]),
}
"""Row label: output folder and the run's own arguments (on redkitchen FRAMES)."""
ADAPT_SEQUENCES = {
    f"redkitchen {FRAMES}": ("rk_learned", "kitchen"),
    "tabletop sample (50 frames)": ("tabletop_learned", "tabletop"),
}
"""Row label of the `--adapt` table: output folder (with `_adapt` appended for the adapted
run; the kitchen's unadapted run is the `learned` row of RUNS) and the sequence."""
GROUPS = ("kitchen", "adapt", "twoview")
"""Groups of tables `--only` selects: the redkitchen comparison (with the timed keyframe),
the `--adapt` table, the two-view table."""
REPEATS = 10


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of `run()` in milliseconds, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def posed(sequence: Sequence, position: int) -> Frame:
    frame = sequence[position]
    return replace(frame, world_T_cam_44=sequence.gt_world_T_cam_44[frame.index])


def keyframe_table(sequence: Sequence, repeats: int) -> tuple[Table, dict]:
    """Per-keyframe milliseconds of the classic sweep, its regressor and the learned model."""
    config = DepthConfig()
    reference, sources = posed(sequence, 20), [posed(sequence, 10), posed(sequence, 30)]
    camera = sequence.camera
    classic = ClassicDepthEstimator(config, "cpu")
    width, height = config.working_width // config.classic_downscale, config.working_height // config.classic_downscale
    inputs = prepare_inputs(reference, sources, camera, width, height, torch.device("cpu"))
    depth_d = inverse_depth_hypotheses_d(config.near, config.far, config.num_hypotheses, torch.device("cpu"))

    def cost_volume():
        sweep = same_camera_sweep(inputs.K_b33, inputs.src_T_ref_bn44, depth_d, height, width)
        return zncc_cost_volume(grey_b1hw(inputs.ref_image_b3hw), grey_b1hw(inputs.src_images_bn3hw), sweep,
                                config.zncc_window)

    rows = []
    with torch.no_grad():
        volume = cost_volume()
        rows.append((f"classic: ZNCC cost volume at {width}x{height}", median_ms(cost_volume, repeats)))
        rows.append(("classic: winner-take-all regressor + filtering",
                     median_ms(lambda: classic_regress(volume, inputs.ref_image_b3hw, config.classic), repeats)))
    rows.append(("classic: whole keyframe (resize, sweep, regress, upsample)",
                 median_ms(lambda: classic.estimate(reference, sources, camera), repeats)))
    learned = LearnedDepthEstimator(config, "cpu")
    size = (config.working_height, config.working_width)
    working = prepare_inputs(reference, sources, camera, size[1], size[0], torch.device("cpu"))
    start_hw = torch.from_numpy(learned.estimate(reference, sources, camera).depth_hw)
    start_hw = F.interpolate(start_hw[None, None], size=size, mode="nearest")[0, 0]
    with torch.no_grad():
        rows.append((f"learned: local ZNCC sweep at {config.working_width}x{config.working_height}",
                     median_ms(lambda: local_sweep(start_hw, grey_b1hw(working.ref_image_b3hw)[0],
                                                   grey_b1hw(working.src_images_bn3hw)[0], working.K_b33[0],
                                                   working.src_T_ref_bn44[0], config.local_sweep), repeats)))
    rows.append(("learned: whole keyframe (features, cost volume, U-Net, local sweep, upsample)",
                 median_ms(lambda: learned.estimate(reference, sources, camera), repeats)))
    table = Table(
        f"Milliseconds per keyframe ({config.working_width}x{config.working_height} input, "
        f"{config.num_hypotheses} hypotheses, 2 sources, CPU)",
        [],
        ["step", "ms per keyframe"],
        "lr",
        notes=f"Median of {repeats} repeats on redkitchen frame {reference.index} with sources "
              f"{sources[0].index} and {sources[1].index}, in the benchmark process.",
    )
    for name, ms in rows:
        table.add_row(name, fmt(ms, 0))
    return table, {name: ms for name, ms in rows}


def same_pixels_table(sequence: Sequence, learned_dir: Path, classic_dir: Path) -> tuple[Table, dict]:
    """Learned against classic depth on the pixels where classic gives an estimate, over the
    keyframes both runs estimated (sensor depth within (0, 10] m)."""
    names = sorted({p.name for p in (learned_dir / DEPTH_DIR).glob("*.png")} & {p.name for p in (classic_dir / DEPTH_DIR).glob("*.png")})
    learned_on_classic, classic = DepthMetricsAccumulator(), DepthMetricsAccumulator()
    for name in names:
        learned_hw, classic_hw = read_depth_hw(learned_dir / DEPTH_DIR / name), read_depth_hw(classic_dir / DEPTH_DIR / name)
        gt_hw = sequence.load_frame(int(Path(name).stem)).depth_hw
        learned_on_classic.add(np.where(classic_hw > 0, learned_hw, 0.0), gt_hw)
        classic.add(classic_hw, gt_hw)
    table = Table(
        "Learned and classic depth on the same pixels: the keyframes of both runs above",
        [],
        ["depth", "AbsRel", "delta < 1.25", "delta < 1.25^2", "completeness"],
        "lrrrr",
        notes=f"The learned maps of the {len(names)} keyframes both runs estimated, restricted to the pixels the "
              "classic sweep estimates (classic leaves out the pixels its confidence rejects), against the same "
              "sensor depth.",
    )
    data = {}
    for label, accumulator in (("classic", classic), ("learned, on classic's pixels", learned_on_classic)):
        metrics = accumulator.result()
        table.add_row(label, fmt(metrics.abs_rel), fmt(metrics.delta1), fmt(metrics.delta2), fmt(metrics.completeness))
        data[label] = {"abs_rel": metrics.abs_rel, "delta1": metrics.delta1, "completeness": metrics.completeness}
    return table, data


def sequence_args(context: BenchContext, sequence: str) -> list[str]:
    """`--sequence` (and `--frames`) of "kitchen" (redkitchen FRAMES) or "tabletop" (all frames)."""
    if sequence == "kitchen":
        return ["--sequence", context.kitchen, "--frames", FRAMES]
    return ["--sequence", context.tabletop]


CONFIRMED_NOTE = (
    "Confirmed: the pixels a map's confidence (`confidence/<index>.png`; for learned depth the local sweep's "
    "ZNCC) confirms, which are the ones fused, with their share of the ground-truth pixels; the other "
    "columns score every pixel of the saved maps."
)


def out_dir(context: BenchContext, folder: str) -> Path:
    return Path(context.work_dir) / "depth" / folder


def kitchen_runs(context: BenchContext) -> dict[str, tuple[list[str], Path]]:
    """Row label of RUNS: the run's arguments and output folder."""
    return {label: ([*sequence_args(context, "kitchen"), *args], out_dir(context, folder))
            for label, (folder, args) in RUNS.items()}


def kitchen_tables(context: BenchContext, runs: MeasuredRuns) -> tuple[list[Table], dict]:
    """Sensor, classic and learned depth on redkitchen, the same-pixels comparison, the time
    per stage, and the timed keyframe."""
    out_dirs = {label: out for label, (_, out) in kitchen_runs(context).items()}
    measured = {label: runs.get(args, out) for label, (args, out) in kitchen_runs(context).items()}
    accuracy = Table(
        f"Depth and mesh accuracy: redkitchen {FRAMES}, default settings, ground-truth poses unless the row "
        "says otherwise",
        [f"{m.run.command} && python -m mvs.eval --out {out_dirs[label]}" for label, m in measured.items()],
        ["depth", "AbsRel", "delta < 1.25", "delta < 1.25^2", "completeness", "AbsRel, confirmed", "confirmed",
         "mesh F-score @ 5 cm", "keyframes"],
        "lrrrrrrrr",
        notes="Depth against the Kinect depth within (0, 10] m over the keyframes' maps; mesh against the mesh "
              "fused from sensor depth with ground-truth poses, culled to the views. The sensor row fuses the "
              "sensor's own maps (every frame): the ceiling of the mesh score. The tracked row's mesh is first "
              "aligned to the ground truth by the SE(3) alignment of its trajectory (as `mvs.eval` does). No "
              "`--config`: the input chooses the fusion range and the refinement of its poses to the colour "
              "images from colour alone (config.yaml of each run gives the reasons). " + CONFIRMED_NOTE,
    )
    stages = Table(
        f"Time per stage and peak memory of those runs (seconds; {FRAMES} = 500 frames)",
        [],
        ["depth", "poses", "depth", "fusion", "write", "wall (whole command)", "ms per depth map",
         "fusion frames/s", "peak RSS"],
        "lrrrrrrrr",
    )
    data = {"frames": FRAMES, "runs": {}}
    for source, m in measured.items():
        depth_metrics = m.evaluation.get("depth") or {}
        confirmed = m.evaluation.get("depth_confirmed") or {}
        accuracy.add_row(
            source, fmt(depth_metrics.get("abs_rel")), fmt(depth_metrics.get("delta1")),
            fmt(depth_metrics.get("delta2")), fmt(depth_metrics.get("completeness")), fmt(confirmed.get("abs_rel")),
            fmt(confirmed.get("completeness")), fmt(m.metric("mesh", "fscore")),
            str(m.report["keyframes"]) if source != "sensor" else "—",
        )
        depth_maps = m.report["depth_maps"]
        stages.add_row(
            source, fmt(m.stage_seconds("poses"), 1), fmt(m.stage_seconds("depth"), 1),
            fmt(m.stage_seconds("fusion"), 1), fmt(m.stage_seconds("write"), 1), fmt(m.run.seconds, 1),
            fmt(m.stage_seconds("depth") / depth_maps * 1000, 0) if depth_maps else "—",
            fmt(m.report["fusion_frames_per_second"], 0), f"{m.run.peak_rss_mb:.0f} MB",
        )
        data["runs"][source] = {"command": m.run.command, "seconds": m.run.seconds, "peak_rss_mb": m.run.peak_rss_mb,
                                "report": m.report, "eval": m.evaluation}
    sequence = open_sequence(context.kitchen, frames=FRAMES)
    same_pixels, data["same_pixels"] = same_pixels_table(sequence, out_dirs["learned"], out_dirs["classic"])
    print(f"  timing one keyframe {REPEATS} times", flush=True)
    keyframes, data["ms_per_keyframe"] = keyframe_table(open_sequence(context.kitchen), REPEATS)
    return [accuracy, same_pixels, stages, keyframes], data


def adapt_runs(context: BenchContext) -> list[tuple[str, str, list[str], Path]]:
    """The rows of the `--adapt` table: label, output folder, the run's arguments and output folder."""
    return [(label, folder + suffix, [*sequence_args(context, sequence), "--poses", "gt", "--depth", "learned", *flag],
             out_dir(context, folder + suffix))
            for label, (folder, sequence) in ADAPT_SEQUENCES.items()
            for suffix, flag in (("", []), ("_adapt", ["--adapt"]))]


def adapt_table(context: BenchContext, runs: MeasuredRuns) -> tuple[Table, dict]:
    """Learned depth with default settings and ground-truth poses, without and with `--adapt`,
    on redkitchen FRAMES and the tabletop sample."""
    rows = adapt_runs(context)
    measured = {folder: runs.get(args, out) for _, folder, args, out in rows}
    table = Table(
        "Learned depth with default settings (no `--config`), ground-truth poses, without and with `--adapt`",
        [f"{m.run.command} && python -m mvs.eval --out {out_dir(context, folder)}" for folder, m in measured.items()],
        ["sequence", "`--adapt`", "AbsRel", "delta < 1.25", "AbsRel, confirmed", "confirmed", "mesh F-score @ 5 cm",
         "keyframes", "`--adapt` took", "adaptation steps", "wall (whole command)"],
        "llrrrrrrrrr",
        notes="Depth against the sensor depth within (0, 10] m over the keyframes' maps; mesh against the mesh fused "
              "from sensor depth with ground-truth poses. `--adapt` took: the seconds of the fine-tuning "
              "(report.json `adaptation`), within the wall time of the whole command. " + CONFIRMED_NOTE,
    )
    data = {}
    for label, folder, args, _ in rows:
        m = measured[folder]
        adaptation = m.report.get("adaptation") or {}
        depth_metrics = m.evaluation.get("depth") or {}
        confirmed = m.evaluation.get("depth_confirmed") or {}
        adapted = "--adapt" in args
        table.add_row(
            label, "yes" if adapted else "no", fmt(depth_metrics.get("abs_rel")), fmt(depth_metrics.get("delta1")),
            fmt(confirmed.get("abs_rel")), fmt(confirmed.get("completeness")), fmt(m.metric("mesh", "fscore")), str(m.report["keyframes"]),
            fmt(adaptation.get("seconds"), 0, " s") if adapted else "—",
            str(adaptation.get("steps", "—")) if adapted else "—", fmt(m.run.seconds, 0, " s"),
        )
        data[folder] = {"command": m.run.command, "seconds": m.run.seconds, "adaptation": adaptation,
                        "depth": depth_metrics, "depth_confirmed": confirmed or None, "mesh": m.evaluation.get("mesh"), "keyframes": m.report["keyframes"]}
    return table, data


def run(context: BenchContext) -> tuple[list[Table], dict]:
    """The groups `context.only` selects (all without it), in the order of `GROUPS`. Every
    child runs before this process loads a model (see `mvs.bench.runs` on peak memory)."""
    runs = MeasuredRuns()
    children = [*(kitchen_runs(context).values() if selected(context, "kitchen") else ()),
                *((args, out) for _, _, args, out in (adapt_runs(context) if selected(context, "adapt") else ()))]
    for args, out in children:
        runs.get(args, out)
    tables: list[Table] = []
    data: dict = {}
    if selected(context, "kitchen"):
        kitchen, kitchen_data = kitchen_tables(context, runs)
        tables += kitchen
        data.update(kitchen_data)
    if selected(context, "adapt"):
        table, data["adapt"] = adapt_table(context, runs)
        tables.append(table)
    if selected(context, "twoview"):
        table, data["twoview"] = twoview.run(context)
        tables.append(table)
    return tables, data
