"""Attacks reach the closed-form robust accuracy of a linear model and respect their bounds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.attacks import ATTACKS


class LinearTwoClass(nn.Module):
    """logits = [s, -s] with s = w . x + b: the worst Linf perturbation of size eps lowers |s| by eps ||w||_1."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([s, -s], dim=1)


def linear_problem(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(shape, generator=g)  # inside (0.3, 0.7): clipping to [0,1] never binds
    w = torch.randn(x[0].numel(), generator=g)
    b = -float((x.flatten(1) @ w).median())
    model = LinearTwoClass(w, b).eval()
    s = x.flatten(1) @ w + b
    y = (s < 0).long()  # every sample is classified correctly
    return model, x, y, s.abs(), w.abs().sum()


SETTINGS = {"fgsm": {}, "pgd": {"steps": 20, "step_size": 0.1, "random_start": True, "restarts": 1}}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("shape", [(200, 3, 4, 4), (200, 3, 2, 4, 4)])
@pytest.mark.parametrize("eps", [0.005, 0.02])
def test_attack_reaches_analytic_robust_accuracy(name, shape, eps):
    model, x, y, margin, w_l1 = linear_problem(shape)
    analytic = float((margin > eps * w_l1).float().mean())
    x_adv = ATTACKS[name](model, x, y, eps=eps, **SETTINGS[name])
    robust = float((model(x_adv).argmax(1) == y).float().mean())
    assert 0 < analytic < 1
    assert robust == pytest.approx(analytic, abs=0.01)


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
    y = torch.randint(0, 5, (shape[0],))
    eps = 8 / 255
    x_adv = ATTACKS[name](model, x, y, eps=eps, **SETTINGS[name])
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    loss = nn.functional.cross_entropy
    assert loss(model(x_adv), y) >= loss(model(x), y) - 1e-6


def test_pgd_restarts_never_hurt():
    model, x, y, _, _ = linear_problem((100, 3, 4, 4), seed=3)
    one = ATTACKS["pgd"](model, x, y, eps=0.01, steps=2, step_size=0.3, restarts=1, generator=torch.Generator().manual_seed(0))
    three = ATTACKS["pgd"](model, x, y, eps=0.01, steps=2, step_size=0.3, restarts=3, generator=torch.Generator().manual_seed(0))
    acc = lambda xa: float((model(xa).argmax(1) == y).float().mean())  # noqa: E731
    assert acc(three) <= acc(one) + 1e-9
