"""Square Attack (Andriushchenko et al. 2020, arXiv 1912.00049), Linf, black-box: pyautoattack's SquareAttack.

Square only accepts 4-D input, so clips go through `VideoAs4D` (squares are then drawn per
(channel, frame) pair). It uses no gradients: when it breaks samples that white-box attacks
could not, the gradients are misleading (gradient masking); evaluate warns about it.
"""

from __future__ import annotations

import torch
from pyautoattack.square import SquareAttack
from torch import nn

from pipeline.attacks.adapters import as_4d

IMPLEMENTATION = "pyautoattack SquareAttack(loss='margin', resc_schedule=False) via VideoAs4D for clips"


def square(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, queries: int, p_init: float,
    restarts: int, seed: int = 0,
) -> torch.Tensor:
    """Random search over square-shaped Linf perturbations at the vertices of the eps-ball.

    Args:
        model: maps [0,1] inputs to logits, in eval mode.
        x: clean inputs in [0, 1]. Shape (N,C,H,W) or (N,C,T,H,W).
        y: labels (N,).
        eps: Linf budget in input units.
        queries: model queries per sample (AutoAttack: 5000).
        p_init: initial share of pixels changed per square.
        restarts: restarts.
        seed: the attack's RNG seed.

    Returns:
        x_adv, same shape as x; samples it does not fool come back unchanged.
    """
    model4, x4 = as_4d(model, x)
    attack = SquareAttack(model4, norm="Linf", n_queries=queries, eps=eps, p_init=p_init, n_restarts=restarts, seed=seed,
                          loss="margin", resc_schedule=False, device=x.device)
    return attack.perturb(x4, y).detach().reshape(x.shape)
