"""PGD adversarial training (Madry et al. 2018, arXiv 1706.06083): CE at the PGD point."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import AdversarialConfig
from pipeline.finetune.adversarial.context import AdversarialContext
from pipeline.finetune.adversarial.inner import Attack, perturb


def pgd_attack(cfg: AdversarialConfig) -> Attack:
    """PGD-`steps` from a uniform start, step `step_size` * eps."""
    eps = cfg.eps  # pixel units (config: 1/255, converted by pipeline.config)
    return Attack(eps=eps, steps=cfg.steps, step_fraction=cfg.step_size, init="uniform")


def adversarial_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AdversarialContext) -> torch.Tensor:
    """x_adv = argmax_{||d|| <= eps} CE(model(x + d), y) by `ctx.attack`; returns CE(model(x_adv), y).

    Shapes: x (N,C,H,W) or (N,C,T,H,W) in [0, 1]; y (N,). The clean input is not trained on.
    Also the loss of fast FGSM training (`fgsm_rs`), whose attack is a single step.
    """
    with ctx.attack_mode(model):
        x_adv = perturb(lambda xa: F.cross_entropy(model(xa).float(), y), x, ctx.attack, ctx.rt, ctx.generator)
    with ctx.rt.autocast():
        return F.cross_entropy(model(x_adv).float(), y)
