"""`<out>/report.html`: a run's results on one self-contained page.

The page shows the metrics (those of `mvs.eval` when it has scored the run, else the run's
own counts), the seconds per stage from `report.json`, a rendered view of the mesh
(`mesh.png`, the overview `python -m mvs.view --screenshot` renders on the CPU), a few depth maps
colourised with one range per row beside the input image and the sensor depth, and the
trajectory plot `mvs.eval` draws. Images are embedded as base64 PNG, so the file opens
anywhere on its own. `report.json` keeps the numbers.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from fusion.export import CONFIDENCE_DIR, DEPTH_DIR, read_confidence_hw, read_depth_hw, write_text_atomic
from mvs.types import Sequence
from mvs.view import load_scene, screenshot

logger = logging.getLogger(__name__)
DEPTH_ROWS = 4
THUMBNAIL_WIDTH = 320
MESH_VIEW_SIZE = (960, 720)
NO_DEPTH_RGB = (40, 40, 40)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0 0.4em 0.6em 0; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
.note { color: #777; font-size: 0.9em; }
"""


def png_data_uri(image_hw3: np.ndarray) -> str:
    """An RGB uint8 image as a `data:image/png;base64,...` URI."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image_hw3, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode a {image_hw3.shape} image as PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def colourise_depth_hw3(depth_hw: np.ndarray, near: float, far: float) -> np.ndarray:
    """(H, W, 3) uint8 RGB turbo colours of depths (metres) over [near, far]; 0 shows dark grey."""
    scaled_hw = np.clip((depth_hw - near) / max(far - near, 1e-9), 0.0, 1.0)
    colours_hw3 = cv2.cvtColor(cv2.applyColorMap(np.rint(scaled_hw * 255).astype(np.uint8), cv2.COLORMAP_TURBO),
                               cv2.COLOR_BGR2RGB)
    colours_hw3[~(depth_hw > 0)] = NO_DEPTH_RGB
    return colours_hw3


def thumbnail_hw3(image_hw3: np.ndarray) -> np.ndarray:
    """The image resized to THUMBNAIL_WIDTH pixels wide (nearest neighbour keeps depth edges)."""
    height = round(image_hw3.shape[0] * THUMBNAIL_WIDTH / image_hw3.shape[1])
    return cv2.resize(image_hw3, (THUMBNAIL_WIDTH, height), interpolation=cv2.INTER_NEAREST)


def depth_range(depths_hw: list[np.ndarray]) -> tuple[float, float]:
    """The 2nd to 98th percentile (metres) of the valid depths of one row of maps."""
    valid_n = np.concatenate([d[d > 0] for d in depths_hw])
    if valid_n.size == 0:
        return 0.0, 1.0
    near, far = np.percentile(valid_n, [2, 98])
    return float(near), float(max(far, near + 1e-3))


def figure(uri: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def depth_rows_html(out_dir: Path, sequence: Sequence | None, fused: list[int], metric: bool) -> str:
    """Up to DEPTH_ROWS evenly spaced frames: input, estimate (`depth/<index>.png`), the
    part of it its confidence map confirms (`confidence/<index>.png`) and sensor depth, each
    row colourised over one range; frames of `fused` when there are no
    estimates (a `--depth sensor` run). `metric` says the estimates are in metres; in
    tracking units they are shown without the sensor depth."""
    if sequence is None:
        return '<p class="note">No input frames available.</p>'
    estimated = sorted(int(p.stem) for p in (out_dir / DEPTH_DIR).glob("*.png") if p.stem.isdigit())
    candidates = estimated or fused
    if not candidates:
        return '<p class="note">No depth maps.</p>'
    chosen = [candidates[round(i)] for i in np.linspace(0, len(candidates) - 1, min(DEPTH_ROWS, len(candidates)))]
    rows = []
    for index in dict.fromkeys(chosen):
        try:
            frame = sequence.load_frame(index)
        except (ValueError, OSError) as error:
            rows.append(f'<p class="note">Frame {index}: {html.escape(str(error))}</p>')
            continue
        maps = []
        if estimated:
            try:
                estimate_hw = read_depth_hw(out_dir / DEPTH_DIR / f"{index}.png")
            except ValueError:
                pass  # an unreadable map is left out of its row
            else:
                maps.append(("estimate", estimate_hw))
                confidence_path = out_dir / CONFIDENCE_DIR / f"{index}.png"
                if confidence_path.is_file():
                    confirmed_hw = np.where(read_confidence_hw(confidence_path) > 0, estimate_hw, 0.0)
                    share = np.count_nonzero(confirmed_hw) / max(np.count_nonzero(estimate_hw), 1)
                    maps.append((f"confirmed: {share:.0%} of the estimate", confirmed_hw))
        if frame.depth_hw is not None and (metric or not estimated):
            maps.append(("sensor depth", frame.depth_hw))
        cells = [figure(png_data_uri(thumbnail_hw3(frame.image_hw3)), f"frame {index}: input")]
        if maps:
            near, far = depth_range([depth_hw for _, depth_hw in maps])
            unit = "m" if metric or not estimated else "units"
            cells += [figure(png_data_uri(thumbnail_hw3(colourise_depth_hw3(depth_hw, near, far))),
                             f"{name}, {near:.2f} {unit} (blue) to {far:.2f} {unit} (red)") for name, depth_hw in maps]
        rows.append("<div>" + "".join(cells) + "</div>")
    return "\n".join(rows)


def mesh_view_html(out_dir: Path, render: bool) -> str:
    """The mesh rendered from above (`mesh.png`, re-rendered when older than `mesh.ply`)."""
    mesh_path, png_path = out_dir / "mesh.ply", out_dir / "mesh.png"
    if not mesh_path.is_file():
        return '<p class="note">No mesh was written.</p>'
    if render and (not png_path.is_file() or png_path.stat().st_mtime < mesh_path.stat().st_mtime):
        try:
            screenshot(load_scene(out_dir), png_path, *MESH_VIEW_SIZE)
        except ValueError as error:
            logger.warning("report.html without the mesh view: %s", error)
            return f'<p class="note">Mesh view not rendered: {html.escape(str(error))}</p>'
    if not png_path.is_file() or png_path.stat().st_mtime < mesh_path.stat().st_mtime:
        return f'<p class="note">Mesh view not rendered; see it with <code>python -m mvs.view {html.escape(str(out_dir))}</code>.</p>'
    image_hw3 = cv2.cvtColor(cv2.imread(str(png_path)), cv2.COLOR_BGR2RGB)
    return figure(png_data_uri(image_hw3), "mesh.ply from above; red: camera frustums and path")


def table_html(rows: list[tuple[str, str]]) -> str:
    cells = "".join(f'<tr><td>{html.escape(name)}</td><td class="number">{html.escape(value)}</td></tr>'
                    for name, value in rows)
    return f"<table>{cells}</table>"


def run_rows(run: dict) -> list[tuple[str, str]]:
    """The run's own numbers from `report.json`."""
    rows = [
        ("status", run["status"]),
        ("poses / depth", f"{run['poses']} / {run['depth']}"),
        ("units", run["units"]),
        ("frames selected / posed / fused", f"{run['frames_selected']} / {run['frames_posed']} / {run['frames_fused']}"),
    ]
    refinement = run.get("pose_refinement") or {}
    if refinement:
        rows.append((
            "poses refined to colour / corrected as their neighbour",
            f"{refinement['frames_refined']} / {refinement['frames_unrefined']} (median correction "
            f"{refinement['median_rotation_deg']:.2f} deg, {100 * refinement['median_translation_m']:.1f} cm)",
        ))
    if run["depth"] != "sensor":
        rows.append(("keyframes / depth maps", f"{run['keyframes']} / {run['depth_maps']}"))
    reasons: dict[str, int] = {}
    for reason in run["skipped"].values():
        reasons[reason] = reasons.get(reason, 0) + 1
    rows += [(f"frames skipped: {reason}", str(count)) for reason, count in reasons.items()]
    rows.append(("fusion frames/s", f"{run['fusion_frames_per_second']:.0f}"))
    return rows


def write_report_html(
    out_dir: Path, sequence: Sequence | None, metrics: list[tuple[str, str]] | None = None, render: bool = True
) -> list[Path]:
    """Write `out_dir/report.html` from `report.json` and the files beside it.

    metrics: (name, value) rows of `mvs.eval`, or None before evaluation.
    render: render `mesh.png` when it is missing or older than `mesh.ply`.
    Returns the files written (the page, and `mesh.png` when it was rendered).
    """
    report_path = out_dir / "report.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path}: not found; run `python -m mvs.run --out {out_dir}` first")
    run = json.loads(report_path.read_text())
    png_path = out_dir / "mesh.png"
    png_before = png_path.stat().st_mtime if png_path.is_file() else None
    # Sensor depth is fused in playback order, skipping the frames report.json lists.
    fused = []
    if sequence is not None:
        fused = [i for i in sequence.indices if str(i) not in run["skipped"]][: run["frames_fused"]]
    seconds_rows = [(stage, f"{seconds:.2f}") for stage, seconds in run["seconds"].items()]
    seconds_rows.append(("total", f"{sum(run['seconds'].values()):.2f}"))
    trajectory_png, trajectory_txt = out_dir / "trajectory.png", out_dir / "trajectory.txt"
    if trajectory_png.is_file() and trajectory_txt.is_file() and trajectory_png.stat().st_mtime >= trajectory_txt.stat().st_mtime:
        trajectory = figure(png_data_uri(cv2.cvtColor(cv2.imread(str(trajectory_png)), cv2.COLOR_BGR2RGB)),
                            "camera centres seen from above, aligned to the ground truth")
    else:
        trajectory = f'<p class="note">Plotted by <code>python -m mvs.eval --out {html.escape(str(out_dir))}</code> when the sequence has ground-truth poses.</p>'
    metrics_html = table_html(metrics) if metrics else (
        f'<p class="note">Not evaluated yet: <code>python -m mvs.eval --out {html.escape(str(out_dir))}</code> adds the metrics here.</p>'
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mvs-fusion: {html.escape(run['sequence'])}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(run['sequence'])}</h1>
<h2>Mesh</h2>
{mesh_view_html(out_dir, render)}
<h2>Metrics</h2>
{metrics_html}
<h2>Run</h2>
{table_html(run_rows(run))}
<h2>Seconds per stage</h2>
{table_html(seconds_rows)}
<h2>Depth</h2>
{depth_rows_html(out_dir, sequence, fused, run["units"] == "metres")}
<h2>Trajectory</h2>
{trajectory}
</body></html>
"""
    written = [write_text_atomic(out_dir / "report.html", page)]
    if png_path.is_file() and png_path.stat().st_mtime != png_before:
        written.append(png_path)
    return written
