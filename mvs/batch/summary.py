"""`summary.csv` and `summary.html` of a batch: a row per scene and a total row."""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fusion.export import write_text_atomic
from mvs.batch.task import COMPLETE, SceneResult

TOTAL_LABEL = "(total)"
STATUS_ORDER = (COMPLETE, "skipped", "failed", "cancelled", "pending")


@dataclass
class BatchTotals:
    """The batch as a whole: scenes per status, frames fused, the seconds of each stage summed
    over scenes, the batch's wall time so far, scenes completed per hour of it, and the
    largest peak memory of a worker (MB)."""

    statuses: dict[str, int]
    frames_fused: int
    seconds: dict[str, float]
    elapsed_seconds: float
    scenes_per_hour: float
    peak_rss_mb: float | None

    def status_text(self) -> str:
        return ", ".join(f"{count} {status}" for status, count in self.statuses.items())


def totals(results: list[SceneResult], elapsed_seconds: float) -> BatchTotals:
    """Totals of `results`; scenes/hour counts the scenes this batch completed (not skipped)."""
    counts = Counter(r.status for r in results)
    statuses = {status: counts[status] for status in STATUS_ORDER if counts[status]}
    seconds: dict[str, float] = {}
    for result in results:
        for stage, value in result.seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + value
    peaks = [r.peak_rss_mb for r in results if r.peak_rss_mb is not None]
    return BatchTotals(
        statuses=statuses,
        frames_fused=sum(r.frames_fused or 0 for r in results),
        seconds=seconds,
        elapsed_seconds=elapsed_seconds,
        scenes_per_hour=counts[COMPLETE] / max(elapsed_seconds, 1e-9) * 3600.0,
        peak_rss_mb=max(peaks) if peaks else None,
    )


def cell(value: object, digits: int = 1) -> str:
    """A table cell: floats with `digits` decimals, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_rows(results: list[SceneResult], total: BatchTotals) -> tuple[list[str], list[list[str]]]:
    """The header and the rows (scenes, then the total) shared by the CSV and the HTML."""
    stages = list(dict.fromkeys(stage for r in results for stage in r.seconds))
    metrics = list(dict.fromkeys(name for r in results for name in r.metrics))
    header = ["scene", "status", "attempts", "frames_selected", "frames_fused",
              *[f"seconds_{stage}" for stage in stages], "wall_seconds", "peak_rss_mb", *metrics,
              "scenes_per_hour", "host", "error", "sequence", "out_dir"]
    rows = []
    for r in results:
        rows.append([r.scene, r.status, cell(r.attempts or None), cell(r.frames_selected), cell(r.frames_fused),
                     *[cell(r.seconds.get(stage)) for stage in stages], cell(r.wall_seconds), cell(r.peak_rss_mb, 0),
                     *[cell(r.metrics.get(name), 4) for name in metrics], "", r.host, r.error, r.sequence, r.out_dir])
    rows.append([TOTAL_LABEL, total.status_text(), "", "", str(total.frames_fused),
                 *[cell(total.seconds.get(stage)) for stage in stages], cell(total.elapsed_seconds),
                 cell(total.peak_rss_mb, 0), *["" for _ in metrics], cell(total.scenes_per_hour), "", "", "", ""])
    return header, rows


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return stream.getvalue()


def html_text(header: list[str], rows: list[list[str]], total: BatchTotals) -> str:
    """A self-contained page: the totals in a sentence, then the table."""
    def row(cells: list[str], tag: str) -> str:
        return "<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>"

    memory = "" if total.peak_rss_mb is None else f"; largest worker peak memory {total.peak_rss_mb:.0f} MB"
    return "\n".join([
        "<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>mvs.batch summary</title>',
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        "td:first-child,td:nth-child(2){text-align:left}tr:last-child{font-weight:bold}</style></head><body>",
        "<h1>mvs.batch summary</h1>",
        f"<p>{len(rows) - 1} scenes: {html.escape(total.status_text())}; {total.frames_fused} frames fused; "
        f"{total.elapsed_seconds:.0f} s so far, {total.scenes_per_hour:.1f} scenes/hour{memory}.</p>",
        "<table>", row(header, "th"), *[row(r, "td") for r in rows], "</table>", "</body></html>", "",
    ])


def write_summary(results: list[SceneResult], out_dir: Path, elapsed_seconds: float) -> list[Path]:
    """Write `out_dir/summary.csv` and `out_dir/summary.html` (atomically) of `results`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    total = totals(results, elapsed_seconds)
    header, rows = table_rows(results, total)
    return [write_text_atomic(out_dir / "summary.csv", csv_text(header, rows)),
            write_text_atomic(out_dir / "summary.html", html_text(header, rows, total))]
