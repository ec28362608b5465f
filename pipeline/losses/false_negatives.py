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
