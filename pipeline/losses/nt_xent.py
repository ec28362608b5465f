"""NT-Xent / InfoNCE (SimCLR, Chen et al. 2020) with optional false-negative handling."""

from __future__ import annotations

import torch

from pipeline.losses.contrastive import masked_info_nce, off_diagonal, partner_mask, two_view_logits, with_false_negatives


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    temperature: float,
    fn_mask: torch.Tensor | None = None,
    fn_mode: str = "eliminate",
) -> torch.Tensor:
    """SimCLR's 2N-way loss: each view's positive is the other view of the same sample.

    Args:
        z1, z2: projections of the two views. Shape (N, D).
        temperature: softmax temperature tau (SimCLR uses 0.5 on CIFAR).
        fn_mask: optional bool (2N, 2N) of false negatives (see `false_negatives`).
        fn_mode: "eliminate" drops flagged pairs from the denominator; "attract" counts them
            as extra positives (SupCon-style, but with the given mask).

    Returns:
        Scalar loss. With identical views and no mask it is >= log(1) and equals
        -log(e^{1/t} / (e^{1/t} + sum_k e^{s_k/t})).
    """
    n = z1.shape[0]
    logits = two_view_logits(z1, z2, temperature)  # (2N, 2N)
    positives = partner_mask(n, logits.device)
    denominator = off_diagonal(2 * n, logits.device)
    positives, denominator = with_false_negatives(positives, denominator, fn_mask, fn_mode)
    return masked_info_nce(logits, positive_mask=positives, denominator_mask=denominator)
