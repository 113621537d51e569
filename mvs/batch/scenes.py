"""The scenes of a batch: sequences from paths, globs and list files, their output folders,
and which of them are already done."""

from __future__ import annotations

import glob
import os
from dataclasses import replace
from pathlib import Path

from mvs.batch.task import COMPLETE, Scene, SceneResult, fill_from_outputs, read_json, run_status
from mvs.pipeline import OUTPUTS_DIR, SEQUENCES_DIR, default_out_dir

GLOB_CHARACTERS = set("*?[")
LIST_SUFFIX = ".txt"
RECORD_NAME = "batch.json"
"""Each scene's summary row, kept in its output folder for the batches after."""


def read_list_file(path: Path, root: Path | None) -> list[str]:
    """The entries of a list file, one per line (blank lines and `#` comments skipped);
    relative entries are joined to `root` when it is given."""
    entries = []
    for line in path.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            entries.append(str(root / entry) if root is not None and not Path(entry).is_absolute() else entry)
    if not entries:
        raise ValueError(f"{path}: list file names no sequence")
    return entries


def expand_entries(entries: list[str], root: Path | None = None) -> list[str]:
    """Sequences from command-line entries: a `.txt` file is a list file (one sequence per
    line, entries relative to `root` when given), a pattern with * ? [ that names no file is
    expanded as a glob (sorted); anything else is a sequence path or a name under sequences/."""
    sequences: list[str] = []
    for entry in entries:
        path = Path(entry)
        if path.is_file() and path.suffix == LIST_SUFFIX:
            sequences += expand_entries(read_list_file(path, root))
        elif not path.exists() and GLOB_CHARACTERS & set(entry):
            matches = sorted(glob.glob(entry))
            if not matches:
                raise ValueError(f"{entry}: the pattern matches no file or folder")
            sequences += matches
        else:
            sequences.append(entry)
    if not sequences:
        raise ValueError("no sequence given: name folders, files, globs or a list file (.txt)")
    return sequences


def sequence_name(entry: str) -> str:
    """The name of `entry` whose output folder `default_out_dir` gives: an existing path
    inside sequences/ becomes its name there ("sequences/scannet/scene0000_00" ->
    "scannet/scene0000_00"), one elsewhere its absolute path (which writes to its last name,
    relative or not: "data/scans/scene0000_00" -> outputs/scene0000_00)."""
    if Path(entry).exists():
        try:
            return Path(os.path.abspath(entry)).relative_to(SEQUENCES_DIR.absolute()).as_posix()
        except ValueError:
            return os.path.abspath(entry)
    return entry


def make_scenes(sequences: list[str], outputs_root: Path) -> list[Scene]:
    """A scene per sequence, writing to `<outputs_root>/<scene>`: its name under sequences/,
    or the last name of a path elsewhere (as `mvs.run` names an absolute path). An existing
    path is passed on absolute (workers may run elsewhere), a name as it is; a sequence given
    twice runs once, and two sequences with one output folder are an error."""
    scenes: dict[str, Scene] = {}
    for entry in sequences:
        name = sequence_name(entry)
        label = default_out_dir(name).relative_to(OUTPUTS_DIR).as_posix()
        sequence = os.path.abspath(entry) if Path(entry).exists() else entry
        if label in scenes and scenes[label].sequence == sequence:
            continue
        if label in scenes:
            raise ValueError(f"{entry} and {scenes[label].sequence} would both write to {outputs_root / label}; "
                             "run them in separate batches with different --outputs")
        scenes[label] = Scene(label, sequence, os.path.abspath(outputs_root / label))
    return list(scenes.values())


def is_done(scene: Scene, evaluate: bool) -> bool:
    """Whether `scene`'s report.json says complete and, when `evaluate`, eval.json exists."""
    out_dir = Path(scene.out_dir)
    return run_status(out_dir) == COMPLETE and (not evaluate or (out_dir / "eval.json").is_file())


def skipped_result(scene: Scene, evaluate: bool) -> SceneResult:
    """The summary row of a scene done before this batch: the batch.json an earlier batch
    wrote (worker memory, wall time), refreshed from report.json and eval.json."""
    saved = read_json(Path(scene.out_dir) / RECORD_NAME) or {}
    fields = {key: saved[key] for key in SceneResult.__dataclass_fields__ if key in saved}
    result = replace(SceneResult(scene.name, scene.sequence, scene.out_dir), **fields)
    result = replace(result, scene=scene.name, sequence=scene.sequence, out_dir=scene.out_dir, status="skipped", error="")
    return fill_from_outputs(result, evaluate)
