"""ACL dual stream (Jiang et al., NeurIPS 2020, "A2S/DS"): a clean pair and an adversarial pair."""

from __future__ import annotations

import torch

from pipeline.losses.nt_xent import nt_xent


def acl(
    z1: torch.Tensor,
    z2: torch.Tensor,
    a1: torch.Tensor,
    a2: torch.Tensor,
    *,
    temperature: float,
    weight: float = 1.0,
    fn_mask: torch.Tensor | None = None,
    fn_mode: str = "eliminate",
) -> torch.Tensor:
    """((2 - w) NT-Xent(z1, z2) + w NT-Xent(a1, a2)) / 2.

    w = 1 is ACL's `(nt_xent(features) + nt_xent(features_adv)) / 2`; other w follow DynACL's
    weighting of the two streams.

    Args:
        z1, z2: projections of the clean views (clean BatchNorm). Shape (N, D).
        a1, a2: projections of both views after the joint PGD attack (adversarial
            BatchNorm). Shape (N, D).
        weight: w, the adversarial stream's weight in [0, 2].
        fn_mask, fn_mode: false-negative handling as in `nt_xent`, for both streams.
    """
    kw = {"temperature": temperature, "fn_mask": fn_mask, "fn_mode": fn_mode}
    return ((2 - weight) * nt_xent(z1, z2, **kw) + weight * nt_xent(a1, a2, **kw)) / 2
