"""Supervised contrastive loss (Khosla et al. 2020, the L_out form)."""

from __future__ import annotations

import torch

from pipeline.losses.false_negatives import same_label_mask
from pipeline.losses.nt_xent import nt_xent


def supcon(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """SupCon: every same-class sample in the two-view batch is a positive.

    This is exactly NT-Xent with oracle false negatives *attracted*, which is why it
    is written on top of `nt_xent` instead of again.

    Args:
        z1, z2: projections of the two views. Shape (N, D).
        labels: true class labels. Shape (N,).
    """
    return nt_xent(z1, z2, temperature=temperature, fn_mask=same_label_mask(labels), fn_mode="attract")
