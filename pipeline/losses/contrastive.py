"""Masked multi-positive InfoNCE: the one kernel behind NT-Xent, SupCon and FN handling.

Every contrastive loss of the study is this function with different masks
(SimCLR: the other view is the only positive; SupCon: every same-label sample is a
positive; false-negative elimination: flagged samples leave the denominator;
false-negative attraction: flagged samples join the positives). Writing the masks
out explicitly keeps each variant a two-line function that is easy to test.
"""

from __future__ import annotations

import torch


def masked_info_nce(
    logits: torch.Tensor, *, positive_mask: torch.Tensor, denominator_mask: torch.Tensor
) -> torch.Tensor:
    """Mean over anchors of -mean_{p in P(i)} log(exp(l_ip) / sum_{k in D(i)} exp(l_ik)).

    Args:
        logits: pairwise logits, already divided by the temperature. Shape (M, M).
        positive_mask: P(i); bool (M, M). Must be a subset of `denominator_mask`.
        denominator_mask: D(i); bool (M, M). The diagonal must be False.

    Returns:
        Scalar loss, float32. Anchors without any positive are ignored.
    """
    logits = logits.float()
    masked = logits.masked_fill(~denominator_mask, float("-inf"))
    log_denominator = torch.logsumexp(masked, dim=1, keepdim=True)  # (M, 1)
    log_prob = logits - log_denominator  # (M, M)
    n_pos = positive_mask.sum(dim=1)  # (M,)
    pos_log_prob = (log_prob * positive_mask).sum(dim=1)  # masked entries contribute 0
    has_pos = n_pos > 0
    per_anchor = -pos_log_prob[has_pos] / n_pos[has_pos]
    return per_anchor.mean()


def two_view_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine-similarity logits of the 2N stacked views, divided by the temperature.

    Args:
        z1, z2: embeddings of the two views. Shape (N, D) each; need not be normalised.

    Returns:
        Logits of shape (2N, 2N); row i < N is view 1 of sample i, row N + i is view 2.
    """
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
    return z @ z.T / temperature


def partner_mask(n: int, device: torch.device) -> torch.Tensor:
    """Bool (2N, 2N) that is True exactly at (i, i+N) and (i+N, i): the two views of a sample."""
    idx = torch.arange(2 * n, device=device)
    return idx[:, None] == ((idx + n) % (2 * n))[None, :]


def same_sample_mask(n: int, views: int, device: torch.device) -> torch.Tensor:
    """Bool (VN, VN), True at (a, b) when rows a != b are views of the same sample (a = v*N + i)."""
    sample = torch.arange(views * n, device=device) % n
    return (sample[:, None] == sample[None, :]) & off_diagonal(views * n, device)


def off_diagonal(m: int, device: torch.device) -> torch.Tensor:
    """Bool (M, M), True everywhere except the diagonal (an anchor is never its own negative)."""
    return ~torch.eye(m, dtype=torch.bool, device=device)


def with_false_negatives(
    positives: torch.Tensor, denominator: torch.Tensor, fn_mask: torch.Tensor | None, fn_mode: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The false-negative treatment every contrastive loss shares; bool masks of one shape (M, M).

    "eliminate" drops the flagged pairs from the denominator (they are no longer negatives);
    "attract" counts them as extra positives (SupCon-style, with the given mask). No mask: unchanged.
    """
    if fn_mask is None:
        return positives, denominator
    if fn_mode == "eliminate":
        return positives, denominator & ~fn_mask
    if fn_mode == "attract":
        return positives | fn_mask, denominator
    raise ValueError(f"fn_mode must be 'eliminate' or 'attract', got {fn_mode!r}")
