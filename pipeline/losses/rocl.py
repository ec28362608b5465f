"""RoCL (Kim et al., NeurIPS 2020): the instance-wise adversarial view joins as an extra positive."""

from __future__ import annotations

import torch

from pipeline.losses.contrastive import masked_info_nce, off_diagonal, same_sample_mask, with_false_negatives
from pipeline.losses.false_negatives import expand_views


def rocl(
    z1: torch.Tensor,
    z2: torch.Tensor,
    z_adv: torch.Tensor,
    *,
    temperature: float,
    fn_mask: torch.Tensor | None = None,
    fn_mode: str = "eliminate",
) -> torch.Tensor:
    """3N-way NT-Xent over (view 1, view 2, adversarial view): an anchor's positives are the
    other two views of its sample; every other sample's views are negatives.

    RoCL's `NT_xent(..., 'Rep')` sums the two positive terms of an anchor; this takes their
    mean (SupCon's L_out form, like every loss here), i.e. RoCL's value divided by 2.

    Args:
        z1, z2: projections of the two augmented views. Shape (N, D).
        z_adv: projections of the adversarial view (an attack on view 1). Shape (N, D).
        fn_mask: optional two-view false-negative mask (2N, 2N); it is applied to all three
            views of the flagged samples (`expand_views`).
        fn_mode: "eliminate" or "attract", as in `nt_xent`.

    Returns:
        Scalar loss, float32.
    """
    n = z1.shape[0]
    z = torch.nn.functional.normalize(torch.cat([z1, z2, z_adv]).float(), dim=1)  # (3N, D)
    logits = z @ z.T / temperature
    positives = same_sample_mask(n, 3, z.device)
    denominator = off_diagonal(3 * n, z.device)
    fn3 = None if fn_mask is None else expand_views(fn_mask, 3)
    positives, denominator = with_false_negatives(positives, denominator, fn3, fn_mode)
    return masked_info_nce(logits, positive_mask=positives, denominator_mask=denominator)
