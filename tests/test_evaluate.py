"""Evaluate stage end to end on a tiny classifier, and its sanity checks."""

from __future__ import annotations

import json

import pytest

from pipeline.config import EvaluateConfig, FinetuneConfig, PretrainConfig, from_dict
from pipeline.evaluate import run, sanity
from tests.conftest import pretrain_cfg, schema_defaults


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, digits_dir):
    from pipeline import finetune, pretrain

    tmp = tmp_path_factory.mktemp("clf")
    cfg = pretrain_cfg({"loss": "ce"}, {"epochs": 3})
    pretrain.run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, digits_dir, None, tmp / "encoder.pt", tmp / "m.json")
    ft = from_dict(FinetuneConfig, schema_defaults("finetune", {"device": "cpu", "epochs": 30}))
    finetune.run(ft, "slf", 0, digits_dir, tmp / "encoder.pt", tmp / "classifier.pt", tmp / "ft.json")
    return tmp / "classifier.pt"


def eval_cfg(**kw):
    base = {"device": "cpu", "max_samples": 120, "batch_size": 64, "epsilons": [0, 2, 8, 32],
            "attacks": {"fgsm": {}, "pgd": {"steps": 5, "step_size": 0.4, "random_start": True, "restarts": 1}}}
    return from_dict(EvaluateConfig, schema_defaults("evaluate", {**base, **kw}))


def test_evaluate_records_monotone_bounded_results(tmp_path, digits_dir, classifier):
    r = run(eval_cfg(), 0, digits_dir, classifier, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["clean_accuracy"] == r["clean_accuracy"]
    assert r["samples"] == 120 and r["clean_accuracy"] > 0.5
    for name in ("fgsm", "pgd"):
        accs = [r["attacks"][name][str(float(e))]["accuracy"] for e in (0, 2, 8, 32)]
        assert accs[0] == pytest.approx(r["clean_accuracy"])  # eps 0 changes nothing
        assert accs[-1] < accs[0]
        assert all(v["within_eps"] and v["in_range"] for v in r["attacks"][name].values())
    worst = r["attacks"]["any"]
    for e in ("2.0", "8.0", "32.0"):
        assert worst[e]["accuracy"] <= min(r["attacks"]["fgsm"][e]["accuracy"], r["attacks"]["pgd"][e]["accuracy"]) + 1e-9
    assert r["runtime"]["precision"] == "float32"


def test_resumed_evaluation_is_reproducible(tmp_path, digits_dir, classifier):
    a = run(eval_cfg(), 0, digits_dir, classifier, tmp_path / "a.json")
    b = run(eval_cfg(), 0, digits_dir, classifier, tmp_path / "b.json")
    accuracy = lambda r: {k: {e: v["accuracy"] for e, v in per.items()} for k, per in r["attacks"].items()}  # noqa: E731
    assert accuracy(a) == accuracy(b) and a["clean_accuracy"] == b["clean_accuracy"]


def test_sanity_flags_robust_above_clean_and_non_monotone():
    ok = {"within_eps": True, "in_range": True, "max_linf": 0.0}
    results = {"pgd": {"1": {"accuracy": 0.5, **ok}, "2": {"accuracy": 0.6, **ok}, "4": {"accuracy": 0.9, **ok}}}
    warnings = sanity(results, clean=0.8, epsilons=[1, 2, 4])
    assert any("above clean" in w for w in warnings) and any("increases with eps" in w for w in warnings)
    assert sanity({"pgd": {"1": {"accuracy": 0.5, **ok}}}, clean=0.8, epsilons=[1]) == []
