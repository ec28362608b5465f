"""APGD-CE (Croce & Hein 2020, arXiv 2003.01690), Linf: pyautoattack's APGDAttack, AutoAttack's first attack."""

from __future__ import annotations

import torch
from pyautoattack.autopgd_base import APGDAttack
from torch import nn

from pipeline.attacks.adapters import FloatLogits

IMPLEMENTATION = "pyautoattack APGDAttack(loss='ce')"


def apgd_ce(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, restarts: int,
    rho: float, seed: int = 0,
) -> torch.Tensor:
    """Step-size-free PGD on the cross-entropy loss, Linf ball of radius eps intersected with [0, 1].

    Args:
        model: maps [0,1] inputs to logits, in eval mode.
        x: clean inputs in [0, 1]. Shape (N,C,H,W) or (N,C,T,H,W) (APGD is generic over dims).
        y: labels (N,).
        eps: Linf budget in input units.
        steps: iterations per restart (AutoAttack: 100).
        restarts: restarts (standard AutoAttack: 1).
        rho: APGD's step-size decrease threshold.
        seed: the attack's RNG seed (it reseeds torch's global RNG, as AutoAttack does).

    Returns:
        x_adv, same shape as x; samples it does not fool come back unchanged.
    """
    attack = APGDAttack(FloatLogits(model), n_iter=steps, norm="Linf", n_restarts=restarts, eps=eps, seed=seed, loss="ce",
                        rho=rho, device=x.device)
    return attack.perturb(x.contiguous(), y).detach()  # its checks .view() the gradient
