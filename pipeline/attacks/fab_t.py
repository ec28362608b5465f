"""FAB-T (Croce & Hein 2020, arXiv 1907.02044), Linf: pyautoattack's FABAttack_PT, targeted, AutoAttack's third attack."""

from __future__ import annotations

import torch
from pyautoattack.fab_pt import FABAttack_PT
from torch import nn

from pipeline.attacks.adapters import FloatLogits, capped_targets, num_classes

IMPLEMENTATION = "pyautoattack FABAttack_PT(targeted=True)"


def fab_t(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, restarts: int,
    n_target_classes: int, seed: int = 0,
) -> torch.Tensor:
    """Minimum-norm targeted attack (linearise the decision boundary, project, extrapolate); kept if within eps.

    Args:
        model: maps [0,1] inputs to logits, in eval mode.
        x: clean inputs in [0, 1]. Shape (N,C,H,W) or (N,C,T,H,W).
        y: labels (N,).
        eps: Linf budget in input units; a found perturbation larger than eps does not count.
        steps: iterations per target and restart (AutoAttack: 100).
        restarts: restarts per target (AutoAttack: 1).
        n_target_classes: targets tried (AutoAttack: 9), capped at classes - 1.
        seed: the attack's RNG seed.

    Returns:
        x_adv, same shape as x; samples it does not fool within eps come back unchanged.
    """
    targets = capped_targets(n_target_classes, num_classes(model, x))
    attack = FABAttack_PT(FloatLogits(model), norm="Linf", n_restarts=restarts, n_iter=steps, eps=eps, seed=seed, targeted=True,
                          device=x.device, n_target_classes=targets)
    return attack.perturb(x.contiguous(), y).detach()  # its checks .view() the gradient
