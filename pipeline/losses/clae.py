"""CLAE (Ho and Vasconcelos, NeurIPS 2020): contrastive learning with an adversarial view."""

from __future__ import annotations

import torch

from pipeline.losses.nt_xent import nt_xent


def clae(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z_adv: torch.Tensor,
    *,
    temperature: float,
    alpha: float = 1.0,
    fn_mask: torch.Tensor | None = None,
    fn_mode: str = "eliminate",
) -> torch.Tensor:
    """NT-Xent(z1, z2) + alpha * NT-Xent(z1, z_adv) (CLAE's SimCLR objective, alpha = 1).

    `z_adv` is the projection of view 1 perturbed to *increase* NT-Xent (the caller's inner
    attack); because the NT-Xent gradient involves the whole batch, it is a harder positive
    for its own sample and a harder negative for the others.

    Args:
        z1, z2: projections of the two augmented views (clean BatchNorm). Shape (N, D).
        z_adv: projections of the adversarial view (adversarial BatchNorm). Shape (N, D).
        alpha: weight of the adversarial term.
        fn_mask, fn_mode: false-negative handling as in `nt_xent`, for both terms (the
            adversarial view of sample i is a view of sample i).
    """
    kw = {"temperature": temperature, "fn_mask": fn_mask, "fn_mode": fn_mode}
    return nt_xent(z1, z2, **kw) + alpha * nt_xent(z1, z_adv, **kw)
