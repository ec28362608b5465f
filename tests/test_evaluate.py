"""Evaluate stage end to end on tiny classifiers (images and clips): cascade, resume, AutoAttack, checks."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from pipeline import evaluate, finetune
from pipeline.config import EvaluateConfig, FinetuneConfig, from_dict
from pipeline.data import load_split, num_classes
from pipeline.evaluate import attacking
from pipeline.io import read_json, save_torch
from pipeline.models import Classifier, build_encoder
from pipeline.models.classifier import load_classifier, load_encoder
from pipeline.models.dual_bn import BATCH_NORMS, adversarial_bn, branch_state_dict, convert_dual_bn
from tests.conftest import schema_defaults


def train_classifier(data_dir, path, backbone: str, steps: int) -> None:
    """A small classifier trained end to end with Adam, saved in the finetune checkpoint format."""
    torch.manual_seed(0)
    meta = read_json(data_dir / "meta.json")
    args = {"backbone": backbone, "width": 4, "small_input": True, "mean": meta["mean"], "std": meta["std"]}
    model = Classifier(build_encoder(args), num_classes(data_dir))
    train = load_split(data_dir, "train", torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        idx = torch.randint(0, len(train), (64,))
        loss = torch.nn.functional.cross_entropy(model(train.batch(idx)), train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_torch(path, {"model": model.state_dict(), "model_args": args, "num_classes": model.head.out_features, "protocol": "slf"})


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, digits_dir):
    path = tmp_path_factory.mktemp("clf") / "classifier.pt"
    train_classifier(digits_dir, path, "resnet_small", steps=80)
    return path


@pytest.fixture(scope="module")
def clip_classifier(tmp_path_factory, clips_dir):
    path = tmp_path_factory.mktemp("clip_clf") / "classifier.pt"
    train_classifier(clips_dir, path, "r3d_small", steps=25)
    return path


SCHEMA_ATTACKS = schema_defaults("evaluate")["attacks"]


def eval_cfg(attacks: dict, **kw) -> EvaluateConfig:
    """The schema's defaults, the given attacks (settings over their defaults) and overrides."""
    base = {"device": "cpu", "max_samples": 120, "batch_size": 64, "epsilons": [0, 2, 8, 32], "epsilons_l2": [],
            "pgd_steps_check": {"factor": 0}, "corruptions": {"names": []}}
    cfg = schema_defaults("evaluate", {**base, **kw})
    cfg["attacks"] = {name: {**copy.deepcopy(SCHEMA_ATTACKS[name]), **settings} for name, settings in attacks.items()}
    return from_dict(EvaluateConfig, cfg)


PGD = {"steps": 5, "step_size": 0.4, "random_start": True, "restarts": 1}


def accuracies(r: dict) -> dict:
    acc = {k: {e: v["accuracy"] for e, v in per.items()} for k, per in r["attacks"].items()}
    acc["corruptions"] = {k: {s: v["accuracy"] for s, v in per.items()} for k, per in r["corruptions"].items()}
    return acc


def test_evaluate_records_monotone_bounded_results(tmp_path, digits_dir, classifier):
    r = evaluate.run(eval_cfg({"fgsm": {}, "pgd": PGD}), 0, digits_dir, classifier, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["clean_accuracy"] == r["clean_accuracy"]
    assert r["samples"] == 120 and r["clean_accuracy"] > 0.5 and r["cascade"]
    for name in ("fgsm", "pgd"):
        accs = [r["attacks"][name][str(float(e))]["accuracy"] for e in (0, 2, 8, 32)]
        assert accs[0] == pytest.approx(r["clean_accuracy"])  # eps 0 changes nothing
        assert accs[-1] < accs[0] and accs == sorted(accs, reverse=True)
        assert all(v["within_eps"] and v["in_range"] for v in r["attacks"][name].values())
    for e in ("2.0", "8.0", "32.0"):  # cascade: PGD's number is after FGSM, "any" after both
        assert r["attacks"]["pgd"][e]["accuracy"] <= r["attacks"]["fgsm"][e]["accuracy"]
        assert r["attacks"]["any"][e]["accuracy"] == r["attacks"]["pgd"][e]["accuracy"]
        assert r["attacks"]["pgd"][e]["attacked"] == round(r["attacks"]["fgsm"][e]["accuracy"] * 120)  # only the survivors
    assert r["runtime"]["precision"] == "float32" and r["warnings"] == []
    assert not (tmp_path / ".r.json.partial").exists()


def test_cascade_worst_case_is_never_above_any_single_attack(tmp_path, digits_dir, classifier):
    """Deterministic attacks (no random start): the cascade's per-sample worst case equals the one of
    attacks run on every sample, and is below each of them."""
    attacks = {"fgsm": {}, "pgd": {**PGD, "random_start": False}, "pgd_l2": {**PGD, "random_start": False}}
    kw = {"epsilons": [2, 8], "epsilons_l2": [0.2, 0.5], "max_samples": 100}
    chained = evaluate.run(eval_cfg(attacks, cascade=True, **kw), 0, digits_dir, classifier, tmp_path / "a.json")["attacks"]
    alone = evaluate.run(eval_cfg(attacks, cascade=False, **kw), 0, digits_dir, classifier, tmp_path / "b.json")["attacks"]
    for worst, names in (("any", ("fgsm", "pgd")), ("any_l2", ("pgd_l2",))):
        for e in chained[worst]:
            assert chained[worst][e]["accuracy"] <= min(alone[a][e]["accuracy"] for a in names) + 1e-9
            assert chained[worst][e]["accuracy"] == pytest.approx(alone[worst][e]["accuracy"], abs=1 / 100 + 1e-9)
            assert all(chained[a][e]["accuracy"] <= alone[a][e]["accuracy"] + 1 / 100 for a in names)
    assert chained["pgd_l2"]["0.5"]["norm"] == "L2" and chained["pgd_l2"]["0.5"]["max_norm"] <= 0.5 + 1e-6


def test_resumed_evaluation_equals_uninterrupted(tmp_path, digits_dir, classifier, monkeypatch):
    cfg = eval_cfg({"fgsm": {}, "pgd": PGD, "apgd_ce": {"steps": 5}}, epsilons=[2, 8],
                   corruptions={"names": ["gaussian_noise", "jpeg"], "severities": [1, 5]})
    full = evaluate.run(cfg, 0, digits_dir, classifier, tmp_path / "full.json")
    out = tmp_path / "killed.json"
    real, calls = evaluate.attack_samples, []

    def dies_on_the_fourth_unit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(attacking, "attack_samples", dies_on_the_fourth_unit)
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(cfg, 0, digits_dir, classifier, out)
    monkeypatch.undo()
    assert not out.exists() and len(list((tmp_path / ".killed.json.partial").glob("*.json"))) == 3
    resumed = evaluate.run(cfg, 0, digits_dir, classifier, out)
    assert resumed["resumed_units"] == 3 and accuracies(resumed) == accuracies(full)
    other = eval_cfg({"fgsm": {}}, epsilons=[2])  # a different config ignores stale partial results
    monkeypatch.setattr(attacking, "attack_samples", dies_on_the_fourth_unit)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(cfg, 0, digits_dir, classifier, out)
    monkeypatch.undo()
    assert evaluate.run(other, 0, digits_dir, classifier, out)["resumed_units"] == 0


def test_autoattack_number_is_pyautoattacks(tmp_path, digits_dir, classifier):
    """The stage's AutoAttack accuracy equals calling pyautoattack directly on the same samples and seed."""
    from pipeline.attacks.autoattack import build

    settings = {"steps": 5, "square_queries": 30, "n_target_classes": 9}
    r = evaluate.run(eval_cfg({"autoattack": settings}, epsilons=[8], max_samples=60), 0, digits_dir, classifier, tmp_path / "r.json")
    model = load_classifier(classifier, torch.device("cpu"))
    test = load_split(digits_dir, "test", torch.device("cpu"))
    x, y = test.batch(torch.arange(60)).contiguous(), test.y[:60]  # pyautoattack .view()s its gradients
    aa = build(model, 10, x.device, eps=8 / 255, version="standard", seed=evaluate.unit_seed(0, "autoattack@8.0"), **settings)
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=64)
    assert r["attacks"]["autoattack"]["8.0"]["accuracy"] == pytest.approx(float((y_adv == y).float().mean()), abs=1e-9)
    params = r["attack_parameters"]["autoattack"]
    assert params["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and params["apgd_t_target_classes"] == 9
    assert params["apgd_iterations"] == 5 and params["square_queries"] == 30 and not params["standard_budget"]


def test_every_attack_and_corruption_runs_on_clips(tmp_path, clips_dir, clip_classifier):
    tiny = {"fgsm": {}, "pgd": {"steps": 2}, "apgd_ce": {"steps": 3}, "apgd_t": {"steps": 3, "n_target_classes": 2},
            "fab_t": {"steps": 3, "n_target_classes": 2}, "square": {"queries": 10}, "autoattack": {"steps": 2, "square_queries": 5},
            "pgd_l2": {"steps": 2}, "cw_l2": {"steps": 5}}
    cfg = eval_cfg({k: {**v, "max_samples": 8} for k, v in tiny.items()}, epsilons=[8], epsilons_l2=[0.5], max_samples=16,
                   pgd_steps_check={"factor": 2, "max_samples": 8}, corruptions={"severities": [1, 5], "max_samples": 8})
    r = evaluate.run(cfg, 0, clips_dir, clip_classifier, tmp_path / "r.json")
    assert set(r["attacks"]) == set(tiny) | {"any", "any_l2"}
    for name in tiny:
        (rec,) = r["attacks"][name].values()
        assert rec["within_eps"] and rec["in_range"] and rec["samples"] == 8 and rec["norm"] == ("L2" if name.endswith("_l2") else "Linf")
        assert rec["accuracy"] <= rec["clean_accuracy"] + 1e-9
    assert r["attacks"]["any"]["8.0"]["accuracy"] <= min(r["attacks"][a]["8.0"]["accuracy"] for a in tiny if not a.endswith("_l2"))
    assert set(r["corruptions"]) == {"gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "defocus_blur", "contrast",
                                     "brightness", "jpeg", "pixelate", "frame_drop", "frame_repeat", "temporal_shuffle", "h264"}
    assert all(per["5"]["mean_abs_change"] > per["1"]["mean_abs_change"] for per in r["corruptions"].values())
    assert 0 <= r["corruption_mean_accuracy"] <= 1 and r["corruption_samples"] == 8
    assert r["checks"]["pgd_steps"]["8.0"]["steps"] == [2, 4]


def test_images_skip_video_corruptions(tmp_path, digits_dir, classifier):
    r = evaluate.run(eval_cfg({}, corruptions={"names": ["contrast", "h264"], "severities": [1, 5], "max_samples": 50}),
                     0, digits_dir, classifier, tmp_path / "r.json")
    assert set(r["corruptions"]) == {"contrast"} and r["attacks"] == {}
    assert r["corruptions"]["contrast"]["5"]["accuracy"] <= r["corruption_clean_accuracy"]


def test_sanity_flags_robust_above_clean_bounds_and_non_monotone():
    ok = {"within_eps": True, "in_range": True, "max_norm": 0.0, "clean_accuracy": 0.8, "samples": 100}
    results = {"pgd": {"1.0": {**ok, "accuracy": 0.5}, "2.0": {**ok, "accuracy": 0.6}, "4.0": {**ok, "accuracy": 0.9}},
               "fgsm": {"1.0": {**ok, "accuracy": 0.5, "within_eps": False}}}
    warnings = evaluate.sanity(results, {"pgd": [1, 2, 4], "fgsm": [1]})
    assert any("above clean" in w for w in warnings) and any("increases with eps" in w for w in warnings)
    assert any("fgsm eps 1.0: perturbation outside" in w for w in warnings)
    one_sample_noise = {"pgd": {"1.0": {**ok, "accuracy": 0.5}, "2.0": {**ok, "accuracy": 0.51}}}
    assert evaluate.sanity(one_sample_noise, {"pgd": [1, 2]}) == []


def test_square_beating_white_box_attacks_is_flagged():
    rec = {"accuracy": 0.4, "samples": 100, "broken": 0}
    cascade = {"pgd": {"8.0": rec}, "square": {"8.0": {**rec, "broken": 3}}}
    assert any("gradient masking" in w for w in evaluate.black_box_warnings(cascade, cascade=True))
    assert evaluate.black_box_warnings({"pgd": {"8.0": rec}, "square": {"8.0": rec}}, cascade=True) == []
    alone = {"pgd": {"8.0": {**rec, "samples": 8}}, "square": {"8.0": {**rec, "samples": 4}}}
    # Square ran on the first 4 samples: it broke samples 0, 1 and 3, which PGD left correct -> flagged
    masked = {"pgd": {"8.0": "11110000"}, "square": {"8.0": "0010"}}
    assert any("broke 75.0% of its 4 samples" in w for w in evaluate.black_box_warnings(alone, False, masked))
    # the same accuracies, but Square broke only samples PGD broke too: nothing to flag (accuracies on
    # different sample sets, 4 vs 8 samples, are not compared)
    same = {"pgd": {"8.0": "00110000"}, "square": {"8.0": "0011"}}
    assert evaluate.black_box_warnings(alone, False, same) == []


def test_an_attack_can_run_at_a_subset_of_the_epsilons(tmp_path, digits_dir, classifier):
    cfg = eval_cfg({"fgsm": {}, "square": {"queries": 5, "epsilons": [8], "max_samples": 20}}, epsilons=[2, 8], max_samples=40)
    r = evaluate.run(cfg, 0, digits_dir, classifier, tmp_path / "r.json")
    assert set(r["attacks"]["square"]) == {"8.0"} and set(r["attacks"]["fgsm"]) == {"2.0", "8.0"}
    assert r["attacks"]["any"]["2.0"]["attacks"] == ["fgsm"] and r["attacks"]["any"]["2.0"]["samples"] == 40
    assert r["attacks"]["any"]["8.0"]["attacks"] == ["fgsm", "square"] and r["attacks"]["any"]["8.0"]["samples"] == 20


def test_per_sample_outcomes_reproduce_every_accuracy(tmp_path, digits_dir, classifier):
    """`outcomes` holds, per number, which test samples count as correct: its mean is the number, an
    attack run alone never counts a clean-wrong sample as robust, and "any" is the AND of its attacks."""
    attacks = {"fgsm": {}, "pgd": {**PGD, "random_start": False}}
    r = evaluate.run(eval_cfg(attacks, cascade=False, epsilons=[2, 8], max_samples=100), 0, digits_dir, classifier, tmp_path / "o.json")
    out = r["outcomes"]
    clean = [c == "1" for c in out["clean"]]
    assert len(clean) == r["samples"] == 100 and sum(clean) / 100 == pytest.approx(r["clean_accuracy"])
    for name in ("fgsm", "pgd", "any"):
        for e, record in r["attacks"][name].items():
            flags = [c == "1" for c in out["attacks"][name][e]]
            assert len(flags) == record["samples"] and sum(flags) / len(flags) == pytest.approx(record["accuracy"])
            assert not any(f and not c for f, c in zip(flags, clean, strict=False))  # robust implies clean-correct here
    for e in ("2.0", "8.0"):
        both = [f == "1" and p == "1" for f, p in zip(out["attacks"]["fgsm"][e], out["attacks"]["pgd"][e], strict=True)]
        assert [c == "1" for c in out["attacks"]["any"][e]] == both

def save_dual_bn_encoder(data_dir, path) -> None:
    """A pretrain checkpoint of a dual-BN encoder whose two branches hold different BN statistics."""
    torch.manual_seed(0)
    meta = read_json(data_dir / "meta.json")
    args = {"backbone": "resnet_small", "width": 4, "small_input": True, "mean": meta["mean"], "std": meta["std"]}
    dual = convert_dual_bn(build_encoder(args)).train()
    for m in dual.modules():
        if isinstance(m, BATCH_NORMS):
            m.momentum = 1.0  # one pass sets the running statistics to the batch's
    x = load_split(data_dir, "train", torch.device("cpu")).batch(torch.arange(256))
    with torch.no_grad():
        dual(x)
        with adversarial_bn(dual):  # the adversarial branch sees inputs with other statistics
            dual((x + 0.3 * torch.randn_like(x)).clamp(0, 1))
    save_torch(path, {"encoder": branch_state_dict(dual, "clean"), "encoder_adv_bn": branch_state_dict(dual, "adv"),
                      "model_args": args, "config": "{}", "seed": 0})


def test_dual_bn_branch_choice_reaches_evaluate(tmp_path, digits_dir):
    enc = tmp_path / "encoder.pt"
    save_dual_bn_encoder(digits_dir, enc)
    test = load_split(digits_dir, "test", torch.device("cpu"))
    x = test.batch(torch.arange(len(test)))
    head = torch.nn.Linear(load_encoder(enc, torch.device("cpu"))[0].out_dim, 10)  # one head on both branches
    with torch.no_grad():
        preds = {b: head(load_encoder(enc, torch.device("cpu"), b)[0](x)).argmax(1) for b in ("adv", "clean")}
    assert (preds["adv"] != preds["clean"]).any()  # the two branches are two different networks

    cfg = eval_cfg({"fgsm": {}}, epsilons=[2], max_samples=60)
    for branch in ("adv", "clean"):
        ft = from_dict(FinetuneConfig, schema_defaults("finetune", {"device": "cpu", "epochs": 5, "dual_bn_branch": branch}))
        clf = tmp_path / branch / "classifier.pt"
        metrics = finetune.run(ft, "slf", 0, digits_dir, enc, clf, tmp_path / branch / "metrics.json")
        assert metrics["bn_branch"] == branch and read_json(tmp_path / branch / "metrics.json")["bn_branch"] == branch
        report = evaluate.run(cfg, 0, digits_dir, clf, tmp_path / branch / "robustness.json")
        assert report["bn_branch"] == branch and read_json(tmp_path / branch / "robustness.json")["bn_branch"] == branch
        model = load_classifier(clf, torch.device("cpu"))  # what evaluate attacks
        encoder = load_encoder(enc, torch.device("cpu"), branch)[0]
        assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder.state_dict().items())
        with torch.no_grad():
            by_hand = (model.head(encoder(x[:60])).argmax(1) == test.y[:60]).float().mean()
        assert report["clean_accuracy"] == pytest.approx(float(by_hand))


def test_steps_check_runs_at_the_chosen_eps_and_flags_an_unconverged_attack(tmp_path, digits_dir, classifier):
    """One short PGD step travels 1/10 of eps: doubling the steps breaks more samples, which the check must flag."""
    weak = {"steps": 1, "step_size": 0.1, "random_start": False, "restarts": 1}
    cfg = eval_cfg({"pgd": weak}, epsilons=[8, 32], pgd_steps_check={"factor": 8, "max_samples": 120, "tolerance": 0.0,
                                                                       "epsilons": [32]})
    r = evaluate.run(cfg, 0, digits_dir, classifier, tmp_path / "r.json")
    (record,) = r["checks"]["pgd_steps"].values()
    assert record["eps"] == 32 and record["steps"] == [1, 8] and record["accuracy"][1] < record["accuracy"][0]
    assert any("has not converged" in w for w in r["warnings"])
    strong = {**PGD, "steps": 10, "step_size": 0.25}
    cfg = eval_cfg({"pgd": strong}, epsilons=[8, 32], pgd_steps_check={"factor": 2, "max_samples": 120, "tolerance": 0.05,
                                                                        "epsilons": []})
    r = evaluate.run(cfg, 0, digits_dir, classifier, tmp_path / "r2.json")
    assert list(r["checks"]["pgd_steps"]) == ["32.0"] and not any("pgd eps" in w for w in r["warnings"])


def test_sensitivity_radius_and_margin_agree_with_the_attack_outcomes(tmp_path, digits_dir, classifier):
    """Per sample: a clean-wrong sample has radius 0 and a negative logit margin; a sample PGD flips at
    8/255 has a radius at most 8/255 (plus the bisection's resolution); radii stay within [0, max_eps]."""
    pgd = {**PGD, "random_start": False, "steps": 10, "step_size": 0.25}
    cfg = eval_cfg({"pgd": pgd}, cascade=False, epsilons=[8], max_samples=60,
                   radius={"max_samples": 60, "max_eps": 32, "bisection_steps": 6, "pgd_steps": 10})
    r = evaluate.run(cfg, 0, digits_dir, classifier, tmp_path / "s.json")
    per = r["sensitivity"]["per_sample"]
    radius, margin = np.array(per["radius_255"]), np.array(per["logit_margin"])
    clean = np.array([c == "1" for c in r["outcomes"]["clean"]])
    robust8 = np.array([c == "1" for c in r["outcomes"]["attacks"]["pgd"]["8.0"]])
    assert ((radius == 0) == ~clean).all() and (margin[~clean] <= 0).all() and (margin[clean] > 0).all()
    assert (radius >= 0).all() and (radius <= 32 + 1e-4).all()
    flipped = clean & ~robust8
    assert flipped.any() and (radius[flipped] <= 8 + 32 / 2**6 + 1e-4).all()


def test_corruption_outcomes_reproduce_their_accuracy(tmp_path, digits_dir, classifier):
    cfg = eval_cfg({"fgsm": {}}, epsilons=[2], max_samples=50, corruptions={"names": ["contrast"], "severities": [1, 5], "max_samples": 50})
    r = evaluate.run(cfg, 0, digits_dir, classifier, tmp_path / "c.json")
    for rec in r["corruptions"]["contrast"].values():
        assert len(rec["outcomes"]) == 50 and rec["outcomes"].count("1") / 50 == pytest.approx(rec["accuracy"])
