"""Compare two result trees number by number and name the first artefact that differs, in DAG order.

    python -m pipeline.compare results_a results_b

Each file present in both trees is compared by its type:

    .npy / .npz      arrays: shape, dtype, exact values (max |a - b| reported)
    .pt              torch.load(weights_only=True): per tensor max |a - b|, other entries as JSON
    .json            numbers and strings recursively, each difference named by its key path
    .csv             cell by cell (numbers as numbers), ignoring timing columns
    .md              line by line, ignoring sections whose heading names a timing (the cost table)
    anything else    bytes (videos, PNG figures)

Fields that legitimately change from run to run are skipped: a JSON key, CSV column or
Markdown heading is ignored when its name contains a word of IGNORED_WORDS
(timings, memory peaks, hostnames, dates, the `environment` provenance dict). The folders
in IGNORED_DIRS hold only timings and logs. Differences are listed in DAG order (STAGES):
the first one is where the two runs diverged; every later difference may be its consequence.

Exit status: 0 identical, 1 different, 2 a tree is missing.

    python -m pipeline.compare --claims A B [--strict]

checks replication instead: whether two runs (other machine, other seeds) reach the same verdicts
on the primary claims, with a z score per claim; A and B are claims.csv files or folders holding
claims.csv or report/claims.csv. See pipeline/replication.py (exit 1 on an opposite verdict).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import replication
from pipeline.io import SEAL

# The stages in the order the DAG runs them: results/<stage>/...
STAGES = ("embed", "decode", "pretrain", "mine", "finetune", "evaluate", "analyse", "report")
# Snakemake's benchmark TSVs and the job logs: timings and progress messages only.
IGNORED_DIRS = ("benchmarks", "logs")
# Names (of JSON keys, CSV columns, Markdown headings) whose values are not results. A name is
# split into lower-case words at every non-alphanumeric character ("train_seconds" -> train,
# seconds) and ignored when a word is in IGNORED_WORDS or it contains "per_s" (throughputs such
# as `samples_per_s`). Whole words, so that "candidates" or "update" do not match "date".
#   seconds, time, timestamp, elapsed, started   timings (`seconds`, `train_seconds`, `cpu_seconds`)
#   date, datetime                               dates
#   memory, rss                                  peak memory (`peak_memory_mb`, `max_rss_mb`)
#   hostname                                     the machine's name
#   environment, provenance                      pipeline.environment's dict: machine, versions, git commit
#   runtime                                      the device record, which names the GPU model
#   resumed                                      bookkeeping of a resumed job (`resumed_units`), not a result
IGNORED_WORDS = frozenset({"seconds", "time", "timestamp", "elapsed", "started", "date", "datetime", "memory", "rss",
                           "hostname", "environment", "provenance", "runtime", "resumed"})
MAX_DETAILS = 5  # differences listed per file; the count of the rest is given


def ignored(name: str) -> bool:
    """Whether a key/column/heading `name` holds run-dependent values (see IGNORED_WORDS)."""
    if name == SEAL:  # a JSON result's own checksum covers its timings too; its values are compared one by one
        return True
    lowered = name.lower()
    return "per_s" in lowered or not IGNORED_WORDS.isdisjoint(re.split(r"[^a-z0-9]+", lowered))


@dataclass
class FileDiff:
    """How one file differs between the trees: `details` in reading order, `max_abs` over numbers (or None)."""

    path: str  # relative to the tree root, e.g. "finetune/digits/simclr/seed0/slf/classifier.pt"
    details: list[str] = field(default_factory=list)
    max_abs: float | None = None

    @property
    def stage(self) -> str:
        return self.path.split("/")[0]

    def add(self, detail: str, abs_diff: float | None = None) -> None:
        self.details.append(detail)
        if abs_diff is not None and not math.isnan(abs_diff):
            self.max_abs = abs_diff if self.max_abs is None else max(self.max_abs, abs_diff)


def dag_key(path: str) -> tuple[int, str]:
    """Sort key: stage position in STAGES (unknown folders after `report`), then path."""
    stage = path.split("/")[0]
    return (STAGES.index(stage) if stage in STAGES else len(STAGES), path)


def tree_files(root: Path) -> dict[str, Path]:
    """Relative posix path -> file, for every file under `root` outside IGNORED_DIRS and hidden temporaries."""
    files = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in IGNORED_DIRS or any(p.startswith(".") for p in rel.parts):
            continue
        files[rel.as_posix()] = path
    return files


def array_diff(a: np.ndarray, b: np.ndarray) -> tuple[str | None, float | None]:
    """(description, max |a - b|) of two arrays, (None, None) when identical (NaN equals NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}", None
    numeric = a.dtype.kind in "biufc"
    if np.array_equal(a, b, equal_nan=numeric and a.dtype.kind in "fc"):
        return None, None
    if not numeric:
        return f"{int(np.sum(a != b))} of {a.size} values differ", None
    delta = np.abs(a.astype(np.float64) - b.astype(np.float64))
    differing = int(np.sum(delta > 0) + np.sum(np.isnan(a) != np.isnan(b)))
    worst = float(np.nanmax(delta)) if np.any(~np.isnan(delta)) else math.nan
    return f"{differing} of {a.size} values differ, max |a-b| {worst:.3g}", worst


def walk(a: Any, b: Any, where: str) -> Iterator[tuple[str, float | None]]:
    """Differences between two nested values (dicts, lists, numbers, strings, arrays/tensors), with key paths.

    Dict keys matching `ignored` are skipped with their whole subtree.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if ignored(str(key)):
                continue
            path = f"{where}.{key}" if where else str(key)
            if key not in a or key not in b:
                yield f"{path}: only in {'b' if key not in a else 'a'}", None
            else:
                yield from walk(a[key], b[key], path)
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            yield f"{where}: length {len(a)} vs {len(b)}", None
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            yield from walk(x, y, f"{where}[{i}]")
    elif is_number(a) and is_number(b):
        if not (a == b or (math.isnan(a) and math.isnan(b))):
            yield f"{where}: {a!r} vs {b!r}", abs(a - b)
    elif isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        text, worst = array_diff(a, b)
        if text:
            yield f"{where}: {text}", worst
    elif hasattr(a, "detach") and hasattr(b, "detach"):  # torch tensors, without importing torch here
        text, worst = array_diff(tensor_array(a), tensor_array(b))
        if text:
            yield f"{where}: {text}", worst
    elif type(a) is not type(b) or a != b:
        yield f"{where}: {short(a)} vs {short(b)}", None


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def tensor_array(t: Any) -> np.ndarray:
    """A CPU tensor as numpy; bfloat16 (no numpy dtype) widened to float32 exactly."""
    t = t.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
        t = t.float()
    return t.numpy()


def short(x: Any, width: int = 60) -> str:
    text = repr(x)
    return text if len(text) <= width else text[: width - 3] + "..."


def compare_json(a: Path, b: Path, diff: FileDiff) -> None:
    for detail, worst in walk(json.loads(a.read_text()), json.loads(b.read_text()), ""):
        diff.add(detail, worst)


def compare_npy(a: Path, b: Path, diff: FileDiff) -> None:
    text, worst = array_diff(np.load(a, allow_pickle=False), np.load(b, allow_pickle=False))
    if text:
        diff.add(text, worst)


def compare_npz(a: Path, b: Path, diff: FileDiff) -> None:
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        for detail, worst in walk({k: za[k] for k in za.files}, {k: zb[k] for k in zb.files}, ""):
            diff.add(detail, worst)


def compare_pt(a: Path, b: Path, diff: FileDiff) -> None:
    import torch  # only when a tree holds checkpoints: comparing arrays and JSON stays torch-free

    load = {"map_location": "cpu", "weights_only": True}
    for detail, worst in walk(torch.load(a, **load), torch.load(b, **load), ""):
        diff.add(detail, worst)


def parse_cell(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def compare_csv(a: Path, b: Path, diff: FileDiff) -> None:
    """Cell by cell; rows are compared in order (the report writes them sorted), timing columns skipped."""
    rows_a, rows_b = (list(csv.DictReader(io.StringIO(p.read_text()))) for p in (a, b))
    if len(rows_a) != len(rows_b):
        diff.add(f"rows: {len(rows_a)} vs {len(rows_b)}")
    for i, (ra, rb) in enumerate(zip(rows_a, rows_b, strict=False)):
        kept_a = {k: parse_cell(v) for k, v in ra.items() if not ignored(k)}
        kept_b = {k: parse_cell(v) for k, v in rb.items() if not ignored(k)}
        for detail, worst in walk(kept_a, kept_b, f"row {i + 2}"):  # row 1 is the header
            diff.add(detail, worst)


def markdown_lines(path: Path) -> list[str]:
    """The lines of a Markdown file minus sections whose heading is a timing (e.g. "## Cost (... seconds ...)")."""
    kept, skip_level = [], 0
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            if skip_level and level <= skip_level:
                skip_level = 0  # a heading at the same or a higher level ends the skipped section
            if not skip_level and ignored(line):
                skip_level = level
        if not skip_level:
            kept.append(line)
    return kept


def compare_markdown(a: Path, b: Path, diff: FileDiff) -> None:
    lines_a, lines_b = markdown_lines(a), markdown_lines(b)
    for i, (x, y) in enumerate(zip(lines_a, lines_b, strict=False)):
        if x != y:
            diff.add(f"line {i + 1} (timing sections dropped): {short(x)} vs {short(y)}")
    if len(lines_a) != len(lines_b):
        diff.add(f"lines: {len(lines_a)} vs {len(lines_b)}")


def compare_bytes(a: Path, b: Path, diff: FileDiff) -> None:
    data_a, data_b = a.read_bytes(), b.read_bytes()
    if data_a != data_b:
        first = next((i for i, (x, y) in enumerate(zip(data_a, data_b, strict=False)) if x != y), min(len(data_a), len(data_b)))
        diff.add(f"bytes differ from offset {first} (sizes {len(data_a)} vs {len(data_b)})")


COMPARERS = {".json": compare_json, ".npy": compare_npy, ".npz": compare_npz, ".pt": compare_pt, ".csv": compare_csv,
             ".md": compare_markdown}


def compare_file(rel: str, a: Path, b: Path) -> FileDiff:
    """The differences of one file present in both trees (empty `details` when equal)."""
    diff = FileDiff(rel)
    try:
        COMPARERS.get(a.suffix, compare_bytes)(a, b, diff)
    except Exception as error:  # a truncated .npy/.pt or broken JSON: a difference to report, not a crash
        diff.details.append(f"unreadable: {type(error).__name__}: {error}"[:300])
    return diff


def compare_trees(root_a: Path, root_b: Path) -> list[FileDiff]:
    """Every differing or one-sided file, in DAG order (the first entry is the first divergence)."""
    for root in (root_a, root_b):
        if not root.is_dir():
            raise FileNotFoundError(f"results tree not found: {root}")
    files_a, files_b = tree_files(root_a), tree_files(root_b)
    diffs = []
    for rel in sorted(set(files_a) | set(files_b), key=dag_key):
        if rel not in files_b:
            diffs.append(FileDiff(rel, [f"only in {root_a}"]))
        elif rel not in files_a:
            diffs.append(FileDiff(rel, [f"only in {root_b}"]))
        else:
            diff = compare_file(rel, files_a[rel], files_b[rel])
            if diff.details:
                diffs.append(diff)
    return diffs


def format_report(diffs: list[FileDiff], compared: int) -> str:
    """Human-readable listing: one block per differing file, then the first divergence."""
    if not diffs:
        skipped = ", ".join([*sorted(IGNORED_WORDS), "per_s"])
        return f"identical: {compared} files compared (ignoring names with {skipped}; folders {', '.join(IGNORED_DIRS)})"
    lines = []
    for d in diffs:
        worst = "" if d.max_abs is None else f", max |a-b| {d.max_abs:.3g}"
        lines.append(f"DIFF [{d.stage}] {d.path}: {len(d.details)} difference(s){worst}")
        lines += [f"    {detail}" for detail in d.details[:MAX_DETAILS]]
        if len(d.details) > MAX_DETAILS:
            lines.append(f"    ... and {len(d.details) - MAX_DETAILS} more")
    first = diffs[0]
    lines.append(f"{len(diffs)} of {compared} files differ; first divergence (DAG order): stage {first.stage}, {first.path}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_a", type=Path, help="first results folder (holding embed/, decode/, ...); "
                        "with --claims a claims.csv or a folder holding claims.csv or report/claims.csv")
    parser.add_argument("results_b", type=Path, help="second results folder (with --claims: second claims.csv)")
    parser.add_argument("--claims", action="store_true", help="compare the verdicts on the primary claims (replication "
                        "check) instead of the files")
    parser.add_argument("--strict", action="store_true", help="with --claims: exit 1 also when the replication "
                        "target is not met")
    args = parser.parse_args(argv)
    if args.strict and not args.claims:
        parser.error("--strict applies to --claims only")
    if args.claims:
        return claims_main(args.results_a, args.results_b, args.strict)
    try:
        diffs = compare_trees(args.results_a, args.results_b)
    except FileNotFoundError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    compared = len(set(tree_files(args.results_a)) | set(tree_files(args.results_b)))
    print(format_report(diffs, compared))
    return 1 if diffs else 0


def claims_main(path_a: Path, path_b: Path, strict: bool) -> int:
    """The --claims mode: pipeline.replication's report and exit status; 2 with a one-line error for bad input."""
    try:
        return replication.check(path_a, path_b, strict)
    except replication.ClaimsError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
