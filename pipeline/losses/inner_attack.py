"""The inner maximisation of adversarial CSL: Linf PGD (or FGSM) on any scalar objective.

The evaluation attacks (`pipeline.attacks`) maximise cross-entropy of a classifier; CLAE,
RoCL and ACL maximise a contrastive loss of views, with no labels. torchattacks' attacks
are tied to a classifier and labels, so this small loop is written here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def linf_pgd(
    objective: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float,
    random_start: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Maximise `objective(x_adv)` over the Linf ball of radius eps around x, inside [0, 1].

    FGSM (CLAE) is steps=1, step_size=1, random_start=False. The caller picks the model's
    BatchNorm mode and the autocast context; gradients reach only `x_adv` (parameters'
    `.grad` are left untouched).

    Args:
        objective: maps a batch shaped like x to a scalar to increase.
        x: clean inputs in [0, 1], images (N,C,H,W) or clips (N,C,T,H,W), any memory format.
        eps: Linf radius in input units (8/255 is common).
        steps: signed-gradient steps.
        step_size: step as a fraction of eps.
        random_start: start from a uniform point of the ball (ACL, RoCL).
        generator: RNG for the random start (on x's device).

    Returns:
        x_adv (detached), same shape and memory format as x, |x_adv - x| <= eps, in [0, 1].
    """
    x = x.detach()
    x_adv = x
    if random_start:
        x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():  # also when called under no_grad (e.g. from an evaluation loop)
            (grad,) = torch.autograd.grad(objective(x_adv).float(), x_adv)
        step = x_adv.detach() + step_size * eps * grad.sign()
        x_adv = torch.min(torch.max(step, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()
