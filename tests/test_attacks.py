"""Attacks reach the closed-form robust accuracy of linear models and respect their bounds.

For a linear model the worst perturbation is known: against logits z = W x + b, a sample
of class y survives every Linf perturbation of size eps iff for every j != y
(z_y - z_j) > eps ||w_y - w_j||_1 (L2: the L2 norm), as long as [0,1] clipping never binds
(inputs stay in (0.3, 0.7) and eps is small).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.attacks import ATTACKS
from pipeline.attacks.adapters import VideoAs4D, as_4d
from pipeline.config import from_dict
from pipeline.config.attacks import ATTACK_SETTINGS
from tests.conftest import schema_attack_defaults


class Linear(nn.Module):
    """logits = W x + b on flattened inputs (images or clips)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def linear_problem(shape, classes: int, seed: int = 0):
    """A linear model that classifies every x correctly, and the per-sample Linf and L2 robust radii."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(shape, generator=g)  # inside (0.3, 0.7): clipping to [0,1] never binds
    w = torch.randn(classes, x[0].numel(), generator=g)
    b = torch.zeros(classes)
    b -= (x.flatten(1) @ w.T).median(0).values  # roughly balanced classes
    model = Linear(w, b).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    z = model(x)
    y = z.argmax(1)
    gaps = z.gather(1, y[:, None]) - z  # (N, K) margin to each class
    dw = w[y][:, None, :] - w[None, :, :]  # (N, K, D) w_y - w_j
    others = torch.ones_like(gaps, dtype=torch.bool).scatter(1, y[:, None], False)
    radius = {norm: (gaps / dw.norm(p=p, dim=2).clamp_min(1e-12)).masked_fill(~others, float("inf")).amin(1)
              for norm, p in (("Linf", 1), ("L2", 2))}
    return model, x, y, radius


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


SETTINGS = {  # small budgets over the schema's defaults: the suite must stay fast
    "fgsm": {}, "pgd": {"steps": 20, "step_size": 0.1}, "pgd_l2": {"steps": 20, "step_size": 0.1},
    "cw_l2": {"steps": 100}, "apgd_ce": {"steps": 20}, "apgd_t": {"steps": 20}, "fab_t": {"steps": 20}, "square": {"queries": 50},
    "autoattack": {"steps": 10, "square_queries": 20},
}
EXTRA = {"autoattack": {"batch_size": 500}}  # runtime arguments the evaluate stage fills in


def arguments(name: str, eps: float, **overrides) -> dict:
    """The attack's keyword arguments at eps, through its typed settings as the evaluate stage builds them."""
    entry = {**schema_attack_defaults(name), **SETTINGS[name], **overrides}
    return {**from_dict(ATTACK_SETTINGS[name], entry, f"evaluate.attacks.{name}").arguments(eps), **EXTRA.get(name, {})}
# (attack, classes): the attacks whose optimum on a linear model is the closed form. FGSM's single
# signed step is optimal only for two classes; APGD-T needs four (the targeted DLR loss).
EXACT = [("fgsm", 2), ("pgd", 2), ("apgd_ce", 2), ("pgd_l2", 2), ("apgd_t", 4), ("fab_t", 4), ("autoattack", 4)]


@pytest.mark.parametrize("name,classes", EXACT)
@pytest.mark.parametrize("shape", [(200, 3, 4, 4), (200, 3, 2, 4, 4)])
@pytest.mark.parametrize("quantile", [0.3, 0.7])
def test_attack_reaches_analytic_robust_accuracy(name, classes, shape, quantile):
    model, x, y, radius = linear_problem(shape, classes)
    eps = float(radius[ATTACKS[name].norm].quantile(quantile))
    analytic = float((radius[ATTACKS[name].norm] > eps).float().mean())
    robust = accuracy(model, ATTACKS[name].fn(model, x, y, eps=eps, **arguments(name, eps)), y)
    assert 0.2 < analytic < 0.8
    assert robust == pytest.approx(analytic, abs=0.011)  # within one sample of 200 (the one on the boundary)


def test_cw_l2_never_beats_the_optimum_and_gets_close():
    model, x, y, radius = linear_problem((200, 3, 4, 4), classes=2)
    eps = float(radius["L2"].quantile(0.5))
    analytic = float((radius["L2"] > eps).float().mean())
    robust = accuracy(model, ATTACKS["cw_l2"].fn(model, x, y, eps=eps, **arguments("cw_l2", eps)), y)
    assert analytic - 0.011 <= robust <= analytic + 0.03  # fixed c, no binary search: close, not exact


class TinyConv(nn.Module):
    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.net = nn.Sequential(conv(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("shape", [(6, 3, 8, 8), (6, 3, 3, 8, 8)])
def test_attack_respects_norm_bound_and_range(name, shape):
    torch.manual_seed(0)
    model = TinyConv(len(shape) - 2).eval()
    x = torch.rand(shape)
    x[0] = 0.0  # on the boundary of [0, 1]
    x[1] = 1.0
    model(x)  # materialise the lazy layer
    for p in model.parameters():
        p.requires_grad_(False)
    y = torch.randint(0, 5, (shape[0],))
    eps = 8 / 255 if ATTACKS[name].norm == "Linf" else 0.5
    x_adv = ATTACKS[name].fn(model, x, y, eps=eps, **arguments(name, eps))
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if ATTACKS[name].norm == "Linf" else delta.norm(dim=1)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert size.max() <= eps * (1 + 1e-6) + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert accuracy(model, x_adv, y) <= accuracy(model, x, y)
    if name in ("fgsm", "pgd", "pgd_l2", "apgd_ce"):  # they ascend the cross-entropy itself
        loss = nn.functional.cross_entropy
        assert loss(model(x_adv), y) >= loss(model(x), y) - 1e-6


def test_pgd_restarts_never_hurt():
    model, x, y, _ = linear_problem((100, 3, 4, 4), classes=2, seed=3)
    one = ATTACKS["pgd"].fn(model, x, y, eps=0.01, **arguments("pgd", 0.01, steps=2, step_size=0.3, restarts=1),
                            generator=torch.Generator().manual_seed(0))
    three = ATTACKS["pgd"].fn(model, x, y, eps=0.01, **arguments("pgd", 0.01, steps=2, step_size=0.3, restarts=3),
                              generator=torch.Generator().manual_seed(0))
    assert accuracy(model, three, y) <= accuracy(model, one, y) + 1e-9


def test_video_as_4d_is_the_same_function():
    torch.manual_seed(0)
    model = TinyConv(3).eval()
    x = torch.rand(4, 3, 3, 8, 8)
    model4, x4 = as_4d(model, x)
    assert isinstance(model4, VideoAs4D) and x4.shape == (4, 9, 8, 8)
    assert torch.equal(model4(x4), model(x))
    assert torch.equal(x4.reshape(x.shape), x)  # the attack's output reshapes back to the clip


def test_autoattack_resumes_from_its_state_file(tmp_path, monkeypatch):
    """Kill AutoAttack after APGD-CE: the resumed run (parsing pyautoattack's state file) gives the same flags."""
    from pyautoattack.autopgd_base import APGDAttack_targeted

    from pipeline.attacks.autoattack import read_state, state_robust_flags

    model, x, y, radius = linear_problem((120, 3, 4, 4), classes=4, seed=1)
    eps = float(radius["Linf"].quantile(0.5))
    settings = {**arguments("autoattack", eps), "seed": 3}
    full = accuracy(model, ATTACKS["autoattack"].fn(model, x, y, eps=eps, **settings), y)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    state = tmp_path / "aa_state.json"
    monkeypatch.setattr(APGDAttack_targeted, "perturb", killed)
    with pytest.raises(KeyboardInterrupt):
        ATTACKS["autoattack"].fn(model, x, y, eps=eps, **settings, state_path=state)
    monkeypatch.undo()
    _, robust = read_state(state, ["apgd-ce", "apgd-t", "fab-t", "square"])
    assert robust is not None and 0 < robust.sum() < len(x)  # APGD-CE broke some, the kill came after
    x_adv = ATTACKS["autoattack"].fn(model, x, y, eps=eps, **settings, state_path=state)
    with torch.no_grad():
        resumed = (model(x_adv).argmax(1) == y) & state_robust_flags(state)
    assert float(resumed.float().mean()) == pytest.approx(full, abs=1e-9)
