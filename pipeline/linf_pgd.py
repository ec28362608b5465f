"""The one Linf PGD core of the package: signed-gradient ascent of any scalar loss of the input.

Callers supply only the loss (and the start point): the evaluation attacks `pgd` and `fgsm`
(`pipeline.attacks`, cross-entropy of a classifier), the contrastive inner attack of
adversarial CSL (`pipeline.pretrain.steps.inner_attack`, a contrastive loss of views), the inner
attack of adversarial training (`pipeline.finetune.adversarial.inner.perturb`: CE, TRADES KL, SPAT
consistency) and the feature-space attacks of `pipeline.sensitivity`. Every random start is
drawn here too (`start_point`, the `start=` option). One convention: eps and the step size are
absolute, in [0, 1] pixel units; a caller whose config gives the step as a fraction of eps
multiplies once (`fraction * eps`).

A module of its own, outside `pipeline.attacks`, because importing any module of a package
runs its `__init__`: pretrain and finetune would otherwise import (and, through
`pipeline.provenance`, hash) every evaluation attack and rerun when one of them changes.
Images (N,C,H,W) and clips (N,C,T,H,W) alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Loss = Callable[[torch.Tensor], torch.Tensor]  # x_adv -> scalar to increase


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Onto the Linf ball of radius eps around x, intersected with [0, 1]; shapes of x."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)


def uniform_start(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + U[-eps, eps]^d, clipped to [0, 1]: the random start of `pgd` and of adversarial training.

    Drawn with `torch.rand` in x's logical shape (contiguous), so the draw does not depend on
    x's memory format.
    """
    delta = (torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1) * eps
    return (x + delta).clamp(0, 1)


def uniform_like_start(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + U[-eps, eps] noise, clipped to [0, 1], drawn in x's memory format (`uniform_`).

    The draw adversarial CSL (CLAE, RoCL, ACL) has always made. On a contiguous CPU tensor it
    equals `uniform_start`'s numbers, but `empty_like` follows x's memory format, so on
    channels_last views (CUDA) each pixel gets another number; kept so that trained encoders reproduce.
    """
    return (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)


STARTS = ("none", "uniform", "uniform_like", "normal", "zero")


def start_point(x: torch.Tensor, eps: float, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """The first PGD iterate, inside the eps-ball and [0, 1]; shape of x.

    none / zero: x itself (clipped to [0, 1]); uniform: `uniform_start` (PGD, fast FGSM); uniform_like:
    `uniform_like_start` (adversarial CSL); normal: x + 0.001 N(0, I), projected (TRADES, SPAT).
    """
    if kind in ("none", "zero"):
        return project_linf(x, x, eps)
    if kind == "uniform":
        return uniform_start(x, eps, generator)  # |delta| <= eps already: the projection is only the clip
    if kind == "uniform_like":
        return uniform_like_start(x, eps, generator)
    if kind == "normal":
        return project_linf(x + 0.001 * torch.randn(x.shape, device=x.device, generator=generator), x, eps)
    raise ValueError(f"attack start must be one of {', '.join(STARTS)}; got {kind!r}")


def pgd_linf(
    loss_fn: Loss, x: torch.Tensor, *, eps: float, step_size: float, steps: int, start: torch.Tensor | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Maximise `loss_fn(x_adv)` by `steps` signed-gradient steps inside the Linf eps-ball and [0, 1].

    Each step is x_adv <- project(x_adv + step_size * sign(grad loss_fn(x_adv))). Gradients
    reach only x_adv (parameters' `.grad` are left untouched); the caller picks the model's
    mode and any autocast context (inside `loss_fn`). FGSM is steps=1, step_size=eps, start x.

    Args:
        loss_fn: maps a batch shaped like x to a scalar; cast to float32 before the gradient.
        x: clean inputs in [0, 1], images (N,C,H,W) or clips (N,C,T,H,W), any memory format.
        eps: Linf radius in [0, 1] pixel units (8/255 is common).
        step_size: absolute step in [0, 1] pixel units (not a fraction of eps).
        steps: number of steps (0 returns the start).
        start: the first iterate, already inside the ball, or the name of a `start_point` kind (drawn with
            `generator`); default x.
        generator: RNG of a named random start (on x's device).

    Returns:
        x_adv (detached), same shape as x (memory format of `start`), |x_adv - x| <= eps, in [0, 1].
    """
    x = x.detach()
    if isinstance(start, str):
        start = start_point(x, eps, start, generator)
    x_adv = x if start is None else start
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():  # also when called under no_grad (e.g. from an evaluation loop)
            (grad,) = torch.autograd.grad(loss_fn(x_adv).float(), x_adv)
        x_adv = project_linf(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()
