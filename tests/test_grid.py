"""The study grid: which jobs exist, what each job receives, and the cross-key checks."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import pytest
import yaml

from pipeline import grid as G
from pipeline import validation
from tests.conftest import REPO, validated


@pytest.fixture(scope="module")
def default_config() -> dict:
    """The extended study (every method and protocol) on both datasets of the default study (images and clips)."""
    extended = yaml.safe_load((REPO / "config" / "extended.yaml").read_text())
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    extended["datasets"], extended["embed"], extended["decode"] = default["datasets"], default["embed"], default["decode"]
    extended["pretrain"]["video"], extended["match"] = default["pretrain"]["video"], default["match"]
    extended["pretrain"]["methods"]["supervised"]["snapshots"] = default["pretrain"]["methods"]["supervised"]["snapshots"]
    return validated(extended)


@pytest.fixture()
def config(default_config) -> dict:
    return copy.deepcopy(default_config)


def naive_runs(config: dict) -> set[tuple[str, int]]:
    return {(m, s) for m, mcfg in config["pretrain"]["methods"].items() for s in mcfg["seeds"] or config["seeds"]}


def naive_protocol_runs(config: dict) -> set[tuple[str, int, str]]:
    """The finetune/evaluate jobs, spelled out from the config with plain loops."""
    out = set()
    for p, entry in config["finetune"]["protocols"].items():
        for m, mcfg in config["pretrain"]["methods"].items():
            if entry["methods"] and m not in entry["methods"]:
                continue
            for s in mcfg["seeds"] or config["seeds"]:
                if not entry["seeds"] or s in entry["seeds"]:
                    out.add((m, s, p))
    return out


def test_grid_of_the_default_study_matches_a_naive_enumeration(config):
    grid = G.Grid.from_config(config)
    assert grid.datasets == {"digits": "image", "moving_digits": "video"}
    assert grid.embeds == ["moving_digits"]
    assert set(grid.protocol_runs()) == naive_protocol_runs(config)
    assert len(grid.protocol_runs()) == len(set(grid.protocol_runs()))
    runs = {(m, s) for m, c in config["pretrain"]["methods"].items() for s in c["seeds"] or config["seeds"]}
    assert set(grid.runs()) == runs
    assert grid.mined_seeds() == sorted({s for m, s in runs if config["pretrain"]["methods"][m]["false_negatives"] == "mined"})
    assert grid.seeds_of("clae") == [0] and grid.seeds_of("simclr") == config["seeds"] == [0, 1, 2, 3, 4]
    assert grid.seeds_of("simclr", "alf") == [0] and grid.methods_of("alf") == ["supervised", "simclr"]
    assert "alf" in grid.protocols_of("simclr") and "alf" not in grid.protocols_of("clae")


def test_jobs_list_every_stage_once_per_job(config):
    grid = G.Grid.from_config(config)
    jobs = grid.jobs()
    assert len({j.id for j in jobs}) == len({(j.stage, j.name) for j in jobs}) == len(jobs)
    count = {stage: sum(1 for j in jobs if j.stage == stage) for stage in {j.stage for j in jobs}}
    n_ds = len(grid.datasets)
    assert count["pretrain"] == n_ds * len(naive_runs(config))
    assert count["finetune"] == n_ds * len(naive_protocol_runs(config))
    assert count["evaluate"] == n_ds * (len(naive_protocol_runs(config)) + len(grid.matched_seeds))
    assert count["match"] == n_ds * len(grid.matched_seeds) and grid.matched_method == "supervised_matched"
    assert count["mine"] == n_ds * len({s for m, s in naive_runs(config) if config["pretrain"]["methods"][m]["false_negatives"] == "mined"})
    assert count["embed"] == 1 and count["decode"] == count["analyse"] == n_ds and count["report"] == 1


def test_jobs_follow_their_dependencies_and_name_the_files_the_report_reads(config):
    grid = G.Grid.from_config(config)
    seen: set[str] = set()
    for job in grid.jobs():
        assert set(job.deps) <= seen, job.id  # a topological order: every dependency listed before
        seen.add(job.id)
    jobs = {j.id: j for j in grid.jobs()}
    assert jobs["evaluate:digits:simclr:0:slf"].deps == ("finetune:digits:simclr:0:slf",)
    assert jobs["evaluate:digits:supervised_matched:0:slf"].deps == ("match:digits::0:",)
    assert jobs["match:digits::0:"].deps == ("pretrain:digits:supervised:0:", "finetune:digits:simclr:0:slf")
    assert jobs["decode:moving_digits:::"].deps == ("embed:moving_digits:::",)
    assert "match:digits::0:" in jobs["analyse:digits:::"].deps  # analyse describes the matched snapshots too
    inputs = grid.report_inputs()
    first = next(j for j in grid.jobs() if j.stage == "evaluate")
    assert inputs["evaluate"][0] == G.eval_path(first.dataset, first.method, first.seed, first.protocol)
    assert "results/pretrain/digits/simclr/seed0/metrics.json" in inputs["pretrain"]
    assert "results/decode/digits/meta.json" in inputs["decode"] and "embed" not in inputs and "report" not in inputs


def test_grid_round_trips_through_json(config):
    grid = G.Grid.from_config(config)
    assert G.Grid.from_dict(json.loads(grid.to_json())) == grid


def test_slices_leave_out_the_grid_only_lists(config):
    """Which seeds a method runs, and which methods/seeds a protocol covers, never reach a job."""
    config["pretrain"]["methods"]["clae"]["seeds"] = [0]
    before = copy.deepcopy((G.pretrain_slice(config, "digits", "clae"), G.finetune_slice(config, "alf")))
    config["pretrain"]["methods"]["clae"]["seeds"] = [0, 1, 2]
    config["finetune"]["protocols"]["alf"]["methods"] = ["supervised"]
    config["finetune"]["protocols"]["alf"]["seeds"] = [1]
    after = G.pretrain_slice(config, "digits", "clae"), G.finetune_slice(config, "alf")
    assert before == after
    assert before[0]["model"] == config["pretrain"]["image"]
    assert G.pretrain_slice(config, "moving_digits", "clae")["model"] == config["pretrain"]["video"]
    assert set(before[1]["protocols"]) == {"alf"}


def test_slices_change_with_a_real_setting(config):
    before = copy.deepcopy(G.pretrain_slice(config, "digits", "clae"))
    config["pretrain"]["methods"]["clae"]["attack"]["eps"] = 2
    assert G.pretrain_slice(config, "digits", "clae") != before
    assert G.pretrain_slice(config, "digits", "simclr") == G.pretrain_slice(copy.deepcopy(config), "digits", "simclr")


def test_evaluate_slice_checks_steps_at_each_datasets_primary_eps(config):
    """`epsilons: primary` becomes the job's dataset's report.primary_eps; a dataset without one gets [] (the
    largest); an explicit list reaches every dataset unchanged; the config itself is left as it was."""
    config["report"]["primary_eps"] = {"digits": 16}
    config["evaluate"]["pgd_steps_check"]["epsilons"] = "primary"
    assert G.evaluate_slice(config, "digits")["pgd_steps_check"]["epsilons"] == [16]
    assert G.evaluate_slice(config, "moving_digits")["pgd_steps_check"]["epsilons"] == []
    assert config["evaluate"]["pgd_steps_check"]["epsilons"] == "primary"
    config["evaluate"]["pgd_steps_check"]["epsilons"] = [8, 32]
    assert G.evaluate_slice(config, "moving_digits")["pgd_steps_check"]["epsilons"] == [8, 32]
    rest = {k: v for k, v in G.evaluate_slice(config, "digits").items() if k != "pgd_steps_check"}
    assert rest == {k: v for k, v in config["evaluate"].items() if k != "pgd_steps_check"}


def test_default_study_checks_steps_where_its_claims_are_read():
    default = validated(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    for dataset, eps in default["report"]["primary_eps"].items():
        assert G.evaluate_slice(default, dataset)["pgd_steps_check"]["epsilons"] == [eps]


@pytest.mark.parametrize("edit,key", [
    (lambda c: c.update(datasets=["digits", "cifar"]), "datasets[1]"),
    (lambda c: c["report"].update(csl_method="byol"), "report.csl_method"),
    (lambda c: c["mine"].update(warmup_method="nope"), "mine.warmup_method"),
    (lambda c: c["mine"].update(warmup_method="rocl_mined_elim"), "mine.warmup_method"),
    (lambda c: c["pretrain"]["methods"]["rocl_mined_elim"].update(seeds=[0, 5]), "pretrain.methods.rocl_mined_elim.seeds"),
    (lambda c: c["finetune"]["protocols"]["alf"].update(methods=["byol"]), "finetune.protocols.alf.methods"),
    (lambda c: c["finetune"]["protocols"]["alf"].update(seeds=[7]), "finetune.protocols.alf.seeds"),
    (lambda c: c["decode"]["moving_digits"].update(root="results/embed/other"), "decode.moving_digits.root"),
])
def test_reference_checks_name_the_key(config, edit, key):
    edit(config)
    with pytest.raises(G.GridError, match=re.escape(f"config error at '{key}'")):
        validation.check_references(config)


def test_default_study_passes_the_reference_checks(config):
    validation.check_references(config)


def test_grid_module_does_not_import_torch():
    code = "import sys, pipeline.grid; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
