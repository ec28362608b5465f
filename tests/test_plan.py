"""The cost forecast: its pass counts equal the backbone calls the real stage code makes, its grid
equals the workflow's, its wall-time simulation respects the DAG, and the CLI prints both studies.

Counting: the backbone registry entry is wrapped so that every forward adds its batch size to
`fwd` and every backward through its output adds the gradient's batch size to `bwd`; the real
`pipeline.<stage>.run` then runs for one epoch on the digits and the totals must equal the plan's.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from pipeline import plan
from pipeline.grid import Grid, evaluate_slice
from pipeline.models import backbones
from tests.conftest import REPO, pretrain_cfg, schema_defaults, validated

COUNTS = {"fwd": 0, "bwd": 0}


class _CountBackward(torch.autograd.Function):
    """Identity whose backward counts the samples the gradient flows through."""

    @staticmethod
    def forward(ctx, out):  # noqa: D102
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        COUNTS["bwd"] += grad.shape[0]
        return grad


class CountingBackbone(nn.Module):
    """A backbone that counts the samples of each forward and of each backward through it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        COUNTS["fwd"] += x.shape[0]
        return _CountBackward.apply(self.net(x))


@pytest.fixture
def counting(monkeypatch):
    """Wrap resnet_small in the counter for the test; returns a function that reads and resets it."""
    original = backbones.BACKBONES["resnet_small"]

    def build(width, small_input):
        net, dim = original(width, small_input)
        return CountingBackbone(net), dim

    monkeypatch.setitem(backbones.BACKBONES, "resnet_small", build)

    def take() -> plan.Passes:
        out = plan.Passes(COUNTS["fwd"], COUNTS["bwd"])
        COUNTS.update(fwd=0, bwd=0)
        return out

    take()
    return take


def split_sizes(data_dir) -> tuple[int, int]:
    return (len(np.load(data_dir / "train_y.npy")), len(np.load(data_dir / "test_y.npy")))


MODEL = {"epochs": 1, "batch_size": 100, "knn_every": 0}
ATTACK = {"eps": 8, "steps": 2, "step_size": 0.5, "random_start": True, "bn_mode": "eval"}


def test_counter_sees_one_training_pass_exactly(counting):
    net = backbones.BACKBONES["resnet_small"](4, True)[0]
    x = torch.rand(5, 3, 8, 8, requires_grad=True)
    net(x).sum().backward()
    with torch.no_grad():
        net(x[:3])
    assert counting() == plan.Passes(8, 5)


@pytest.mark.parametrize("method", [
    {"loss": "ce"}, {"loss": "supcon"}, {"loss": "nt_xent", "false_negatives": "oracle"}, {"loss": "focal_infonce"},
    {"loss": "clae", "attack": {**ATTACK, "steps": 1, "random_start": False, "bn_mode": "train"}},
    {"loss": "rocl", "attack": ATTACK}, {"loss": "acl", "attack": {**ATTACK, "steps": 3}},
], ids=lambda m: m["loss"])
def test_pretrain_passes_equal_the_counted_calls(tmp_path, digits_dir, counting, method):
    from pipeline import pretrain
    from pipeline.config import PretrainConfig, from_dict

    cfg = pretrain_cfg(method, MODEL)
    pretrain.run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, digits_dir, None, tmp_path / "e.pt", tmp_path / "m.json")
    n_train, n_test = split_sizes(digits_dir)
    assert counting() == plan.pretrain_job_passes(cfg["model"], cfg["method"], n_train, n_test)


def test_knn_monitor_count_follows_knn_every():
    assert plan.knn_monitors(10, 0) == 1 and plan.knn_monitors(10, 5) == 3 and plan.knn_monitors(10, 3) == 4


@pytest.fixture
def encoder(tmp_path, digits_dir, counting):
    from pipeline import pretrain
    from pipeline.config import PretrainConfig, from_dict

    cfg = pretrain_cfg({"loss": "nt_xent"}, MODEL)
    pretrain.run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, digits_dir, None, tmp_path / "e.pt", tmp_path / "m.json")
    counting()
    return tmp_path / "e.pt"


def finetune_section(protocol: str, **adversarial) -> dict:
    entry = {} if protocol == "slf" else schema_defaults("adversarial", {"epochs": 2, "steps": 2, "holdout": 50, "batch_size": 64,
                                                                          "monitor_steps": 3, **adversarial})
    return schema_defaults("finetune", {"device": "cpu", "epochs": 30, "protocols": {protocol: entry}})


@pytest.mark.parametrize("protocol,training", [("slf", None), ("alf", "pgd_at"), ("aff", "trades"), ("aff_fast", "fgsm_rs"),
                                               ("alf_trades", "trades")])
def test_finetune_passes_equal_the_counted_calls(tmp_path, digits_dir, encoder, counting, protocol, training):
    from pipeline import finetune
    from pipeline.config import FinetuneConfig, from_dict

    section = finetune_section(protocol, **({"training": training} if training else {}))
    finetune.run(from_dict(FinetuneConfig, section), protocol, 0, digits_dir, encoder, tmp_path / "c.pt", tmp_path / "f.json")
    n_train, n_test = split_sizes(digits_dir)
    assert counting() == plan.finetune_job_passes(protocol, section, n_train, n_test)


def evaluate_section(cascade: bool) -> dict:
    """Through the schema as the Snakefile fills it (attack entries get their defaults)."""
    config = validated({"datasets": ["digits"], "decode": {"digits": {"source": "sklearn_digits"}}, "evaluate": {
        "device": "cpu", "max_samples": 150, "batch_size": 64, "epsilons": [2, 8], "epsilons_l2": [0.5], "cascade": cascade,
        "attacks": {"fgsm": {}, "pgd": {"steps": 2, "max_samples": 100}, "pgd_l2": {"steps": 1, "restarts": 2}},
        "pgd_steps_check": {"factor": 2, "max_samples": 30},
        "corruptions": {"names": ["gaussian_noise", "contrast", "frame_drop"], "severities": [1, 3], "max_samples": 40}}})
    return config["evaluate"]


@pytest.mark.parametrize("cascade", [False, True])
def test_evaluate_passes_equal_or_bound_the_counted_calls(tmp_path, digits_dir, encoder, counting, cascade):
    from pipeline import evaluate, finetune
    from pipeline.config import EvaluateConfig, FinetuneConfig, from_dict

    finetune.run(from_dict(FinetuneConfig, finetune_section("slf")), "slf", 0, digits_dir, encoder, tmp_path / "c.pt", tmp_path / "f.json")
    counting()
    section = evaluate_section(cascade)
    evaluate.run(from_dict(EvaluateConfig, section), 0, digits_dir, tmp_path / "c.pt", tmp_path / "r.json")
    counted, (_, n_test) = counting(), split_sizes(digits_dir)
    planned = plan.evaluate_job_passes(from_dict(EvaluateConfig, section), n_test, is_video=False).passes
    if cascade:  # chained attacks see only the still-robust samples: the plan is an upper bound
        assert counted.fwd <= planned.fwd and counted.bwd <= planned.bwd and counted != planned
    else:
        assert counted == planned


def test_mine_and_analyse_passes_equal_the_counted_calls(tmp_path, digits_dir, encoder, counting):
    from pipeline import analyse, mine
    from pipeline.config import AnalyseConfig, MineConfig, from_dict

    n_train, n_test = split_sizes(digits_dir)
    mine_cfg = schema_defaults("mine", {"device": "cpu"})  # FNC with support views, every algorithm compared
    mine.run(from_dict(MineConfig, mine_cfg), 0, digits_dir, encoder, tmp_path / "mine")
    assert counting() == plan.mine_job_passes(n_train, plan.mine_views(mine_cfg))
    cfg = schema_defaults("analyse", {"device": "cpu", "max_samples": 200})
    analyse.run(from_dict(AnalyseConfig, cfg), digits_dir, [("a", 0, encoder), ("b", 0, encoder)], tmp_path / "a.json")
    assert counting() == plan.analyse_job_passes(200, n_train, n_test, encoders=2, sensitivity_samples=cfg["sensitivity_samples"],
                                                 sensitivity_steps=cfg["sensitivity_steps"])


def test_plan_mirrors_the_registries():
    from pipeline.attacks import ATTACKS
    from pipeline.corruptions import VIDEO_CORRUPTIONS

    assert plan.VIDEO_ONLY_CORRUPTIONS == set(VIDEO_CORRUPTIONS)
    assert plan.L2_ATTACKS == {a for a, entry in ATTACKS.items() if entry.norm == "L2"}


# ---- the grid and the schedule --------------------------------------------------------------------
STUDIES = ["config/cifar10_ucf101.yaml", "config/cifar100_hmdb51.yaml"]


@pytest.mark.parametrize("study", STUDIES)
def test_study_jobs_cover_every_method_protocol_and_dependency(study):
    config = plan.load_study(REPO / study)
    jobs = plan.study_jobs(config)
    ids = {j["id"] for j in jobs}
    assert all(d in ids for j in jobs for d in j["deps"])
    count = lambda stage: sum(j["stage"] == stage for j in jobs)  # noqa: E731
    runs = sum(len(plan.method_seeds(config, m)) for m in config["pretrain"]["methods"])
    protocols = list(config["finetune"]["protocols"])
    matched = len(plan.method_seeds(config, "supervised"))  # the match stage's supervised_matched classifiers
    assert count("pretrain") == 2 * runs and count("finetune") == 2 * runs * len(protocols)
    assert count("evaluate") == 2 * (runs * len(protocols) + matched) and count("match") == 2 * matched
    assert set(protocols) == {"slf", "alf", "aff"}
    assert {j["method"] for j in jobs if j["stage"] == "evaluate"} == set(config["pretrain"]["methods"]) | {"supervised_matched"}
    mined = [j for j in jobs if j["stage"] == "pretrain" and config["pretrain"]["methods"][j["method"]]["false_negatives"] == "mined"]
    assert mined and all(any(d.startswith("mine:") for d in j["deps"]) for j in mined)
    assert {"rocl_mined_elim", "acl_mined_elim", "simclr_mined_elim"} <= {j["method"] for j in mined}
    assert {"fgsm", "pgd", "autoattack"} <= set(config["evaluate"]["attacks"]) and len(config["evaluate"]["corruptions"]["names"]) == 13


def _costed(hours: dict[str, float], deps: dict[str, list[str]]) -> list[plan.Costed]:
    return [plan.Costed({"id": j, "stage": "x"}, h, 0.0, "", deps.get(j, [])) for j, h in hours.items()]


def test_wall_time_respects_dependencies_and_bounds():
    # a -> b -> c chain of 3 h and five independent 1 h jobs
    hours = {"a": 1.0, "b": 1.0, "c": 1.0, **{f"x{i}": 1.0 for i in range(5)}}
    costed = _costed(hours, {"b": ["a"], "c": ["b"]})
    assert plan.critical_path_hours(costed) == 3.0
    assert plan.wall_hours(costed, 1) == 8.0
    assert plan.wall_hours(costed, 100) == 3.0  # the chain, not total / N
    assert plan.wall_hours(costed, 3) == 3.0  # chain on one GPU, the five others on two
    for n in (1, 2, 3, 4):
        assert plan.wall_hours(costed, n) >= max(3.0, 8.0 / n)


def test_attack_passes_and_accuracy_scaling():
    from pipeline.config import EvaluateConfig, from_dict
    from pipeline.config.attacks import PgdSettings

    pgd = PgdSettings(max_samples=10, steps=20, step_size=0.25, random_start=True, restarts=1, epsilons=[])
    assert plan.attack_passes("pgd", pgd, 10) == plan.Passes(210, 200)
    study = plan.load_study(REPO / STUDIES[0])
    section = evaluate_slice(study, study["datasets"][0])
    full = plan.evaluate_job_passes(from_dict(EvaluateConfig, section), 10_000, False, clean=0.8, robust=0.4)
    assert full.autoattack_clean == 8_000 and full.autoattack_robust == 4_000
    section["attacks"]["autoattack"]["max_samples"] = 1000
    assert plan.evaluate_job_passes(from_dict(EvaluateConfig, section), 10_000, False, clean=0.8, robust=0.4).autoattack_robust == 400


def test_aa_calibration_reproduces_its_anchor():
    info = {"backbone": "resnet18", "frames": 1, "size": 32}
    assert 1000 * plan.AA_PER_ROBUST_SAMPLE / (plan.rate(info, "fp32", "h100") * plan.AA_EFFICIENCY) == pytest.approx(231.0)


@pytest.mark.parametrize("study", STUDIES)
def test_cli_prints_totals_wall_times_and_assumptions_without_torch(study):
    code = (f"import sys, runpy; sys.argv = ['plan', '--configfile', {study!r}, '--gpu', 'h100'];"
            "sys.modules['torch'] = None; runpy.run_module('pipeline.plan', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for n in (1, 8, 64):
        assert f"wall time on {n:3d} GPU(s)" in text
    assert "GPU-hours on h100" in text and "assumptions:" in text and "2026-11-22" in text
    assert "evaluate:" in text and ":aff" in text


def test_unknown_backbone_and_gpu_name_the_key():
    config = plan.load_study(REPO / STUDIES[0])
    config["pretrain"]["image"]["backbone"] = "resnet_small"
    with pytest.raises(ValueError, match="pretrain.image.backbone"):
        plan.forecast(config, "h100")
    with pytest.raises(ValueError, match="--gpu"):
        plan.forecast(config, "a100")


@pytest.mark.parametrize("study", STUDIES)
def test_defaults_without_snakemake_equal_snakemakes(study):
    import yaml

    config = yaml.safe_load((REPO / study).read_text())
    plan.fill_defaults(config)
    assert config == plan.load_study(REPO / study)


def test_embedded_split_sizes_equal_what_decode_writes(digits_dir, clips_dir):
    """The sizes plan computes for the embedded studies are the decoded splits' sizes (9 videos per class here)."""
    config = {"decode": {"digits": {"source": "sklearn_digits", "test_fraction": 0.3},
                         "clips": {"source": "ucf101", "root": "results/embed/clips"}},
              "embed": {"clips": {"videos_per_class": 9}}}
    for name, folder in (("digits", digits_dir), ("clips", clips_dir)):
        train, test, classes = plan.computed_sizes(config, name)
        assert (train, test, classes) == (len(np.load(folder / "train_y.npy")), len(np.load(folder / "test_y.npy")), 10)
    assert plan.computed_sizes({"decode": {"x": {"source": "cifar10"}}}, "x") is None


@pytest.mark.parametrize("study", ["config/config.yaml", "config/mechanism.yaml", ".test/config.yaml"])
def test_the_embedded_studies_forecast_on_cpu(study):
    config = plan.load_study(REPO / study)
    costed = plan.forecast(config, "cpu")
    embeds = Grid.from_config(config).embeds
    assert [c.job["dataset"] for c in costed if c.job["stage"] == "embed"] == embeds
    assert {c.job["stage"] for c in costed} >= {"decode", "pretrain", "finetune", "evaluate", "analyse", "report"}
    assert all(c.gpu_hours > 0 for c in costed)  # every job, decode and report included, takes time on a CPU
    one, two = plan.wall_hours(costed, 1), plan.wall_hours(costed, 2)
    assert two < one == pytest.approx(sum(c.gpu_hours for c in costed)) and two >= plan.critical_path_hours(costed)
    lines = plan.summary_lines(costed, "cpu", (1, 2))
    assert "core-minutes" in lines[0] and any("wall time on   2 core(s)" in line for line in lines)
