"""The inner maximisation of adversarial CSL (CLAE, RoCL, ACL): Linf PGD (or FGSM) on a contrastive loss.

A thin caller of the package's one Linf PGD core, `pipeline.linf_pgd.pgd_linf`: the
objective is a contrastive loss of views (no labels), supplied by the pretrain stage.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.linf_pgd import pgd_linf


def contrastive_start(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + U[-eps, eps] noise, clipped to [0, 1], drawn in x's memory format (`uniform_`).

    Not `linf_pgd.uniform_start`: this is the draw adversarial CSL has always made. On a
    contiguous CPU tensor both give the same numbers, but `empty_like` follows x's memory
    format, so on channels_last views (CUDA) each pixel gets another number; kept so that
    trained encoders reproduce.
    """
    return (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)


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

    FGSM (CLAE) is steps=1, step_size=eps, random_start=False. The caller picks the model's
    BatchNorm mode and the autocast context.

    Args:
        objective: maps a batch shaped like x to a scalar to increase.
        x: clean inputs in [0, 1], images (N,C,H,W) or clips (N,C,T,H,W), any memory format.
        eps: Linf radius in [0, 1] pixel units (8/255 is common).
        steps: signed-gradient steps.
        step_size: absolute step in [0, 1] pixel units (the config's fraction of eps times eps).
        random_start: start from a uniform point of the ball (ACL, RoCL).
        generator: RNG for the random start (on x's device).

    Returns:
        x_adv (detached), same shape and memory format as x, |x_adv - x| <= eps, in [0, 1].
    """
    x = x.detach()
    start = contrastive_start(x, eps, generator) if random_start else None
    return pgd_linf(objective, x, eps=eps, step_size=step_size, steps=steps, start=start)
