"""Optimisers and the warm-up + cosine schedule (pipeline/optim.py)."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.optim import LARS, build_optimizer, warmup_cosine


def test_schedule_warms_up_linearly_then_follows_the_cosine_to_zero():
    f = warmup_cosine(total_steps=110, warmup_steps=10)
    assert [f(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    assert f(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(500) == pytest.approx(0.0)  # past the end it stays at zero
    assert warmup_cosine(10, 0)(0) == pytest.approx(1.0)


def test_lars_step_equals_its_formula_and_skips_one_dimensional_parameters():
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(3))
    w.grad, b.grad = torch.randn(3, 4), torch.randn(3)
    w0, b0, gw, gb = w.detach().clone(), b.detach().clone(), w.grad.clone(), b.grad.clone()
    opt = LARS([w, b], lr=0.1, momentum=0.9, weight_decay=1e-2, eta=0.02)
    opt.step()
    g = gw + 1e-2 * w0
    trust = 0.02 * w0.norm() / g.norm()
    torch.testing.assert_close(w.detach(), w0 - 0.1 * trust * g)
    torch.testing.assert_close(b.detach(), b0 - 0.1 * gb)  # bias: no decay, no trust ratio
    w.grad, b.grad = gw, gb  # second step: momentum buffer = 0.9 * first + new
    w1 = w.detach().clone()
    opt.step()
    g1 = gw + 1e-2 * w1
    torch.testing.assert_close(w.detach(), w1 - 0.1 * (0.9 * trust * g + 0.02 * w1.norm() / g1.norm() * g1))


def test_build_optimizer_names_the_key_on_a_typo():
    p = [torch.nn.Parameter(torch.zeros(2, 2))]
    assert isinstance(build_optimizer(p, "lars", 0.1, 0.0), LARS)
    sgd = build_optimizer(p, "sgd", 0.1, 1e-4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="sgd or lars"):
        build_optimizer(p, "adamw", 0.1, 0.0)
