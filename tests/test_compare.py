"""pipeline.compare on two small synthetic result trees that differ in known places."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.compare import compare_trees, ignored, main
from tests.conftest import REPO

CLASSIFIER = "finetune/digits/simclr/seed0/slf/classifier.pt"
ROBUSTNESS = "evaluate/digits/simclr/seed0/slf/robustness.json"


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def make_tree(root: Path, run: int) -> Path:
    """A results tree with one file of every kind; `run` changes only fields the compare tool must ignore."""
    (root / "embed/moving_digits/videos/Digit0").mkdir(parents=True)
    (root / "embed/moving_digits/videos/Digit0/v_Digit0_g01_c01.mp4").write_bytes(bytes(range(256)) * 4)
    write_json(root / "embed/moving_digits/manifest.json", {"videos": 1, "seconds": 1.5 + run})
    (root / "decode/digits").mkdir(parents=True)
    np.save(root / "decode/digits/train_x.npy", np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    write_json(root / "decode/digits/meta.json", {"num_classes": 10, "seconds": 0.1 * run,
                                                  "environment": {"hostname": f"host{run}", "git_commit": f"{run}" * 40}})
    (root / "pretrain/digits/simclr/seed0").mkdir(parents=True)
    torch.save({"encoder": {"w": torch.ones(3, 3)}, "knn_acc": 0.5}, root / "pretrain/digits/simclr/seed0/encoder.pt")
    write_json(root / "pretrain/digits/simclr/seed0/metrics.json",
               {"knn_acc": 0.5, "history": [{"loss": 2.0, "seconds": run, "samples_per_s": 100.0 * (run + 1)}],
                "peak_memory_mb": 10.0 + run, "runtime": {"device_name": f"gpu{run}"}})
    (root / "mine/digits/seed0").mkdir(parents=True)
    with open(root / "mine/digits/seed0/false_negatives.npz", "wb") as f:
        np.savez(f, labels=np.array([0, 1, 1, 2]))
    (root / CLASSIFIER).parent.mkdir(parents=True)
    torch.save({"model": {"head.weight": torch.zeros(2, 4), "head.bias": torch.zeros(2)}, "protocol": "slf"}, root / CLASSIFIER)
    write_json(root / ROBUSTNESS, {"clean_accuracy": 0.75, "attacks": {"pgd": {"8": {"accuracy": 0.25}}}, "seconds": 3.0 + run})
    (root / "report").mkdir()
    (root / "report/summary.csv").write_text("dataset,attack,mean\ndigits,pgd,0.25\n")
    (root / "report/cost.csv").write_text(f"stage,seconds,max_rss_mb,cpu_seconds,device\npretrain,{run + 1.0},{100 + run},{run},cpu\n")
    (root / "report/report.md").write_text(
        "# Results\n\n| method | pgd |\n| simclr | 25.0 |\n"
        f"\n## Cost (Snakemake benchmark files; wall seconds per job)\n\n| pretrain | {run + 1.0} |\n"
        "\n## Checks\n\nNo suspicious results.\n")
    (root / "benchmarks/pretrain").mkdir(parents=True)
    (root / "benchmarks/pretrain/job.tsv").write_text(f"s\n{run + 0.5}\n")
    (root / "logs").mkdir()
    (root / "logs/embed.log").write_text(f"took {run} s\n")
    return root


@pytest.fixture
def trees(tmp_path) -> tuple[Path, Path]:
    return make_tree(tmp_path / "a", 0), make_tree(tmp_path / "b", 1)


def test_runs_differing_only_in_timings_and_environment_are_identical(trees, capsys):
    a, b = trees
    assert compare_trees(a, b) == []
    assert main([str(a), str(b)]) == 0
    assert "identical" in capsys.readouterr().out


def test_one_changed_tensor_is_the_only_and_first_divergence(trees, capsys):
    a, b = trees
    state = torch.load(b / CLASSIFIER, weights_only=True)
    state["model"]["head.weight"][1, 2] = 0.125
    torch.save(state, b / CLASSIFIER)
    diffs = compare_trees(a, b)
    assert [d.path for d in diffs] == [CLASSIFIER]
    assert diffs[0].stage == "finetune" and diffs[0].max_abs == 0.125
    assert diffs[0].details == ["model.head.weight: 1 of 8 values differ, max |a-b| 0.125"]
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert f"first divergence (DAG order): stage finetune, {CLASSIFIER}" in out


def test_divergences_are_listed_in_dag_order_not_alphabetically(trees):
    a, b = trees
    write_json(b / ROBUSTNESS, {**json.loads((b / ROBUSTNESS).read_text()), "clean_accuracy": 0.5})
    state = torch.load(b / CLASSIFIER, weights_only=True)
    state["model"]["head.bias"] += 1.0
    torch.save(state, b / CLASSIFIER)
    diffs = compare_trees(a, b)
    assert [d.path for d in diffs] == [CLASSIFIER, ROBUSTNESS]  # "evaluate" < "finetune" alphabetically
    assert diffs[1].details == ["clean_accuracy: 0.75 vs 0.5"] and diffs[1].max_abs == 0.25


def test_arrays_videos_tables_and_markdown_differences_are_located(trees):
    a, b = trees
    x = np.load(b / "decode/digits/train_x.npy")
    x[1, 2, 3] += 4
    np.save(b / "decode/digits/train_x.npy", x)
    video = bytearray((b / "embed/moving_digits/videos/Digit0/v_Digit0_g01_c01.mp4").read_bytes())
    video[700] ^= 1
    (b / "embed/moving_digits/videos/Digit0/v_Digit0_g01_c01.mp4").write_bytes(bytes(video))
    (b / "report/summary.csv").write_text("dataset,attack,mean\ndigits,pgd,0.5\n")
    md = (b / "report/report.md").read_text().replace("| simclr | 25.0 |", "| simclr | 50.0 |")
    (b / "report/report.md").write_text(md)
    diffs = {d.path: d for d in compare_trees(a, b)}
    assert list(diffs) == ["embed/moving_digits/videos/Digit0/v_Digit0_g01_c01.mp4", "decode/digits/train_x.npy",
                           "report/report.md", "report/summary.csv"]
    assert diffs["embed/moving_digits/videos/Digit0/v_Digit0_g01_c01.mp4"].details == ["bytes differ from offset 700 (sizes 1024 vs 1024)"]
    assert diffs["decode/digits/train_x.npy"].max_abs == 4
    assert diffs["report/summary.csv"].details == ["row 2.mean: 0.25 vs 0.5"]
    assert diffs["report/report.md"].details == ["line 4 (timing sections dropped): '| simclr | 25.0 |' vs '| simclr | 50.0 |'"]


def test_files_in_one_tree_only_are_reported(trees):
    a, b = trees
    (b / "mine/digits/seed0/false_negatives.npz").unlink()
    write_json(b / "analyse/digits/representation.json", {"encoders": {}})
    diffs = compare_trees(a, b)
    assert [(d.path, d.details) for d in diffs] == [("mine/digits/seed0/false_negatives.npz", [f"only in {a}"]),
                                                    ("analyse/digits/representation.json", [f"only in {b}"])]


def test_ignore_list_matches_whole_words():
    for name in ("seconds", "train_seconds", "samples_per_s", "peak_memory_mb", "max_rss_mb", "environment", "runtime",
                 "## Cost (Snakemake benchmark files; wall seconds per job)"):
        assert ignored(name), name
    for name in ("candidates", "update_every", "accuracy", "knn_acc", "steps", "max_samples"):
        assert not ignored(name), name


def test_missing_tree_is_a_clear_error_and_help_works(trees, tmp_path, capsys):
    a, _ = trees
    assert main([str(a), str(tmp_path / "nowhere")]) == 2
    assert f"results tree not found: {tmp_path / 'nowhere'}" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "pipeline.compare", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "first artefact that differs" in proc.stdout


def test_identical_copy_via_the_command_line(trees, tmp_path):
    a, _ = trees
    shutil.copytree(a, tmp_path / "copy")
    proc = subprocess.run([sys.executable, "-m", "pipeline.compare", str(a), str(tmp_path / "copy")], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
