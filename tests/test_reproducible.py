"""The tiny study run twice, in two separate working folders, gives identical results (issue #18).

Every file under results/ is compared with pipeline.compare: videos and figures byte for byte,
arrays, checkpoints, JSON and CSV number by number (timings and the environment record are
the only fields it skips).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from pipeline.compare import compare_trees, format_report, tree_files
from tests.test_workflow import copy_workflow, snakemake

pytestmark = pytest.mark.workflow


def run_tiny_study(workdir: Path) -> Path:
    """A fresh copy of the workflow in `workdir`, run on .test/config.yaml; returns its results folder."""
    workdir.mkdir()
    copy_workflow(workdir)
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir / "results"


def test_tiny_study_twice_gives_identical_results(tmp_path):
    first, second = run_tiny_study(tmp_path / "a"), run_tiny_study(tmp_path / "b")
    kinds = Counter(Path(rel).suffix for rel in tree_files(first))
    # not a vacuous comparison: every kind of artefact of both modalities is there
    assert {".mp4", ".npy", ".npz", ".pt", ".json", ".csv", ".md", ".png"} <= set(kinds), kinds
    assert kinds[".mp4"] == 30 and (first / "decode" / "moving_digits" / "train_x.npy").exists()
    # every stage's metrics/meta file records its environment (which the comparison skips)
    for pattern in ("embed/*/manifest.json", "decode/*/meta.json", "pretrain/**/metrics.json", "mine/**/quality.json",
                    "finetune/**/metrics.json", "evaluate/**/robustness.json", "analyse/*/representation.json"):
        paths = list(first.glob(pattern))
        assert paths and all("cpu" in json.loads(p.read_text())["environment"] for p in paths), pattern
    diffs = compare_trees(first, second)
    assert diffs == [], format_report(diffs, len(tree_files(first)))
