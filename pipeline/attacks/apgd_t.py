"""APGD-T (Croce & Hein 2020), Linf: pyautoattack's APGDAttack_targeted (targeted DLR loss), AutoAttack's second attack."""

from __future__ import annotations

import torch
from pyautoattack.autopgd_base import APGDAttack_targeted
from torch import nn

from pipeline.attacks.adapters import FloatLogits, capped_targets, num_classes

IMPLEMENTATION = "pyautoattack APGDAttack_targeted (DLR-targeted loss)"


def apgd_t(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, restarts: int,
    n_target_classes: int, rho: float, seed: int = 0,
) -> torch.Tensor:
    """APGD on the targeted DLR loss against each of the top `n_target_classes` other classes in turn.

    Args:
        model: maps [0,1] inputs to logits, in eval mode; needs at least 4 classes (the DLR loss).
        x: clean inputs in [0, 1]. Shape (N,C,H,W) or (N,C,T,H,W).
        y: labels (N,).
        eps: Linf budget in input units.
        steps: iterations per target and restart (AutoAttack: 100).
        restarts: restarts per target (AutoAttack: 1).
        n_target_classes: targets tried (AutoAttack: 9), capped at classes - 1.
        rho: APGD's step-size decrease threshold.
        seed: the attack's RNG seed.

    Returns:
        x_adv, same shape as x; samples it does not fool come back unchanged.
    """
    targets = capped_targets(n_target_classes, num_classes(model, x))
    attack = APGDAttack_targeted(FloatLogits(model), n_iter=steps, norm="Linf", n_restarts=restarts, eps=eps, seed=seed,
                                 rho=rho, n_target_classes=targets, device=x.device)
    return attack.perturb(x.contiguous(), y).detach()  # its checks .view() the gradient
