"""Sensitivity of a representation and of a classifier to input perturbations (pure functions).

The paper's chain is: false negatives -> uniform features with small class margins -> a
representation that moves more under a perturbation -> lower robust accuracy. Accuracy under
attack measures the end of the chain only; these measure the link before it, per sample:

- `feature_displacement`: how far a fixed Linf budget moves the features, by feature-space PGD
  (the worst case) and by a random sign perturbation (the typical case);
- `minimal_radius`: the smallest Linf eps at which PGD flips the classifier, by bisection;
- `logit_margin`: the classifier's clean margin z_y - max_{k != y} z_k.

Hand-written: the attack libraries score a classifier's decision, not a feature map's movement,
and give no per-sample minimal radius for PGD (FAB does, but targets L_p geometry with its own
projections; bisection over the same PGD the claims use keeps the two numbers comparable).
Images (N,C,H,W) and clips (N,C,T,H,W) alike.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pipeline.linf_pgd import pgd_linf

FeatureMap = Callable[[torch.Tensor], torch.Tensor]  # (N, ...) in [0, 1] -> (N, D)


def _per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N,) values broadcast against x (N, ...): (N, 1, ..., 1)."""
    return value.view(-1, *([1] * (x.dim() - 1)))


def feature_displacement(features: FeatureMap, x: torch.Tensor, eps: float, steps: int,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample L2 movement of `features` under an Linf perturbation of radius eps. Two (N,) tensors.

    Returns (worst, random): `worst` from `steps` of PGD maximising sum_i ||f(x_i + d_i) - f(x_i)||^2
    (step 2.5 eps / steps, Madry et al.'s rule, starting at a random sign corner), `random` for
    d = eps * a uniform random sign (drawn from `generator`). Both clipped to [0, 1] like any attack.
    """
    with torch.no_grad():
        clean = features(x)
    signs = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1
    corner = (x + eps * signs).clamp(0, 1)
    with torch.no_grad():
        random = (features(corner) - clean).norm(dim=1)
    adv = pgd_linf(lambda xa: (features(xa) - clean).pow(2).sum(), x, eps=eps, step_size=2.5 * eps / max(steps, 1),
                   steps=steps, start=corner)
    with torch.no_grad():
        worst = (features(adv) - clean).norm(dim=1)
    return torch.maximum(worst, random), random  # PGD never reports less than its own start


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{k != y} z_k per sample, (N,); negative where the clean prediction is wrong."""
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).max(1).values
    return own - other


def minimal_radius(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, max_eps: float, bisection_steps: int,
                   pgd_steps: int) -> torch.Tensor:
    """Per sample, the smallest Linf radius at which PGD (cross-entropy) finds a misclassification. (N,)

    Bisection on [0, max_eps] per sample, `bisection_steps` halvings (resolution max_eps / 2^steps);
    each probe runs `pgd_steps` of PGD (step 2.5 eps / steps, from x) at that sample's radius. A
    sample misclassified clean gets 0; one PGD cannot flip at max_eps gets max_eps (censored: read
    the reported value as ">= max_eps"). An upper bound on the true minimal radius (PGD may miss a
    closer adversarial point); for a linear binary classifier PGD is exact and so is the bisection.
    """
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    lo = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    hi = torch.full_like(lo, max_eps)

    def flips(eps: torch.Tensor) -> torch.Tensor:
        e = _per_sample(eps, x)
        adv = pgd_linf(lambda xa: F.cross_entropy(model(xa).float(), y, reduction="sum"), x, eps=e,
                       step_size=2.5 * e / max(pgd_steps, 1), steps=pgd_steps)
        with torch.no_grad():
            return model(adv).argmax(1) != y

    top = flips(hi)
    for _ in range(bisection_steps):
        mid = (lo + hi) / 2
        hit = flips(mid)
        hi = torch.where(hit, mid, hi)
        lo = torch.where(hit, lo, mid)
    radius = torch.where(top, hi, torch.full_like(hi, max_eps))
    return torch.where(wrong, torch.zeros_like(radius), radius)
