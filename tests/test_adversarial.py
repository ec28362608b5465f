"""Adversarial training methods of ALF/AFF: inner attack bounds, hand-computed losses, the
fast-FGSM collapse guard, the dynamic adversary's schedule, and a few real steps of every
method on images and 5-D clips."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline import runtime
from pipeline.config import AdversarialConfig, DynamicConfig, from_dict
from pipeline.data import Split
from pipeline.finetune.adversarial import (
    TRAINING,
    CollapseGuard,
    DynamicAdversary,
    loop,
    module_mode,
    perturb,
    spat_consistency,
    spat_logits,
    trades_kl,
)
from pipeline.finetune.adversarial.inner import Attack
from pipeline.models import Classifier, Encoder
from pipeline.models.classifier import CosineClassifier
from tests.conftest import schema_defaults

RT = runtime.setup("cpu", "fp32", 1)
SHAPES = {"image": (3, 8, 8), "clip": (3, 4, 8, 8)}


def tiny_model(modality: str, cosine: bool = False, classes: int = 3) -> Classifier:
    torch.manual_seed(0)
    encoder = Encoder("resnet_small" if modality == "image" else "r3d_small", 2, True, [0.5] * 3, [0.25] * 3)
    return CosineClassifier(encoder, classes, 8.0) if cosine else Classifier(encoder, classes)


def adv_cfg(**overrides) -> AdversarialConfig:
    base = {"epochs": 2, "batch_size": 8, "steps": 2, "holdout": 8, "monitor_steps": 2}
    return from_dict(AdversarialConfig, schema_defaults("adversarial", {**base, **overrides}))


@pytest.mark.parametrize("init", ["uniform", "normal", "zero"])
@pytest.mark.parametrize("modality", ["image", "clip"])
def test_inner_attack_stays_in_the_eps_ball_and_range(init, modality):
    model = tiny_model(modality).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, *SHAPES[modality], generator=g)
    x[0] = 0.0  # pixels at the borders of [0, 1]: the projection must clip, not wrap
    x[1] = 1.0
    y = torch.arange(6) % 3
    attack = Attack(eps=8 / 255, steps=3, step_fraction=0.5, init=init)
    objective = lambda xa: F.cross_entropy(model(xa).float(), y)  # noqa: E731
    x_adv = perturb(objective, x, attack, RT, g)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        assert float(objective(x_adv)) > float(objective(x))


def test_inner_attack_reaches_the_closed_form_maximiser_of_a_linear_objective():
    """max_{||d|| <= eps, x+d in [0,1]} <w, x+d> is clip(x + eps sign(w)); sign steps of size eps reach it."""
    g = torch.Generator().manual_seed(2)
    x, w = torch.rand(4, 3, 5, 5, generator=g), torch.randn(3, 5, 5, generator=g)
    attack = Attack(eps=0.1, steps=2, step_fraction=1.0, init="uniform")
    x_adv = perturb(lambda xa: (xa * w).sum(), x, attack, RT, g)
    torch.testing.assert_close(x_adv, (x + 0.1 * w.sign()).clamp(0, 1), rtol=0, atol=1e-6)


def test_attack_strength_scales_eps_and_steps():
    full = Attack(eps=8 / 255, steps=10, step_fraction=0.25, init="uniform")
    half = full.scaled(0.3, 10)
    assert half.steps == 3 and half.eps == pytest.approx(0.3 * 8 / 255) and half.step_size == pytest.approx(0.3 * 2 / 255)
    assert full.scaled(0.0, 10).steps == 0 and full.scaled(1.0, 10) == full


def test_trades_kl_equals_the_hand_computed_value():
    # p = softmax([0, ln 3]) = (1/4, 3/4); q = softmax([0, 0]) = (1/2, 1/2); second row: p = q.
    clean = torch.tensor([[0.0, math.log(3)], [1.0, 2.0]])
    adv = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    kl_row = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert float(trades_kl(clean, adv)) == pytest.approx(kl_row / 2, abs=1e-7)
    reference = torch.nn.KLDivLoss(reduction="sum")(F.log_softmax(adv, 1), F.softmax(clean, 1)) / 2  # yaodongyu/TRADES
    assert float(trades_kl(clean, adv)) == pytest.approx(float(reference), abs=1e-7)


def test_spat_logits_equal_the_hand_computed_values():
    cos = torch.tensor([[0.5, 0.2, -0.1]])
    logits = spat_logits(cos, torch.tensor([0]), scale=8.0, margin=0.2)
    # target 8 (1 + 0.2 - 0.5) 0.5 = 2.8; others 8 (0.2 + 0.2) 0.2 = 0.64 and 8 (-0.1 + 0.2)(-0.1) = -0.08
    torch.testing.assert_close(logits, torch.tensor([[2.8, 0.64, -0.08]]))


def test_spat_consistency_equals_the_hand_computed_value():
    # scale 2: p = softmax([0, ln 3]) = (1/4, 3/4), q = softmax([0, 0]) = (1/2, 1/2)
    clean, adv = torch.tensor([[0.0, math.log(3) / 2]]), torch.zeros(1, 2)
    kappa = [0.25 * math.log(0.5), 0.75 * math.log(1.5)]
    expected = sum(k * (k + 0.2) for k in kappa)
    assert float(spat_consistency(clean, adv, scale=2.0, n=0.2)) == pytest.approx(expected, abs=1e-7)
    assert float(spat_consistency(clean, adv, scale=2.0, n=0.0)) == pytest.approx(sum(k * k for k in kappa), abs=1e-7)


def test_spat_matches_the_reference_code_on_random_tensors():
    """puerrrr/Self-Paced-Adversarial-Training spat.py: sp_logits + kl_loss, rewritten naively."""
    g = torch.Generator().manual_seed(3)
    cos, cos_adv = torch.rand(5, 4, generator=g) * 2 - 1, torch.rand(5, 4, generator=g) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 1])
    mask = F.one_hot(y, 4)
    ref_logits = 8 * ((1 + 0.2 - cos) * mask * cos + (cos + 0.2) * (1 - mask) * cos)
    kl = torch.nn.KLDivLoss(reduction="none")(torch.log(F.softmax(8 * cos_adv, 1)), F.softmax(8 * cos, 1))
    torch.testing.assert_close(spat_logits(cos, y, scale=8, margin=0.2), ref_logits)
    torch.testing.assert_close(spat_consistency(cos, cos_adv, scale=8, n=0.2), (kl * (kl + 0.2)).sum() / 5)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_guard_fires_on_a_collapse_and_restores_the_best_epoch():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    guard, states = CollapseGuard(drop=0.2, action="stop"), []
    for epoch, robust in enumerate([0.30, 0.42, 0.40, 0.05]):  # epoch 3: PGD accuracy collapses
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        states.append(snapshot(model))
        action = guard.update(epoch, robust, model, opt)
        assert action == ("stop" if epoch == 3 else "continue")
    guard.restore(model, opt)
    assert all(torch.equal(model.state_dict()[k], states[1][k]) for k in states[1])  # epoch 1 had the best PGD accuracy
    assert guard.events == [{"epoch": 3, "robust_accuracy": 0.05, "best_accuracy": 0.42, "best_epoch": 1, "action": "stop"}]
    off = CollapseGuard(drop=0.2, action="off")
    assert [off.update(e, r, model, opt) for e, r in enumerate([0.4, 0.05])] == ["continue", "continue"]


@pytest.mark.parametrize("action", ["stop", "rollback"])
def test_fast_fgsm_training_stops_or_rolls_back_on_a_constructed_collapse(monkeypatch, action):
    """Real fgsm_rs training whose held-out PGD accuracy is made to collapse at epoch 2."""
    model, seen = tiny_model("image"), []
    real_monitor = loop.monitor

    def collapsing_monitor(model, hold, ctx, gen):
        out = real_monitor(model, hold, ctx, gen)
        seen.append(snapshot(model))
        return {**out, "holdout_pgd": [0.5, 0.6, 0.0, 0.55][len(seen) - 1]}

    monkeypatch.setattr(loop, "monitor", collapsing_monitor)
    data, train_idx, hold = synthetic_data("image", 40)
    cfg = adv_cfg(training="fgsm_rs", epochs=4, fgsm_rs={"guard": action, "guard_drop": 0.2})
    history = loop.adversarial_train(model, data, train_idx, hold, cfg, RT, (), seed=0)
    assert [e.get("guard") for e in history["epochs"]][:3] == [None, None, action]
    assert len(history["epochs"]) == (3 if action == "stop" else 4)
    assert history["guard_events"][0]["best_epoch"] == 1
    if action == "stop":  # the returned model is the best epoch's, not the collapsed one
        assert all(torch.equal(model.state_dict()[k], seen[1][k]) for k in seen[1])


def test_dynamic_adversary_raises_strength_while_clean_accuracy_holds():
    settings = from_dict(DynamicConfig, {"start": 0.25, "increase": 0.25, "backoff": 0.5, "tolerance": 0.02,
                                         "check_every": 1, "adv_weight": 0.5})
    full = Attack(eps=8 / 255, steps=10, step_fraction=0.25, init="uniform")
    adversary = DynamicAdversary(settings, full, reference_accuracy=0.90)
    assert adversary.attack.steps == 3 and adversary.attack.eps == pytest.approx(2 / 255)
    strengths = []
    for step, clean in enumerate([0.90, 0.89, 0.85, 0.95, 0.9, 0.9]):
        attack = adversary.update(step, clean)
        strengths.append(adversary.strength)
    assert strengths == pytest.approx([0.5, 0.75, 0.375, 0.625, 0.875, 1.0])  # 0.85 is a 5-point drop: back off
    assert attack == full  # full strength reached, never exceeded


def test_module_mode_keeps_frozen_parts_in_eval():
    model = tiny_model("image")
    with module_mode(model, True, (model.encoder,)):
        assert model.training and not model.encoder.training and not any(m.training for m in model.encoder.modules())
    with module_mode(model, True):
        assert model.encoder.training


def synthetic_data(modality: str, n: int) -> tuple[Split, torch.Tensor, loop.Holdout]:
    """Class-dependent uint8 images (N,H,W,C) or clips (N,T,H,W,C): learnable, like the decode stage's arrays."""
    g = torch.Generator().manual_seed(4)
    y = torch.arange(n) % 3
    c, *rest = SHAPES[modality]
    x = (torch.rand(n, *rest, c, generator=g) * 100 + 60 * y.view(-1, *[1] * (len(rest) + 1))).to(torch.uint8)
    split = Split(x=x, y=y, device=torch.device("cpu"))
    train_idx, hold_idx = loop.split_holdout(n, 8, seed=0)
    return split, train_idx, loop.Holdout(x=split.batch(hold_idx).contiguous(), y=y[hold_idx])


@pytest.mark.parametrize("modality", ["image", "clip"])
@pytest.mark.parametrize("training", sorted(TRAINING))
def test_every_method_trains_a_few_steps(training, modality):
    model = tiny_model(modality, cosine=TRAINING[training].cosine_head)
    before = snapshot(model)
    data, train_idx, hold = synthetic_data(modality, 24)
    cfg = adv_cfg(training=training, attack_bn="train" if modality == "clip" else "eval", dynamic={"check_every": 1})
    history = loop.adversarial_train(model, data, train_idx, hold, cfg, RT, (), seed=0)
    assert len(history["epochs"]) == 2 and all(math.isfinite(e["loss"]) for e in history["epochs"])
    changed = [k for k in before if not torch.equal(before[k], model.state_dict()[k])]
    assert "head.weight" in changed and any(k.startswith("encoder.backbone") for k in changed)
    if training == "dynamic":
        assert len(history["dynamic"]["checks"]) == 4 and all(0 <= c["strength"] <= 1 for c in history["dynamic"]["checks"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("modality", ["image", "clip"])
def test_cuda_inner_attack_runs_in_bf16_channels_last_within_bounds(modality):
    rt = runtime.setup("cuda", "auto")
    model = runtime.prepare_module(tiny_model(modality), rt, modality == "clip").eval()
    x, y = torch.rand(8, *SHAPES[modality], device="cuda"), torch.arange(8, device="cuda") % 3
    seen = []

    def objective(xa):
        logits = model(xa)
        seen.append(logits.dtype)
        return F.cross_entropy(logits.float(), y)

    x_adv = perturb(objective, x, Attack(eps=8 / 255, steps=2, step_fraction=0.5, init="uniform"), rt)
    fmt = torch.channels_last if modality == "image" else torch.channels_last_3d
    assert seen == [torch.bfloat16] * 2 and x_adv.is_contiguous(memory_format=fmt)
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6 and 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
