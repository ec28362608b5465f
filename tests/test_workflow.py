"""The Snakemake DAG end to end on the tiny config, and the caching contract.

A copy of the workflow runs in a temporary folder (so editing a source file there is
safe); later tests dry-run changed configs or sources against the finished results and
check which rules Snakemake plans to rerun.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.workflow
COPIED = ["Snakefile", "workflow", "pipeline", "config", ".test"]


def snakemake(workdir: Path, *args: str, configfile: str = ".test/config.yaml") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", configfile, "--replace-workflow-config", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)


def planned(workdir: Path, configfile: str = ".test/config.yaml") -> dict[str, int]:
    """Rule -> job count of a dry run ({} when there is nothing to do)."""
    proc = snakemake(workdir, "-n", configfile=configfile)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    stats = out.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def changed_config(workdir: Path, edit) -> str:
    cfg = yaml.safe_load((workdir / ".test" / "config.yaml").read_text())
    edit(cfg)
    path = workdir / "changed.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path.name


def copy_workflow(workdir: Path) -> None:
    """The Snakefile, workflow, package and configs in `workdir`, without bytecode caches."""
    for name in COPIED:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
    for cache in workdir.rglob("__pycache__"):
        shutil.rmtree(cache)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    copy_workflow(workdir)
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir


def test_tiny_study_produces_the_report(study):
    md = (study / "results" / "report" / "report.md").read_text()
    for dataset in ("digits (image)", "moving_digits (video)"):
        assert dataset in md
    for method in ("supervised", "simclr", "simclr_oracle_elim", "simclr_mined_elim"):
        assert f"| {method} | slf |" in md
    assert "False-negative mining quality" in md
    # the claims section and claims.csv are well-formed: every row has an interval around its estimate,
    # a verdict, and says what it rests on
    assert md.index("## Claims") < md.index("### Accuracy under attack")
    import csv

    with open(study / "results" / "report" / "claims.csv") as f:
        claims = list(csv.DictReader(f))
    assert {r["dataset"] for r in claims} == {"digits", "moving_digits"}
    assert {"C1a", "C1b", "C1c", "C2a", "C2b", "C3", "C4"} <= {r["claim"] for r in claims}
    for r in claims:
        assert int(r["samples"]) > 0 and r["seeds"] == "0"
        assert r["verdict"] == "estimate only, 1 seed"  # one seed: never a verdict, whatever the interval says
        if r["estimate"] != "nan":  # nan: undefined on the tiny study's 8 samples
            assert float(r["low"]) <= float(r["high"])
    # the training checks: every pretrained method, seed by seed, against the untrained encoder
    with open(study / "results" / "report" / "training.csv") as f:
        training = list(csv.DictReader(f))
    trained = ("supervised", "simclr", "simclr_oracle_elim", "simclr_mined_elim", "simclr_sim_r0p5_p0p5", "simclr_dose0p5")
    assert {(r["dataset"], r["method"]) for r in training} == {(d, m) for d in ("digits", "moving_digits") for m in trained}
    assert all(r["levelled"] == "False" and "too few" in r["why_not"] for r in training)  # one epoch shows no plateau
    assert "## Training checks" in md and "fails the training checks" in md
    assert (study / "results" / "report" / "moving_digits_accuracy_vs_eps.png").stat().st_size > 2000
    meta = yaml.safe_load((study / "results" / "decode" / "moving_digits" / "meta.json").read_text())
    assert meta["train"]["decoders"] == {"decord": meta["train"]["shape"][0]}
    # the mechanism section: both levers' methods, each link measured, the plots drawn
    assert "## Mechanism" in md and (study / "results" / "report" / "digits_mechanism.png").stat().st_size > 5000
    with open(study / "results" / "report" / "sensitivity.csv") as f:
        sensitivity = list(csv.DictReader(f))
    assert {"displacement", "radius", "logit_margin", "robust"} <= {r["metric"] for r in sensitivity}
    with open(study / "results" / "report" / "miner_grid.csv") as f:
        cells = {r["method"]: r for r in csv.DictReader(f) if r["dataset"] == "digits"}
    assert float(cells["simclr_sim_r0p5_p0p5"]["precision_measured"]) == pytest.approx(0.5, abs=0.1)  # the dilution worked
    assert float(cells["simclr_dose0p5"]["recall_measured"]) == pytest.approx(0.5, abs=0.05)  # the thinning worked


def test_every_report_file_is_a_declared_output_and_a_missing_one_reruns_the_report(study):
    """A file the report writes but does not declare would be neither rebuilt when deleted nor in the HTML report."""
    proc = snakemake(study, "-n", "--forcerun", "report")
    assert proc.returncode == 0, proc.stderr
    block = (proc.stdout + proc.stderr).split("rule report:")[1].split("log:")[0]
    declared = {Path(p).name for p in re.findall(r"results/report/[\w.]+", block)}
    written = {p.name for p in (study / "results" / "report").iterdir()}
    assert written <= declared and {"claims.csv", "training.csv", "report.md"} <= written
    claims = study / "results" / "report" / "claims.csv"
    kept = claims.read_bytes()
    claims.unlink()
    try:
        assert set(planned(study)) == {"report", "all"}
    finally:
        claims.write_bytes(kept)
    assert planned(study) == {}


def test_second_dry_run_has_nothing_to_do(study):
    assert planned(study) == {}


def test_evaluate_setting_reruns_only_evaluate_and_report(study):
    cfg = changed_config(study, lambda c: c["evaluate"]["attacks"]["pgd"].update(steps=3))
    assert set(planned(study, cfg)) == {"evaluate", "report", "all"}


def test_pretrain_setting_reruns_downstream_but_not_decode(study):
    cfg = changed_config(study, lambda c: c["pretrain"]["image"].update(epochs=2))
    jobs = planned(study, cfg)
    assert set(jobs) == {"pretrain", "mine", "finetune", "match", "evaluate", "analyse", "report", "all"}
    # images only (videos untouched): every trained image method, the mechanism's two levers included
    assert jobs["pretrain"] == 6 and jobs["mine"] == 1 and jobs["analyse"] == 1


def test_editing_evaluate_only_source_reruns_only_evaluate(study):
    """A statement in a file of the evaluate package reruns evaluate and what reads it, a comment nothing; a new
    file of the package counts although nothing imports it (the hash covers the whole stage package)."""
    source = study / "pipeline" / "evaluate" / "checks.py"
    added = study / "pipeline" / "evaluate" / "notes.py"
    original = source.read_text()
    try:
        source.write_text(original + "\n# a comment changes nothing the stage does\n")
        assert planned(study) == {}
        source.write_text(original + "\nEDITED = True  # a new statement changes the stage's code hash\n")
        assert set(planned(study)) == {"evaluate", "report", "all"}
        source.write_text(original)
        added.write_text("UNUSED = 1\n")
        assert set(planned(study)) == {"evaluate", "report", "all"}
    finally:
        source.write_text(original)
        added.unlink(missing_ok=True)
    assert planned(study) == {}


def test_snakemake_html_report(study):
    proc = snakemake(study, "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (study / "report.html").read_text(errors="replace")
    assert len(html) > 50_000 and "accuracy_vs_eps" in html
    # the description is generated from what ran, not a fixed "FGSM and PGD"
    page = " ".join(html.replace("\\n", " ").split())  # the page embeds the description as a JS string
    assert "attacked with fgsm, pgd, apgd_ce, apgd_t, fab_t, square, autoattack, pgd_l2, cw_l2" in page
    # the verdicts on the landing page, as tables (docutils renders the list-tables to HTML inside the page's JS)
    landing = page[page.index("The primary claims"):]
    assert "<table" in page and "estimate only, 1 seed" in landing and "supervised - simclr" in landing and "digits (8/255)" in landing
    assert page.index("The primary claims") < page.index("Ran on ")  # the verdicts come before the details


def test_misspelt_key_stops_before_any_job(tmp_path):
    for name in COPIED:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    cfg = changed_config(tmp_path, lambda c: c["evaluate"]["attacks"]["pgd"].update(stpes=3))
    proc = snakemake(tmp_path, configfile=cfg)
    assert proc.returncode != 0 and "stpes" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()
    cfg = changed_config(tmp_path, lambda c: c.update(datasets=["digits", "cifar"]))
    proc = snakemake(tmp_path, "-n", configfile=cfg)
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "config error at 'datasets[1]'" in out and "cifar" in out


# ---- what reruns after a change (issue: rerun exactly what changed) ----------------------
def test_adding_a_seed_runs_only_the_new_seeds_jobs(study):
    """seeds [0] -> [0, 1] for one method: its seed-1 pretrain/finetune/evaluate per dataset, then the summaries."""
    cfg = changed_config(study, lambda c: c["pretrain"]["methods"]["simclr_oracle_elim"].update(seeds=[0, 1]))
    # per dataset: pretrain 1, finetune 1 (slf), evaluate 1; analyse covers every encoder of a dataset
    assert planned(study, cfg) == {"pretrain": 2, "finetune": 2, "evaluate": 2, "analyse": 2, "report": 1, "all": 1}


def test_adding_a_method_runs_only_its_jobs(study):
    cfg = changed_config(study, lambda c: c["pretrain"]["methods"].update(supcon={"loss": "supcon"}))
    assert planned(study, cfg) == {"pretrain": 2, "finetune": 2, "evaluate": 2, "analyse": 2, "report": 1, "all": 1}


def test_a_protocol_covering_one_more_method_runs_only_that_method(study):
    cfg = changed_config(study, lambda c: c["finetune"]["protocols"]["aff_trades"].update(methods=["supervised", "simclr"]))
    assert planned(study, cfg) == {"finetune": 2, "evaluate": 2, "report": 1, "all": 1}


def test_comments_and_docstrings_in_every_module_rerun_nothing(study):
    """Every pipeline/*.py gets a new comment line, a changed module docstring and a changed function docstring."""
    originals = {p: p.read_text() for p in (study / "pipeline").rglob("*.py")}
    try:
        for path, text in originals.items():
            edited = text.replace('"""', '"""Edited docstring. ', 1) if text.lstrip().startswith('"""') else text
            edited = re.sub(r'(\n    """)', r'\1(edited) ', edited, count=1)
            path.write_text(edited + "\n# a new comment at the end\n")
        assert planned(study) == {}
    finally:
        for path, text in originals.items():
            path.write_text(text)


def test_augmentation_change_reruns_pretrain_and_downstream_not_embed_or_decode(study):
    source = study / "pipeline" / "augment.py"
    original = source.read_text()
    assert "LUMA = (0.299, 0.587, 0.114)" in original
    try:
        source.write_text(original.replace("LUMA = (0.299, 0.587, 0.114)", "LUMA = (0.3, 0.587, 0.113)"))
        assert set(planned(study)) == {"pretrain", "mine", "finetune", "match", "evaluate", "analyse", "report", "all"}
    finally:
        source.write_text(original)


def test_changed_schema_default_reruns_the_jobs_it_reaches(study):
    """Defaults reach the rules as params: a new default for an evaluate key the tiny config leaves unset."""
    schema = study / "workflow" / "schemas" / "config.schema.yaml"
    original = schema.read_text()
    data = yaml.safe_load(original)
    assert "batch_size" not in yaml.safe_load((study / ".test" / "config.yaml").read_text())["evaluate"]
    data["properties"]["evaluate"]["properties"]["batch_size"]["default"] += 1
    try:
        schema.write_text(yaml.safe_dump(data, sort_keys=False))
        assert set(planned(study)) == {"evaluate", "report", "all"}
    finally:
        schema.write_text(original)


def test_the_rules_conda_environment_lists_the_packages_pyproject_installs():
    """workflow/envs/pipeline.yaml (for `--sdm conda`) and pyproject.toml's dependencies cannot drift apart."""
    import tomllib

    env = yaml.safe_load((REPO / "workflow" / "envs" / "pipeline.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(pip) == sorted(project)
    rules = list((REPO / "workflow" / "rules").glob("*.smk"))
    assert all('conda:\n        "../envs/pipeline.yaml"' in r.read_text() for r in rules if "\nrule " in "\n" + r.read_text())
