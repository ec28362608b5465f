"""pipeline.compare on two small synthetic result trees that differ in known places."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.compare import compare_trees, ignored, main
from pipeline.replication import Z_95, read_claims
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


def test_resumed_counts_are_bookkeeping_and_a_truncated_file_is_a_difference(trees, capsys):
    a, b = trees
    write_json(b / ROBUSTNESS, {**json.loads((b / ROBUSTNESS).read_text()), "resumed_units": 5})
    write_json(a / ROBUSTNESS, {**json.loads((a / ROBUSTNESS).read_text()), "resumed_units": 0})
    assert compare_trees(a, b) == []  # a resumed evaluation gives the same results
    data = (b / CLASSIFIER).read_bytes()
    (b / CLASSIFIER).write_bytes(data[: len(data) // 2])  # a truncated checkpoint
    np.save(b / "decode/digits/train_x.npy", np.zeros(3))
    (b / "decode/digits/train_x.npy").write_bytes((b / "decode/digits/train_x.npy").read_bytes()[:40])
    diffs = compare_trees(a, b)
    assert [d.path for d in diffs] == ["decode/digits/train_x.npy", CLASSIFIER]
    assert all(d.details[0].startswith("unreadable: ") for d in diffs)
    assert main([str(a), str(b)]) == 1 and "unreadable" in capsys.readouterr().out


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


# --claims: the replication check on two claims tables

CLAIM_COLUMNS = ["dataset", "claim", "statement", "comparison", "eps", "primary", "direction", "estimate", "low", "high",
                 "verdict", "p_holm", "seeds", "n_seeds", "samples", "se", "df"]


def claim(name: str, estimate: float, se: float, verdict: str, n_seeds: int = 5, primary: bool = True,
          comparison: str = "supervised - simclr") -> dict:
    """One claims.csv row (as pipeline.report.claims.as_record writes it) with a symmetric 95 % interval."""
    return {"dataset": "digits", "claim": name, "statement": "s", "comparison": comparison, "eps": 8.0, "primary": primary,
            "direction": 1, "estimate": estimate, "low": estimate - Z_95 * se, "high": estimate + Z_95 * se,
            "verdict": verdict, "p_holm": 0.01, "seeds": " ".join(map(str, range(n_seeds))), "n_seeds": n_seeds,
            "samples": 540, "se": se, "df": n_seeds - 1}


def write_claims(path: Path, rows: list[dict], columns: list[str] = CLAIM_COLUMNS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def many_claims(n: int, n_seeds: int = 5) -> list[dict]:
    return [claim(f"C{i}", 0.1, 0.02, "supported", n_seeds) for i in range(n)]


def test_claims_z_matches_a_hand_computation(tmp_path, capsys):
    a = write_claims(tmp_path / "a.csv", [claim("C1a", 0.10, 0.03, "supported")])
    b = write_claims(tmp_path / "b.csv", [claim("C1a", 0.02, 0.04, "inconclusive")])
    assert main(["--claims", str(a), str(b)]) == 0  # supported vs inconclusive is no opposite verdict
    out = capsys.readouterr().out
    z = (0.10 - 0.02) / math.sqrt(0.03**2 + 0.04**2)  # 1.6
    row = next(line for line in out.splitlines() if line.startswith("| digits | C1a"))
    assert f"| {z:+.2f} |" in row and "+1.60" in row
    assert "+10.0 [+4.1, +15.9] | supported" in row and "| 5/5 |" in row
    assert "- opposite verdicts: 0" in out and "- |z| > 1.96: 0 of 1" in out and "- same verdict: 0 of 1" in out
    assert "derived from the 95% interval" not in out


def test_claims_opposite_verdict_exits_1_and_is_flagged(tmp_path, capsys):
    a = write_claims(tmp_path / "a.csv", [claim("C1a", 0.10, 0.02, "supported"), claim("C2a", 0.1, 0.02, "supported")])
    b = write_claims(tmp_path / "b.csv", [claim("C1a", -0.10, 0.02, "contradicted"), claim("C2a", 0.1, 0.02, "supported")])
    assert main(["--claims", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| digits | C1a"))
    assert "OPPOSITE" in row and r"\|z\|>1.96" in row and "| +7.07 |" in row
    assert "- opposite verdicts: 1" in out and "- same verdict: 1 of 2" in out
    assert "not met: 1 opposite verdict(s)" in out


def test_claims_identical_files_exit_0(tmp_path, capsys):
    a = write_claims(tmp_path / "a.csv", many_claims(12))
    assert main(["--claims", str(a), str(a), "--strict"]) == 0
    out = capsys.readouterr().out
    assert "- claims matched: 12" in out and "- opposite verdicts: 0" in out and "- same verdict: 12 of 12" in out
    assert "- claims on >= 3 seeds in both runs: 12 of 12" in out
    assert out.rstrip().endswith(": met")


def test_claims_se_falls_back_to_the_interval_without_an_se_column(tmp_path, capsys):
    old = [c for c in CLAIM_COLUMNS if c not in ("se", "df")]
    a = write_claims(tmp_path / "a.csv", [claim("C1a", 0.10, 0.03, "supported")], old)
    b = write_claims(tmp_path / "b.csv", [claim("C1a", 0.02, 0.04, "supported")])
    claims = read_claims(a)
    (only,) = claims.values()
    assert only.se_derived and only.se == pytest.approx(0.03)
    assert not next(iter(read_claims(b).values())).se_derived
    assert main(["--claims", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "A: se derived from the 95% interval" in out and "B: se derived" not in out
    assert "| +1.60 |" in out


def test_claims_missing_file_exits_2_naming_it(tmp_path, capsys):
    a = write_claims(tmp_path / "a.csv", many_claims(1))
    missing = tmp_path / "nowhere" / "claims.csv"
    assert main(["--claims", str(a), str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.csv").write_text("just,some\n1,2\n")
    assert main(["--claims", str(a), str(tmp_path / "bad.csv")]) == 2
    assert f"{tmp_path / 'bad.csv'}: not a claims table" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "pipeline.compare", "--claims", str(a), str(missing)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and str(missing) in proc.stderr and "Traceback" not in proc.stderr


def test_claims_directory_inputs_resolve(tmp_path, capsys):
    docs = write_claims(tmp_path / "docs/claims.csv", many_claims(2)).parent
    results = write_claims(tmp_path / "results/report/claims.csv", many_claims(2)).parent.parent
    assert main(["--claims", str(docs), str(results)]) == 0
    out = capsys.readouterr().out
    assert f"A: {docs / 'claims.csv'}" in out and f"B: {results / 'report/claims.csv'}" in out
    assert "- claims matched: 2" in out
    assert main(["--claims", str(docs), str(tmp_path)]) == 2
    assert f"no claims.csv in {tmp_path}" in capsys.readouterr().err


def test_claims_strict_needs_ten_claims_on_three_seeds(tmp_path, capsys):
    a = write_claims(tmp_path / "a.csv", many_claims(9) + [claim("C9", 0.1, 0.02, "supported", n_seeds=2)])
    assert main(["--claims", str(a), str(a)]) == 0
    assert main(["--claims", str(a), str(a), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "only 9 primary claim(s) on >= 3 seeds in both (need >= 10)" in out
    assert "2 decisive verdict(s) on < 3 seeds" in out and "decisive on <3 seeds (A, B)" in out
    assert "- decisive verdicts on < 3 seeds: 2 (A 1, B 1)" in out


def test_claims_non_primary_rows_are_ignored_and_one_sided_claims_listed(tmp_path, capsys):
    a = write_claims(tmp_path / "a.csv", [claim("C1a", 0.1, 0.02, "supported"),
                                          claim("C1a", 0.1, 0.02, "supported (uncorrected)", primary=False, comparison="x"),
                                          claim("C3", 0.1, 0.02, "supported")])
    b = write_claims(tmp_path / "b.csv", [claim("C1a", 0.1, 0.02, "supported"),
                                          claim("C1a", -0.1, 0.02, "contradicted (uncorrected)", primary=False, comparison="x"),
                                          claim("C4", 0.1, 0.02, "supported")])
    assert set(read_claims(a)) == {("digits", "C1a", "supervised - simclr"), ("digits", "C3", "supervised - simclr")}
    assert main(["--claims", str(a), str(b)]) == 0  # the opposite non-primary pair does not count
    out = capsys.readouterr().out
    assert "- claims matched: 1" in out and "OPPOSITE" not in out and "`x`" not in out
    assert "- only in A: digits C3 `supervised - simclr`" in out and "- only in B: digits C4 `supervised - simclr`" in out


def test_claims_strict_without_claims_is_a_usage_error(trees):
    a, b = trees
    with pytest.raises(SystemExit) as exit_info:
        main([str(a), str(b), "--strict"])
    assert exit_info.value.code == 2
