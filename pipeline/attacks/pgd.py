"""PGD, Linf (Madry et al. 2018, arXiv 1706.06083), with random start and restarts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 10, step_size: float = 0.25,
    random_start: bool = True, restarts: int = 1, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Maximise CE(model(x_adv), y) over the Linf ball of radius eps intersected with [0, 1].

    Args:
        model: maps [0,1] inputs to logits; the caller chooses eval or train mode.
        x: clean inputs in [0, 1]. Shape (N,C,H,W) or (N,C,T,H,W).
        y: labels (N,).
        eps: Linf budget in input units.
        steps: gradient steps per restart.
        step_size: step as a fraction of eps (0.25 = eps/4, i.e. 2/255 at eps 8/255).
        random_start: start each restart from a uniform point of the ball.
        restarts: independent restarts; a sample keeps the first restart that fools the model.
        generator: RNG for the random starts (defaults to the global one).

    Returns:
        x_adv, same shape as x, ||x_adv - x||_inf <= eps, in [0, 1].
    """
    alpha = step_size * eps
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        delta = torch.zeros_like(x)
        if random_start:
            delta = (torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1) * eps
        x_adv = (x + delta).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(x_adv).float(), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
        with torch.no_grad():
            now_fooled = model(x_adv).argmax(1) != y
        take = now_fooled & ~fooled
        best[take] = x_adv[take]
        best[~fooled & ~now_fooled] = x_adv[~fooled & ~now_fooled]  # keep the last attempt for unbroken samples
        fooled |= now_fooled
    return best.detach()
