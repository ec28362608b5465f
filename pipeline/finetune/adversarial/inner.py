"""The inner maximisation of adversarial training: Linf sign-gradient ascent on any objective.

A thin caller of the package's one Linf PGD core, `pipeline.attacks.pgd.pgd_linf`: the
objective is the training method's (CE for PGD-AT, a KL against fixed clean predictions for
TRADES and SPAT). What this layer adds: the forward passes run under the stage's
`runtime.autocast()` (bf16 on CUDA) on channels_last inputs, the start point is the
method's (`Attack.init`), and the model's BatchNorm mode is the caller's choice
(`module_mode`), recorded in the metrics. Not `torchattacks.PGD`: it maximises
cross-entropy only and adds per-call bookkeeping (mode toggles, input checks, clones).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from pipeline.linf_pgd import pgd_linf
from pipeline.runtime import Runtime

Objective = Callable[[torch.Tensor], torch.Tensor]  # x_adv -> scalar float32 loss to maximise


@dataclass(frozen=True)
class Attack:
    """A Linf inner attack, in input units ([0, 1] pixels)."""

    eps: float
    steps: int
    step_fraction: float  # the step as a fraction of eps, as the config writes it
    init: str  # "uniform" (PGD, fast FGSM), "normal" (TRADES/SPAT: x + 0.001 N(0, I)) or "zero"

    @property
    def step_size(self) -> float:
        """The absolute step in input units: the one place the config's fraction of eps is multiplied out."""
        return self.step_fraction * self.eps

    def scaled(self, strength: float, full_steps: int) -> Attack:
        """The attack at strength r in [0, 1]: eps r, steps ceil(r full_steps), the same fraction of eps per step."""
        steps = math.ceil(round(strength * full_steps, 6))  # round: 0.3 * 10 must give 3, not 4
        return replace(self, eps=self.eps * strength, steps=steps)


def to_layout(x: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """channels_last(_3d) on CUDA; plain contiguous on CPU.

    Why contiguous on CPU: `Split.batch` returns a permuted (channels-last strided) view, and
    torch 2.14's CPU backward through a 3x3 conv followed by a strided 1x1 conv corrupts the
    heap on such inputs with one thread (reproduced: "corrupted double-linked list").
    """
    return rt.to_memory_format(x) if rt.is_cuda else x.contiguous()


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

    def loss(x_adv: torch.Tensor) -> torch.Tensor:
        with rt.autocast():
            return objective(x_adv)

    return pgd_linf(loss, x, eps=attack.eps, step_size=attack.step_size, steps=attack.steps, start=attack.init, generator=generator)


