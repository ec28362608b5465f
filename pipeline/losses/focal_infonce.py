"""Focal-InfoNCE (Hou and Li, EMNLP Findings 2023): self-paced down-weighting of easy negatives."""

from __future__ import annotations

import torch

from pipeline.losses.contrastive import masked_info_nce, off_diagonal, partner_mask, with_false_negatives


def focal_infonce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    temperature: float,
    margin: float = 0.3,
    fn_mask: torch.Tensor | None = None,
    fn_mode: str = "eliminate",
) -> torch.Tensor:
    """Positive logits s_p^2 / t, negative logits s_n (s_n + m) / t, then InfoNCE.

    Args:
        z1, z2: projections of the two views. Shape (N, D).
        margin: the hardness m (0.3 in the paper).
        fn_mask, fn_mode: false-negative handling as in `nt_xent`.
    """
    n = z1.shape[0]
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T  # (2N, 2N) cosine similarities
    positives = partner_mask(n, z.device)
    denominator = off_diagonal(2 * n, z.device)
    positives, denominator = with_false_negatives(positives, denominator, fn_mask, fn_mode)
    logits = torch.where(positives, sim * sim, sim * (sim + margin)) / temperature
    return masked_info_nce(logits, positive_mask=positives, denominator_mask=denominator)
