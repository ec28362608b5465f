"""Fine-tuning protocols: each freezes exactly what it should; SLF learns a useful head; ALF/AFF
checkpoints load back for evaluate (SPAT's as a cosine classifier); the config mirrors the schema."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from pipeline import config as C
from pipeline.config import FinetuneConfig, PretrainConfig, from_dict
from pipeline.finetune import protocol_kind, run, train_linear_head, weights_digest
from pipeline.io import load_torch
from pipeline.models.classifier import CosineClassifier, load_classifier
from tests.conftest import SCHEMA, pretrain_cfg, schema_defaults


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory, digits_dir):
    from pipeline import pretrain

    out = tmp_path_factory.mktemp("encoder")
    cfg = pretrain_cfg({"loss": "nt_xent"}, {"epochs": 1})
    pretrain.run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, digits_dir, None, out / "enc.pt", out / "m.json")
    return out / "enc.pt"


def finetune_cfg(protocol: str, **adversarial) -> FinetuneConfig:
    """A job's config: SLF settings plus, for alf/aff, a cheap entry (1 epoch, PGD-1)."""
    entry = {} if protocol == "slf" else schema_defaults("adversarial", {"epochs": 1, "steps": 1, "holdout": 64,
                                                                          "monitor_steps": 1, **adversarial})
    return from_dict(FinetuneConfig, schema_defaults("finetune", {"device": "cpu", "epochs": 20, "protocols": {protocol: entry}}))


def encoder_weights(checkpoint) -> dict[str, torch.Tensor]:
    return {k[len("encoder."):]: v for k, v in load_torch(checkpoint)["model"].items() if k.startswith("encoder.")}


@pytest.mark.parametrize("protocol", ["slf", "alf"])
def test_frozen_protocols_keep_the_encoder_bit_identical(tmp_path, digits_dir, encoder_path, protocol):
    cfg = finetune_cfg(protocol, epochs=2, batch_size=32, lr=0.03)
    metrics = run(cfg, protocol, 0, digits_dir, encoder_path, tmp_path / "clf.pt", tmp_path / "ft.json")
    before, after = load_torch(encoder_path)["encoder"], encoder_weights(tmp_path / "clf.pt")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical, BN statistics included
    assert metrics["encoder_frozen"]
    if protocol == "slf":
        assert metrics["test_acc"] > 0.3
    else:  # the head was trained adversarially: its test accuracy is far above chance (10 classes)
        assert metrics["attack_bn"] == "eval" and metrics["test_acc"] > 0.3


def test_aff_trains_encoder_and_head(tmp_path, digits_dir, encoder_path):
    metrics = run(finetune_cfg("aff_trades", training="trades", attack_bn="train"), "aff_trades", 0, digits_dir,
                  encoder_path, tmp_path / "clf.pt", tmp_path / "ft.json")
    before, after = load_torch(encoder_path)["encoder"], encoder_weights(tmp_path / "clf.pt")
    weights = [k for k in before if k.endswith("weight")]
    assert all(not torch.equal(before[k], after[k]) for k in weights)  # every conv and BN weight moved
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("running_mean"))
    assert not metrics["encoder_frozen"] and metrics["kind"] == "aff" and metrics["attack_bn"] == "train"
    assert metrics["runtime"]["precision"] == "float32" and len(metrics["epochs"]) == 1  # precision auto -> fp32 on CPU


def test_spat_checkpoint_loads_as_a_cosine_classifier(tmp_path, digits_dir, encoder_path):
    run(finetune_cfg("aff", training="spat"), "aff", 0, digits_dir, encoder_path, tmp_path / "clf.pt", tmp_path / "ft.json")
    model = load_classifier(tmp_path / "clf.pt", torch.device("cpu"))
    assert isinstance(model, CosineClassifier) and model.scale == 8.0
    x = torch.rand(5, 3, 8, 8)
    with torch.no_grad():
        logits = model(x)
        feats = torch.nn.functional.normalize(model.encoder(x), dim=1)
        w = torch.nn.functional.normalize(model.head.weight, dim=1)
    torch.testing.assert_close(logits, 8.0 * feats @ w.T)  # s cos, so |logits| <= s
    assert float(logits.abs().max()) <= 8.0 + 1e-5 and torch.equal(model.head.bias, torch.zeros(10))


def test_dynamic_starts_from_the_clean_head_and_regulates_the_attack(tmp_path, digits_dir, encoder_path):
    cfg = finetune_cfg("alf", training="dynamic", epochs=2, dynamic={"check_every": 3})
    metrics = run(cfg, "alf", 0, digits_dir, encoder_path, tmp_path / "clf.pt", tmp_path / "ft.json")
    dyn = metrics["dynamic"]
    assert dyn["reference_clean"] > 0.3  # the clean SLF start is a real classifier
    assert len(dyn["checks"]) == (2 * (metrics["train_samples"] // 128)) // 3
    for check in dyn["checks"]:
        assert check["eps_255"] == pytest.approx(8 * check["strength"])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_linear_head_separates_separable_features(optimizer):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    feats = torch.nn.functional.one_hot(y, 3).float() * 2 + 0.1 * torch.randn(300, 3, generator=g)
    cfg = from_dict(FinetuneConfig, schema_defaults("finetune", {"device": "cpu", "epochs": 30, "lr": 0.05, "optimizer": optimizer}))
    head = train_linear_head(feats, y, 3, cfg, seed=0)
    assert float((head(feats).argmax(1) == y).float().mean()) == 1.0


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_first_head_step_is_the_chosen_optimisers_closed_form(optimizer):
    """finetune.optimizer switches the rule: one full-batch step from the same start equals, in closed form,
    SGD's w - lr (g + wd w) or Adam's w - lr g'/(|g'| + 1e-8) with g' = g + wd w (bias-corrected first step)."""
    g = torch.Generator().manual_seed(1)
    y = torch.arange(60) % 3
    feats = torch.randn(60, 4, generator=g)
    cfg = from_dict(FinetuneConfig, schema_defaults(
        "finetune", {"device": "cpu", "epochs": 1, "lr": 0.01, "batch_size": 64, "optimizer": optimizer}))
    torch.manual_seed(0)
    head = train_linear_head(feats, y, 3, cfg, seed=0)
    torch.manual_seed(0)
    start = torch.nn.Linear(4, 3)
    torch.nn.functional.cross_entropy(start(feats), y).backward()
    for trained, p in ((head.weight, start.weight), (head.bias, start.bias)):
        grad = p.grad + cfg.weight_decay * p.detach()
        step = grad if optimizer == "sgd" else grad / (grad.abs() + 1e-8)
        torch.testing.assert_close(trained.detach(), p.detach() - cfg.lr * step, rtol=1e-5, atol=1e-6)


def test_weights_digest_sees_any_change():
    m = torch.nn.Linear(3, 2)
    d = weights_digest(m)
    with torch.no_grad():
        m.weight[0, 0] += 1e-7
    assert weights_digest(m) != d


def test_protocol_names():
    assert [protocol_kind(n) for n in ("slf", "alf", "aff_trades", "alf_spat")] == ["slf", "alf", "aff", "alf"]
    with pytest.raises(ValueError, match="must start with"):
        protocol_kind("lin")
    with pytest.raises(ValueError, match="no entry under finetune.protocols"):
        run(finetune_cfg("slf"), "aff", 0, None, None, None, None)


def test_adversarial_dataclasses_mirror_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text())["$defs"]["adversarial"]["properties"]
    assert {f.name for f in dataclasses.fields(C.AdversarialConfig)} == set(schema)
    for key, cls in (("trades", C.TradesConfig), ("fgsm_rs", C.FastAtConfig), ("spat", C.SpatConfig), ("dynamic", C.DynamicConfig)):
        assert {f.name for f in dataclasses.fields(cls)} == set(schema[key]["properties"])


def test_non_dual_bn_encoders_ignore_the_branch_key(tmp_path, digits_dir, encoder_path):
    """A SimCLR encoder has one set of BatchNorms: both values of dual_bn_branch give the same classifier."""
    states = []
    for branch in ("adv", "clean"):
        cfg = dataclasses.replace(finetune_cfg("slf"), dual_bn_branch=branch, epochs=3)
        metrics = run(cfg, "slf", 0, digits_dir, encoder_path, tmp_path / f"{branch}.pt", tmp_path / f"{branch}.json")
        assert metrics["bn_branch"] is None and json.loads((tmp_path / f"{branch}.json").read_text())["bn_branch"] is None
        states.append(load_torch(tmp_path / f"{branch}.pt"))
    assert states[0]["bn_branch"] is None and states[0]["model"].keys() == states[1]["model"].keys()
    assert all(torch.equal(states[0]["model"][k], states[1]["model"][k]) for k in states[0]["model"])


def test_divergent_slf_fails_without_writing(tmp_path, digits_dir, encoder_path):
    """SLF at lr 1e6 (the issue's case): a chance-level or non-finite head is an error, not a result."""
    from pipeline.health import Diverged

    assert load_torch(encoder_path)["knn_acc"] > 0.3  # the encoder's features are far above chance
    cfg = dataclasses.replace(finetune_cfg("slf"), lr=1e6)
    with pytest.raises(Diverged, match="diverged|non-finite"):
        run(cfg, "slf", 0, digits_dir, encoder_path, tmp_path / "clf.pt", tmp_path / "ft.json")
    assert not (tmp_path / "clf.pt").exists() and not (tmp_path / "ft.json").exists()


def test_chance_rule_needs_a_good_encoder():
    """At chance on 500 samples of 10 classes: diverged if kNN is 0.8, no verdict if kNN is near chance too."""
    from pipeline.health import at_chance_despite_features

    assert at_chance_despite_features(0.1, 0.8, 10, 500) is not None
    assert at_chance_despite_features(0.1, 0.12, 10, 500) is None  # weak encoder: chance is no surprise
    assert at_chance_despite_features(0.5, 0.8, 10, 500) is None  # a weaker head, not a diverged one
    assert at_chance_despite_features(0.1, None, 10, 500) is None
