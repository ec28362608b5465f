"""The one Linf PGD core (`pipeline.linf_pgd`) and its callers reproduce the three loops it replaced.

The references below are the loops as they were before the merge (evaluation PGD and FGSM,
the contrastive inner attack with step_size a fraction of eps, the adversarial-training
inner attack with an absolute step), copied verbatim. On a fixed seed every caller must
give bit-identical adversarial examples, so trained encoders and reported numbers do not move.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.attacks import fgsm, pgd
from pipeline.config.attacks import PgdSettings
from pipeline.finetune.adversarial.inner import Attack, perturb
from pipeline.linf_pgd import pgd_linf
from pipeline.runtime import Runtime


# ---- the old implementations (naive references) ----------------------------------------------
def old_eval_pgd(model, x, y, *, eps, steps, step_size, random_start, generator):
    alpha = step_size * eps
    delta = (torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1) * eps if random_start else 0
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv).float(), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def old_fgsm(model, x, y, *, eps):
    x_adv = x.clone().detach().requires_grad_(True)
    loss = F.cross_entropy(model(x_adv).float(), y)
    (grad,) = torch.autograd.grad(loss, x_adv)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def old_contrastive(objective, x, *, eps, steps, step_size, random_start, generator):
    x = x.detach()
    x_adv = x
    if random_start:
        x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective(x_adv).float(), x_adv)
        step = x_adv.detach() + step_size * eps * grad.sign()
        x_adv = torch.min(torch.max(step, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def old_training(objective, x, attack, rt, generator):
    x = x.detach().contiguous()
    project = lambda xa, eps: torch.min(torch.max(xa, x - eps), x + eps).clamp_(0, 1)  # noqa: E731
    if attack.init == "uniform":
        delta = (torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1) * attack.eps
    elif attack.init == "normal":
        delta = 0.001 * torch.randn(x.shape, device=x.device, generator=generator)
    else:
        delta = torch.zeros_like(x)
    x_adv = project(x + delta, attack.eps)
    for _ in range(attack.steps):
        x_adv.requires_grad_(True)
        with rt.autocast():
            loss = objective(x_adv)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = project(x_adv.detach() + attack.step_size * grad.sign(), attack.eps)
    return x_adv.detach()


# ---- fixtures ---------------------------------------------------------------------------------
def model_and_batch(clip: bool = False):
    torch.manual_seed(0)
    shape = (3, 2, 6, 6) if clip else (3, 8, 8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), 16), nn.Tanh(), nn.Linear(16, 4)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(10, *shape, generator=g)
    x[0] = 0.0  # on the box boundary: the clip to [0, 1] matters
    x[1] = 1.0
    return model, x, torch.arange(10) % 4


def seeded(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


EPSILONS = [8 / 255, 3 / 255, 0.3]  # 3/255: not a power of two times 1/255


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("clip", [False, True])
def test_evaluation_pgd_and_fgsm_match_the_old_loops(eps, random_start, clip):
    model, x, y = model_and_batch(clip)
    new = pgd(model, x, y, eps=eps, **PgdSettings(max_samples=1, steps=4, step_size=0.4, random_start=random_start, restarts=1,
                                                epsilons=[]).arguments(eps), generator=seeded())
    old = old_eval_pgd(model, x, y, eps=eps, steps=4, step_size=0.4, random_start=random_start, generator=seeded())
    assert torch.equal(new, old)
    assert torch.equal(fgsm(model, x, y, eps=eps), old_fgsm(model, x, y, eps=eps))


@pytest.mark.parametrize("eps", EPSILONS)
@pytest.mark.parametrize("random_start", [True, False])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_contrastive_inner_attack_matches_the_old_loop(eps, random_start, layout):
    _, x, _ = model_and_batch()
    x = x.contiguous(memory_format=layout)
    w = torch.randn(3 * 64, generator=seeded(2))
    objective = lambda xa: (xa.flatten(1) @ w).sin().sum()  # noqa: E731
    fraction = 0.25
    new = pgd_linf(objective, x, eps=eps, steps=3, step_size=fraction * eps, start="uniform_like" if random_start else None,
                   generator=seeded())
    old = old_contrastive(objective, x, eps=eps, steps=3, step_size=fraction, random_start=random_start, generator=seeded())
    assert torch.equal(new, old)
    assert new.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("init", ["uniform", "normal", "zero"])
@pytest.mark.parametrize("eps", EPSILONS)
def test_training_inner_attack_matches_the_old_loop(init, eps):
    model, x, y = model_and_batch()
    rt = Runtime(device=torch.device("cpu"), dtype=torch.float32)
    attack = Attack(eps=eps, steps=3, step_fraction=0.25, init=init)
    objective = lambda xa: F.cross_entropy(model(xa).float(), y)  # noqa: E731
    assert torch.equal(perturb(objective, x, attack, rt, seeded()), old_training(objective, x, attack, rt, seeded()))


def test_core_is_fgsm_in_closed_form_and_climbs_a_linear_objective():
    """One step of eps from x is clip(x + eps sign(grad)); with a linear loss that is the exact maximiser."""
    _, x, _ = model_and_batch()
    w = torch.randn(3, 8, 8, generator=seeded(3))
    x_adv = pgd_linf(lambda xa: (xa * w).sum(), x, eps=0.1, step_size=0.1, steps=1)
    assert torch.equal(x_adv, (x + 0.1 * w.sign()).clamp(0, 1))
    many = pgd_linf(lambda xa: (xa * w).sum(), x, eps=0.1, step_size=0.03, steps=5, start=x)
    assert (many - x).abs().max() <= 0.1 + 1e-7 and many.min() >= 0 and many.max() <= 1
    assert (many * w).sum() > (x * w).sum()
