"""Benchmark tables, the machine line, and BENCHMARKS.md / benchmarks.json updates.

Each suite owns one section of BENCHMARKS.md, between `<!-- mvs.bench:SUITE -->` and
`<!-- /mvs.bench:SUITE -->`, and one key of benchmarks.json; running a suite replaces its
own section and key and keeps the others.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

HEADER = """# Benchmarks

Every table below is written by `python -m mvs.bench SUITE`, named in its section heading;
`python -m mvs.bench all` reproduces them all (and `benchmarks.json`, with the raw figures).
Each section states the machine, the load on it when the suite ran, and the command of every
run it measured. Timings taken while other jobs ran on the machine are noisy; ratios measured
back to back in the same suite run are the robust figures.
"""


@dataclass
class Table:
    """A Markdown table under a title, with the commands whose outputs it reports.

    `align` has one letter per column: `l` (text) or `r` (numbers).
    """

    title: str
    commands: list[str]
    columns: list[str]
    align: str
    rows: list[list[str]] = field(default_factory=list)
    notes: str = ""

    def __post_init__(self) -> None:
        if len(self.align) != len(self.columns) or set(self.align) - {"l", "r"}:
            raise ValueError(f"table '{self.title}': expected one of l/r per column, got {self.align!r}")

    def add_row(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"table '{self.title}': expected {len(self.columns)} cells, got {len(cells)}")
        self.rows.append(list(cells))

    def markdown(self) -> str:
        """The title, the commands as a code block, the notes and the table."""
        lines = [f"### {self.title}", ""]
        if self.commands:
            lines += ["```", *self.commands, "```", ""]
        if self.notes:
            lines += [self.notes, ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("| " + " | ".join("---:" if a == "r" else "---" for a in self.align) + " |")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class SuiteResult:
    """What one suite measured: tables for BENCHMARKS.md and raw figures for the JSON."""

    suite: str
    title: str
    command: str
    machine: str
    started_utc: str
    seconds: float
    load_average: tuple[float, float]
    tables: list[Table]
    data: dict

    def markdown(self) -> str:
        start, end = self.load_average
        lines = [
            f"<!-- mvs.bench:{self.suite} -->",
            f"## {self.title}: `{self.command}`",
            "",
            f"Machine: {self.machine}. Run {self.started_utc}, {self.seconds / 60:.1f} min; "
            f"1-minute load average {start:.1f} at the start and {end:.1f} at the end"
            f"{noise_note(max(start, end))}.",
            "",
        ]
        for table in self.tables:
            lines += [table.markdown(), ""]
        lines.append(f"<!-- /mvs.bench:{self.suite} -->")
        return "\n".join(lines)


def noise_note(load: float) -> str:
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        return f" (other jobs shared the {cores} cores: absolute timings are noisy)"
    return ""


def fmt(value: float | None, digits: int = 3, unit: str = "") -> str:
    """A number for a table cell; an em dash for a missing value."""
    if value is None:
        return "—"
    return f"{value:.{digits}f}{unit}"


def machine_line() -> str:
    """CPU model, cores, memory, GPU, and the versions that decide the speed."""
    import open3d
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu = models[0].strip() if models else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kb = re.search(r"^MemTotal:\s*(\d+)", meminfo.read_text(), re.MULTILINE)
        memory = f", {int(total_kb.group(1)) / 2**20:.0f} GiB" if total_kb else ""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{memory}, {gpu}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Open3D {open3d.__version__}, Python {platform.python_version()}")


def replace_section(text: str, suite: str, section: str, order: list[str]) -> str:
    """`text` (BENCHMARKS.md) with the section of `suite` replaced by `section`.

    A missing section goes before the first section of a suite that follows it in `order`,
    else at the end. Text outside the marked sections is kept.
    """
    pattern = re.compile(rf"<!-- mvs\.bench:{suite} -->.*?<!-- /mvs\.bench:{suite} -->", re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    for later in order[order.index(suite) + 1:]:
        position = text.find(f"<!-- mvs.bench:{later} -->")
        if position >= 0:
            return text[:position] + section + "\n\n" + text[position:]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def update_markdown(path: Path, result: SuiteResult, order: list[str]) -> Path:
    """Write `result`'s section into the Markdown file at `path` (created with a header)."""
    text = path.read_text() if path.is_file() else HEADER
    path.write_text(replace_section(text, result.suite, result.markdown(), order))
    return path


def update_json(path: Path, result: SuiteResult) -> Path:
    """Store `result` under its suite name in the JSON file at `path`."""
    results = {}
    if path.is_file():
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}); remove it to start afresh") from error
    results[result.suite] = asdict(result)
    path.write_text(json.dumps(results, indent=1, default=float) + "\n")
    return path
