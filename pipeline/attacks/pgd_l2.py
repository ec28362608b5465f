"""PGD, L2 (Madry et al. 2018), with random start and restarts.

By hand for the reasons given in `pgd.py`, and because torchattacks' PGDL2 reshapes
with `view(-1, 1, 1, 1)` and so fails on clips (anchors.md 1.1). The random start is
torchattacks' choice: a uniform direction at a uniform radius in [0, eps].
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.attacks.pgd import ascend, best_of_restarts


def l2_norms(v: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped to broadcast against v: (N, 1, ..., 1)."""
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Nearest point of {||x' - x||_2 <= eps} (then clipped to [0, 1], which only shrinks the norm)."""
    delta = x_adv - x
    delta = delta * (eps / l2_norms(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta).clamp(0, 1)


def pgd_l2(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, step_size: float,
    random_start: bool, restarts: int, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Maximise CE(model(x_adv), y) over the L2 ball of radius eps intersected with [0, 1].

    Args:
        model: maps [0,1] inputs to logits, in eval mode.
        x: clean inputs in [0, 1]. Shape (N,C,H,W) or (N,C,T,H,W).
        y: labels (N,).
        eps: L2 budget in input units (0.5 is common on CIFAR-10).
        steps: gradient steps per restart; each moves step_size along grad / ||grad||_2.
        step_size: the absolute step in input units (`PgdL2Settings.arguments` converts the config's fraction of eps).
        random_start: start from a random point of the ball.
        restarts: independent restarts; a sample keeps the first restart that fools the model.
        generator: RNG for the random starts.

    Returns:
        x_adv, same shape as x, ||x_adv - x||_2 <= eps, in [0, 1].
    """
    def step(x_adv: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return project_l2(x_adv + step_size * grad / l2_norms(grad).clamp_min(1e-12), x, eps)

    def attempt() -> torch.Tensor:
        if not random_start:
            return ascend(model, y, x, steps, step)
        direction = torch.randn(x.shape, device=x.device, generator=generator)
        radius = torch.rand((len(x),) + (1,) * (x.dim() - 1), device=x.device, generator=generator) * eps
        return ascend(model, y, project_l2(x + direction / l2_norms(direction) * radius, x, eps), steps, step)

    return best_of_restarts(model, x, y, restarts, attempt)
