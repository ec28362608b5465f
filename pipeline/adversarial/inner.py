"""The inner maximisation of adversarial training: sign-gradient ascent on any objective, Linf.

Why not `pipeline.attacks.pgd` or `torchattacks.PGD`: both maximise cross-entropy only
(TRADES and SPAT maximise a KL-type term against fixed clean predictions), both run in the
caller's precision and layout, and torchattacks adds per-call bookkeeping (mode toggles,
input checks, clones). Here the forward passes run under the stage's `runtime.autocast()`
(bf16 on CUDA) on channels_last inputs, the gradient is taken w.r.t. the input only, and
the model's BatchNorm mode is the caller's choice (`module_mode`), recorded in the metrics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn

from pipeline.runtime import Runtime

Objective = Callable[[torch.Tensor], torch.Tensor]  # x_adv -> scalar float32 loss to maximise


@dataclass(frozen=True)
class Attack:
    """A Linf inner attack, in input units ([0, 1] pixels)."""

    eps: float
    steps: int
    step_size: float  # absolute step (not a fraction of eps)
    init: str  # "uniform" (PGD, fast FGSM), "normal" (TRADES/SPAT: x + 0.001 N(0, I)) or "zero"

    def scaled(self, strength: float, full_steps: int) -> Attack:
        """The attack at strength r in [0, 1]: eps r, steps ceil(r full_steps), same step/eps ratio."""
        ratio = self.step_size / self.eps
        eps = self.eps * strength
        steps = math.ceil(round(strength * full_steps, 6))  # round: 0.3 * 10 must give 3, not 4
        return replace(self, eps=eps, steps=steps, step_size=ratio * eps)


def to_layout(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """channels_last(_3d) on CUDA; plain contiguous on CPU.

    Why contiguous on CPU: `Split.batch` returns a permuted (channels-last strided) view, and
    torch 2.14's CPU backward through a 3x3 conv followed by a strided 1x1 conv corrupts the
    heap on such inputs with one thread (reproduced: "corrupted double-linked list").
    """
    return rt.to_memory_format(x) if rt.is_cuda else x.contiguous()


def initial_point(x: torch.Tensor, attack: Attack, generator: torch.Generator | None) -> torch.Tensor:
    """Random start inside the eps-ball and [0, 1]; same shape as x."""
    if attack.init == "uniform":
        delta = (torch.rand(x.shape, device=x.device, generator=generator) * 2 - 1) * attack.eps
    elif attack.init == "normal":
        delta = 0.001 * torch.randn(x.shape, device=x.device, generator=generator)
    elif attack.init == "zero":
        delta = torch.zeros_like(x)
    else:
        raise ValueError(f"attack init must be uniform, normal or zero; got {attack.init!r}")
    return project(x + delta, x, attack.eps)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Onto the Linf ball of radius eps around x, intersected with [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0, 1)


def perturb(objective: Objective, x: torch.Tensor, attack: Attack, rt: Runtime, generator: torch.Generator | None = None) -> torch.Tensor:
    """Maximise objective(x_adv) by `attack.steps` signed-gradient steps from a random start.

    Args:
        objective: x_adv -> scalar loss; its forward passes run under `rt.autocast()`.
        x: clean inputs in [0, 1], images (N,C,H,W) or clips (N,C,T,H,W), float32.
        attack: budget, steps, step and start.
        rt: the stage's runtime (autocast dtype, channels_last on CUDA).
        generator: RNG of the random start (on x's device).

    Returns:
        x_adv (detached, float32, same shape and memory format as x) with
        ||x_adv - x||_inf <= eps and x_adv in [0, 1].
    """
    x = to_layout(x.detach(), rt)
    x_adv = initial_point(x, attack, generator)
    for _ in range(attack.steps):
        x_adv.requires_grad_(True)
        with rt.autocast():
            loss = objective(x_adv)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = project(x_adv.detach() + attack.step_size * grad.sign(), x, attack.eps)
    return x_adv.detach()


@contextlib.contextmanager
def module_mode(model: nn.Module, train: bool, frozen: tuple[nn.Module, ...] = ()) -> Iterator[None]:
    """Put `model` in train or eval mode for a block; `frozen` parts stay in eval mode throughout.

    A frozen encoder must never see train mode: its BatchNorm running statistics would move.
    """
    was_training = model.training
    model.train(train)
    for part in frozen:
        part.eval()
    try:
        yield
    finally:
        model.train(was_training)
        for part in frozen:
            part.eval()
