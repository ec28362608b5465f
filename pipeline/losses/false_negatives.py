"""False-negative masks: which in-batch negatives share the anchor's (true or mined) class.

The mask is an argument of every contrastive loss, never a subclass: oracle labels, mined
pseudo-labels and the online similarity threshold all reduce to a bool (2N, 2N) matrix.
"""

from __future__ import annotations

import torch

from pipeline.losses.contrastive import off_diagonal, partner_mask

FN_MODES = ("eliminate", "attract")


def same_label_mask(labels: torch.Tensor) -> torch.Tensor:
    """False-negative mask from per-sample labels (true or pseudo) of a two-view batch.

    Args:
        labels: integer labels of the N samples. Shape (N,). A label < 0 means "unknown":
            such a sample is never flagged.

    Returns:
        Bool (2N, 2N): True at (i, k) when k is another sample (not i, not i's other view)
        with the same label as i.
    """
    n = labels.shape[0]
    both = torch.cat([labels, labels])  # (2N,)
    same = (both[:, None] == both[None, :]) & (both[:, None] >= 0)
    return same & off_diagonal(2 * n, labels.device) & ~partner_mask(n, labels.device)


def similarity_threshold_mask(z1: torch.Tensor, z2: torch.Tensor, threshold: float) -> torch.Tensor:
    """Online false-negative detection: other samples whose cosine similarity exceeds `threshold`.

    Args:
        z1, z2: embeddings of the two views, shape (N, D). Detached: detection is not trained.

    Returns:
        Bool (2N, 2N) false-negative mask (never the diagonal or the partner view).
    """
    n = z1.shape[0]
    z = torch.nn.functional.normalize(torch.cat([z1, z2]).detach().float(), dim=1)
    flagged = (z @ z.T) > threshold
    return flagged & off_diagonal(2 * n, z.device) & ~partner_mask(n, z.device)


def neighbour_mask(neighbours: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """False-negative mask from a mined neighbour table, for a two-view batch.

    Args:
        neighbours: for each batch sample, dataset indices of its mined same-class
            candidates, padded with -1. Shape (N, K).
        idx: dataset indices of the batch samples. Shape (N,).

    Returns:
        Bool (2N, 2N): (i, k) is flagged when sample k is among i's neighbours or i among k's.
    """
    n = idx.shape[0]
    hit = (neighbours[:, :, None] == idx[None, None, :]).any(dim=1)  # (N, N): k in nbrs(i)
    hit = hit | hit.T
    both = hit.repeat(2, 2)
    return both & off_diagonal(2 * n, idx.device) & ~partner_mask(n, idx.device)


def expand_views(fn_mask: torch.Tensor, views: int) -> torch.Tensor:
    """A two-view false-negative mask (2N, 2N) as a mask for `views` views per sample (VN, VN).

    Samples i and k count as false negatives when any view pair of theirs is flagged (for
    label and neighbour masks every view pair agrees, so the expansion is exact); every view
    of i then treats every view of k as a false negative. Used by RoCL (three views: two
    augmentations and the adversarial one).
    """
    n = fn_mask.shape[0] // 2
    blocks = fn_mask.view(2, n, 2, n)
    per_sample = blocks.any(dim=2).any(dim=0)  # (N, N)
    per_sample = per_sample & ~torch.eye(n, dtype=torch.bool, device=fn_mask.device)
    return per_sample.repeat(views, views)


def _keep_per_row(candidates: torch.Tensor, counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`counts[i]` entries of row i of the bool matrix `candidates` (R, C), drawn uniformly without replacement.

    Ranks a uniform score among each row's candidates (non-candidates rank last), so the choice is
    exact per row and costs one sort; the scores come from `generator` alone.
    """
    scores = torch.rand(candidates.shape, generator=generator, device=candidates.device)
    scores = scores.masked_fill(~candidates, 2.0)
    ranks = torch.empty_like(scores, dtype=torch.long).scatter_(
        1, scores.argsort(dim=1), torch.arange(candidates.shape[1], device=candidates.device).expand_as(scores).contiguous())
    return candidates & (ranks < counts[:, None])


def simulated_miner_mask(oracle: torch.Tensor, recall: float, precision: float, generator: torch.Generator,
                         eligible: torch.Tensor | None = None) -> torch.Tensor:
    """A miner of known quality, simulated from the oracle mask: the dose-response experiment's lever.

    Per anchor (row) i with F_i true false negatives, keeps round(recall * F_i) of them drawn at random
    (recall = the dose f: the share of each anchor's false negatives removed), then adds
    round(kept_i * (1 - precision) / precision) true negatives drawn at random, so that the row's
    precision is `precision`. recall = precision = 1 returns `oracle` itself (no draw).

    Args:
        oracle: bool (2N, 2N) true false-negative mask (`same_label_mask`).
        recall: in [0, 1]; precision: in (0, 1].
        generator: the draws' own generator, so the training's augmentations stay those of the baseline.
        eligible: bool (2N, 2N) pairs that may be flagged at all (default: off-diagonal, not the partner view).

    Returns:
        Bool (2N, 2N), a subset of `eligible`.
    """
    if not (0.0 <= recall <= 1.0 and 0.0 < precision <= 1.0):
        raise ValueError(f"simulated miner: need 0 <= recall <= 1 and 0 < precision <= 1, got {recall}, {precision}")
    if recall == 1.0 and precision == 1.0:
        return oracle
    n2 = oracle.shape[0]
    if eligible is None:
        eligible = off_diagonal(n2, oracle.device) & ~partner_mask(n2 // 2, oracle.device)
    kept_counts = torch.round(oracle.sum(1) * recall).long()  # (2N,)
    kept = _keep_per_row(oracle, kept_counts, generator) if recall < 1.0 else oracle
    if precision == 1.0:
        return kept
    false_counts = torch.round(kept_counts * (1.0 - precision) / precision).long()
    return kept | _keep_per_row(eligible & ~oracle, false_counts, generator)
