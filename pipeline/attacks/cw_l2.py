"""Carlini-Wagner L2 (Carlini & Wagner 2017, arXiv 1608.04644), fixed c, evaluated at an L2 budget.

By hand rather than torchattacks.CW, which (a) takes the best "other" logit as
max((1 - onehot) * logits), wrong whenever every other logit is negative, and (b) maps
pixels at exactly 0 or 1 to atanh(+-1) = inf, so they can never move (most pixels of the
digits data are 0). CW is a minimum-norm attack; at budget eps it returns its smallest
successful perturbation when that is within eps, otherwise its last iterate projected onto
the eps-ball.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.attacks.pgd_l2 import project_l2

SQUEEZE = 1 - 1e-6  # keeps atanh finite at pixels of exactly 0 or 1


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    """max(z_y - max_{j != y} z_j, -kappa), per sample (N,)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return (true - other).clamp(min=-kappa)


def cw_l2(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, c: float, kappa: float,
    steps: int, lr: float,
) -> torch.Tensor:
    """Minimise ||x' - x||_2^2 + c * margin(x') with Adam in tanh space (no binary search over c).

    Args:
        model: maps [0,1] inputs to logits, in eval mode.
        x: clean inputs in [0, 1]. Shape (N,C,H,W) or (N,C,T,H,W).
        y: labels (N,).
        eps: L2 budget in input units at which the result is evaluated.
        c: weight of the margin term (larger finds adversarials more often, with larger norms).
        kappa: confidence: the margin is clamped at -kappa.
        steps: Adam steps.
        lr: Adam learning rate on the tanh-space variable.

    Returns:
        x_adv, same shape as x, ||x_adv - x||_2 <= eps, in [0, 1].
    """
    w = torch.atanh((x * 2 - 1) * SQUEEZE).detach().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    best, best_sq = x.clone(), torch.full((len(x),), float("inf"), device=x.device)
    for _ in range(steps):
        x_adv = (torch.tanh(w) / SQUEEZE + 1) / 2
        sq = (x_adv - x).flatten(1).pow(2).sum(1)
        logits = model(x_adv).float()
        optimizer.zero_grad()
        (sq + c * cw_margin(logits, y, kappa)).sum().backward()
        optimizer.step()
        with torch.no_grad():
            better = (logits.argmax(1) != y) & (sq < best_sq)
            best[better], best_sq[better] = x_adv[better].detach(), sq[better].detach()
    with torch.no_grad():
        last = project_l2((torch.tanh(w) / SQUEEZE + 1) / 2, x, eps)
        keep = (best_sq <= eps**2).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(keep, best, last).clamp(0, 1)
