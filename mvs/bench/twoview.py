"""Two-view depth: redkitchen frame pairs, each reconstructed as a 2-frame sequence.

Every pair runs `python -m mvs.run --frames I:J+1:J-I --poses gt --depth learned --keyframes all`
through that command's own argument parsing and pipeline (`mvs.run.build_config`,
`mvs.pipeline.run`), in this process: a child per pair would spend most of its time importing.
Both frames are references, each the other's only source candidate. Each depth map written to
`depth/<index>.png` is scored against the frame's sensor depth within DEPTH_RANGE_M, over all
its pixels and over those `confidence/<index>.png` confirms; a frame the run gives no depth
map counts as an image with no depth.
"""

from __future__ import annotations

import statistics
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.export import CONFIDENCE_DIR, DEPTH_DIR, read_confidence_hw, read_depth_hw
from mvs.bench.report import Table, fmt
from mvs.bench.runs import BenchContext, command_line
from mvs.depth_metrics import depth_metrics
from mvs.io.layout import open_sequence
from mvs.pipeline import RunReport, run as run_pipeline
from mvs.run import build_config, parse_args
from mvs.types import Sequence

PAIRS = 100
GAP_FRAMES = (15, 60)
SEED = 0
DEPTH_RANGE_M = (0.5, 10.0)
GAP_BANDS = ((15, 29), (30, 44), (45, 60))
"""Rows of the table: pairs whose frames are this many frames apart (inclusive)."""
PROGRESS_EVERY = 10


@dataclass(frozen=True)
class Pair:
    """Two dataset frame indices, `first` < `second`."""

    first: int
    second: int

    @property
    def gap(self) -> int:
        return self.second - self.first

    @property
    def frames(self) -> str:
        """The `--frames` range that selects exactly the two frames."""
        return f"{self.first}:{self.second + 1}:{self.gap}"

    @property
    def name(self) -> str:
        return f"{self.first}_{self.second}"


@dataclass
class ImageScore:
    """Per-image AbsRel and delta < 1.25 of one depth map over the sensor depth in range;
    None where the run wrote no depth map (or it has no estimate on those pixels).
    confirmed_abs_rel, confirmed_share: the AbsRel over the pixels its confidence map
    confirms and their share of the pixels in range (None without a confidence map, or
    the AbsRel where none is confirmed)."""

    index: int
    abs_rel: float | None
    delta1: float | None
    confirmed_abs_rel: float | None = None
    confirmed_share: float | None = None


def choose_pairs(indices: list[int], count: int, gap_frames: tuple[int, int], seed: int) -> list[Pair]:
    """`count` distinct pairs of `indices` whose dataset indices are `gap_frames` (inclusive)
    apart, drawn uniformly (gap, then first frame) with `seed`, sorted by first frame."""
    available = set(indices)
    possible = {Pair(i, i + gap) for i in available for gap in range(gap_frames[0], gap_frames[1] + 1)
                if i + gap in available}
    if len(possible) < count:
        raise ValueError(f"expected at least {count} frame pairs {gap_frames[0]}-{gap_frames[1]} frames apart, "
                         f"the sequence has {len(possible)}")
    rng = np.random.default_rng(seed)
    ordered = sorted(indices)
    chosen: set[Pair] = set()
    while len(chosen) < count:
        gap = int(rng.integers(gap_frames[0], gap_frames[1] + 1))
        first = int(ordered[rng.integers(len(ordered))])
        pair = Pair(first, first + gap)
        if pair in possible:
            chosen.add(pair)
    return sorted(chosen, key=lambda p: (p.first, p.second))


def image_score(
    index: int,
    depth_hw: np.ndarray | None,
    gt_hw: np.ndarray,
    depth_range_m: tuple[float, float],
    confidence_hw: np.ndarray | None = None,
) -> ImageScore:
    """AbsRel and delta < 1.25 of one depth map (metres, 0 = none) over the pixels with
    sensor depth `gt_hw` in `depth_range_m` (metres, inclusive) and an estimate; with its
    `confidence_hw`, also over the pixels it confirms (confidence above 0)."""
    if depth_hw is None:
        return ImageScore(index, None, None)
    gt_in_range_hw = np.where((gt_hw >= depth_range_m[0]) & (gt_hw <= depth_range_m[1]), gt_hw, 0.0)
    metrics = depth_metrics(depth_hw, gt_in_range_hw, max_depth=depth_range_m[1])
    if metrics.num_pixels == 0:
        return ImageScore(index, None, None)
    if confidence_hw is None:
        return ImageScore(index, metrics.abs_rel, metrics.delta1)
    confirmed = depth_metrics(np.where(confidence_hw > 0, depth_hw, 0.0), gt_in_range_hw, max_depth=depth_range_m[1])
    confirmed_abs_rel = confirmed.abs_rel if confirmed.num_pixels else None
    return ImageScore(index, metrics.abs_rel, metrics.delta1, confirmed_abs_rel, confirmed.completeness)


def pair_args(kitchen: str, pair: Pair, out_dir: Path) -> list[str]:
    return ["--sequence", kitchen, "--frames", pair.frames, "--poses", "gt", "--depth", "learned",
            "--keyframes", "all", "--no-render", "--out", str(out_dir)]


def run_in_process(args: list[str], log: Path) -> RunReport:
    """`python -m mvs.run args` in this process, its console output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as stream, redirect_stdout(stream), redirect_stderr(stream):
        try:
            return run_pipeline(build_config(parse_args(args)))
        except Exception as error:
            raise RuntimeError(f"`{command_line('mvs.run', args)}` failed: {error}; see {log}") from error


def summary_row(label: str, scores: dict[Pair, list[ImageScore]]) -> tuple[list[str], dict]:
    """Cells and figures of a table row over `scores` (per pair, its two images)."""
    abs_rel = [s.abs_rel for pair_scores in scores.values() for s in pair_scores if s.abs_rel is not None]
    delta1 = [s.delta1 for pair_scores in scores.values() for s in pair_scores if s.delta1 is not None]
    no_depth = sum(all(s.abs_rel is None for s in pair_scores) for pair_scores in scores.values())
    confirmed = [s.confirmed_abs_rel for pair_scores in scores.values() for s in pair_scores
                 if s.confirmed_abs_rel is not None]
    shares = [s.confirmed_share for pair_scores in scores.values() for s in pair_scores if s.confirmed_share is not None]
    figures = {
        "pairs": len(scores),
        "images": 2 * len(scores),
        "images_with_depth": len(abs_rel),
        "pairs_without_depth": no_depth,
        "median_abs_rel": statistics.median(abs_rel) if abs_rel else None,
        "mean_abs_rel": statistics.fmean(abs_rel) if abs_rel else None,
        "mean_delta1": statistics.fmean(delta1) if delta1 else None,
        "median_confirmed_abs_rel": statistics.median(confirmed) if confirmed else None,
        "mean_confirmed_share": statistics.fmean(shares) if shares else None,
    }
    cells = [label, str(len(scores)), f"{len(abs_rel)} of {2 * len(scores)}", str(no_depth),
             fmt(figures["median_abs_rel"]), fmt(figures["mean_abs_rel"]), fmt(figures["mean_delta1"]),
             fmt(figures["median_confirmed_abs_rel"]), fmt(figures["mean_confirmed_share"])]
    return cells, figures


def score_pair(sequence: Sequence, pair: Pair, out_dir: Path) -> list[ImageScore]:
    """The scores of the pair's two frames (None where the run wrote no depth map)."""
    scores = []
    for index in (pair.first, pair.second):
        path, confidence_path = out_dir / DEPTH_DIR / f"{index}.png", out_dir / CONFIDENCE_DIR / f"{index}.png"
        scores.append(image_score(
            index, read_depth_hw(path) if path.is_file() else None, sequence.load_frame(index).depth_hw,
            DEPTH_RANGE_M, read_confidence_hw(confidence_path) if confidence_path.is_file() else None,
        ))
    return scores


def run(context: BenchContext) -> tuple[Table, dict]:
    """The two-view table and its figures (per pair: its frames, scores, skipped frames and seconds)."""
    sequence = open_sequence(context.kitchen)
    pairs = choose_pairs(sequence.indices, PAIRS, GAP_FRAMES, SEED)
    work = Path(context.work_dir) / "depth" / "twoview"
    scores: dict[Pair, list[ImageScore]] = {}
    data: dict = {"pairs": {}, "seed": SEED, "gap_frames": list(GAP_FRAMES), "depth_range_m": list(DEPTH_RANGE_M)}
    print(f"  two views: {len(pairs)} redkitchen pairs {GAP_FRAMES[0]}-{GAP_FRAMES[1]} frames apart, "
          f"each run in this process (logs in {work}/<first>_<second>/run.log)", flush=True)
    start = time.perf_counter()
    for number, pair in enumerate(pairs, 1):
        out_dir = work / pair.name
        pair_start = time.perf_counter()
        report = run_in_process(pair_args(context.kitchen, pair, out_dir), out_dir / "run.log")
        scores[pair] = score_pair(sequence, pair, out_dir)
        data["pairs"][pair.name] = {
            "frames": [pair.first, pair.second],
            "abs_rel": [s.abs_rel for s in scores[pair]],
            "delta1": [s.delta1 for s in scores[pair]],
            "confirmed_abs_rel": [s.confirmed_abs_rel for s in scores[pair]],
            "confirmed_share": [s.confirmed_share for s in scores[pair]],
            "skipped": report.skipped,
            "seconds": time.perf_counter() - pair_start,
        }
        if number % PROGRESS_EVERY == 0 or number == len(pairs):
            done = [s.abs_rel for pair_scores in scores.values() for s in pair_scores if s.abs_rel is not None]
            print(f"    {number}/{len(pairs)} pairs, {time.perf_counter() - start:.0f} s; median AbsRel so far "
                  f"{fmt(statistics.median(done) if done else None)}", flush=True)
    seconds = time.perf_counter() - start
    first = pairs[0]
    table = Table(
        f"Two views: {len(pairs)} redkitchen frame pairs {GAP_FRAMES[0]}-{GAP_FRAMES[1]} frames apart, "
        "each a 2-frame sequence, ground-truth poses, learned depth",
        [command_line("mvs.run", pair_args(context.kitchen, first, work / first.name)) + "  # the first pair"],
        ["frames apart", "pairs", "images with depth", "pairs with no depth", "median AbsRel", "mean AbsRel",
         "mean delta < 1.25", "median AbsRel, confirmed", "mean confirmed share"],
        "lrrrrrrrr",
        notes=f"Pairs drawn with seed {SEED} (the gap uniform in {GAP_FRAMES[0]}-{GAP_FRAMES[1]} frames, then the "
              "first frame), each run with `--frames I:J+1:J-I` through `mvs.run`'s own parsing and pipeline in the "
              f"benchmark process ({seconds:.0f} s, {seconds / len(pairs):.1f} s a pair); both frames are references. "
              f"AbsRel and delta per image, over the pixels with sensor depth within {DEPTH_RANGE_M[0]:g}-"
              f"{DEPTH_RANGE_M[1]:g} m; a pair with no depth has a depth map for neither frame. Confirmed: "
              "the pixels of each image its confidence map (`confidence/<index>.png`) confirms, the ones a run "
              "fuses, and their share of the pixels in range.",
    )
    data["rows"] = {}
    for low, high in GAP_BANDS:
        band = {pair: s for pair, s in scores.items() if low <= pair.gap <= high}
        cells, data["rows"][f"{low}-{high}"] = summary_row(f"{low}-{high}", band)
        table.add_row(*cells)
    cells, data["rows"]["all"] = summary_row(f"all ({GAP_FRAMES[0]}-{GAP_FRAMES[1]})", scores)
    table.add_row(*cells)
    data["seconds"] = seconds
    return table, data
