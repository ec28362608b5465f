"""PGD, Linf (Madry et al. 2018, arXiv 1706.06083), with random start and restarts.

The steps are the package's Linf PGD core, `pipeline.linf_pgd.pgd_linf`, on the
cross-entropy of the classifier. Written by hand rather than taken from torchattacks
because torchattacks' PGD has no restarts, is tied to a classifier and labels, and draws its random start from the global
RNG (no `generator`), so a resumed evaluation could not reproduce it. `ascend` and
`best_of_restarts` are shared with `pgd_l2`; everything works on images (N,C,H,W) and
clips (N,C,T,H,W) alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.linf_pgd import pgd_linf

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_adv, grad) -> next x_adv, projected


def ascend(model: nn.Module, y: torch.Tensor, x_adv: torch.Tensor, steps: int, step: Step) -> torch.Tensor:
    """`steps` projected gradient-ascent steps on CE(model(x_adv), y) with any projection (`pgd_l2`)."""
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv).float(), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = step(x_adv.detach(), grad)
    return x_adv.detach()


def best_of_restarts(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, restarts: int, attempt: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """Run `attempt()` `restarts` times; a sample keeps the first attempt that fools the model.

    Unbroken samples keep the last attempt. With one restart this is just `attempt()` (no
    extra forward pass, which matters for throughput).
    """
    if restarts == 1:
        return attempt()
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        x_adv = attempt()
        with torch.no_grad():
            now_fooled = model(x_adv).argmax(1) != y
        take = ~fooled  # first success wins; until then the latest attempt
        best[take] = x_adv[take]
        fooled |= now_fooled
    return best


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, step_size: float,
    random_start: bool, restarts: int, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Maximise CE(model(x_adv), y) over the Linf ball of radius eps intersected with [0, 1].

    Args:
        model: maps [0,1] inputs to logits; the caller chooses eval or train mode.
        x: clean inputs in [0, 1]. Shape (N,C,H,W) or (N,C,T,H,W).
        y: labels (N,).
        eps: Linf budget in [0, 1] pixel units.
        steps: gradient steps per restart.
        step_size: the absolute step in pixel units (2/255 at eps 8/255 with the config's
            fraction 0.25; `PgdSettings.arguments` converts it).
        random_start: start each restart from a uniform point of the ball.
        restarts: independent restarts; a sample keeps the first restart that fools the model.
        generator: RNG for the random starts (defaults to the global one).

    Returns:
        x_adv, same shape as x, ||x_adv - x||_inf <= eps, in [0, 1].
    """
    loss = lambda xa: F.cross_entropy(model(xa).float(), y)  # noqa: E731

    def attempt() -> torch.Tensor:
        start = "uniform" if random_start else "none"
        return pgd_linf(loss, x, eps=eps, step_size=step_size, steps=steps, start=start, generator=generator)

    return best_of_restarts(model, x, y, restarts, attempt)
