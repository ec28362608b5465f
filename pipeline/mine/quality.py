"""Pair quality of mined false negatives against the true labels (used only to report, never to mine).

A flagged pair is an unordered pair {i, j}, i != j. Precision = flagged pairs of the same true class /
flagged pairs; recall = the same / all same-class pairs; chance = the precision of flagging every pair
(about 1 / classes for balanced classes), so `x_chance` = precision / chance.
"""

from __future__ import annotations

import numpy as np


def same_class_pairs(truth: np.ndarray) -> int:
    """Number of unordered same-class pairs of labels (N,)."""
    counts = np.bincount(truth)
    return int((counts * (counts - 1) // 2).sum())


def chance_precision(truth: np.ndarray) -> float:
    """Pair precision of flagging every pair: same-class pairs / all pairs."""
    n = len(truth)
    return same_class_pairs(truth) / max(n * (n - 1) // 2, 1)


def _lost(per_anchor: np.ndarray) -> dict:
    return {"mean": float(per_anchor.mean()), "median": float(np.median(per_anchor)), "max": int(per_anchor.max())}


def label_pair_quality(pseudo: np.ndarray, truth: np.ndarray) -> dict:
    """Pair precision/recall of "same pseudo-label" against "same true label", purity and NMI."""
    from sklearn.metrics import normalized_mutual_info_score

    table = np.zeros((pseudo.max() + 1, truth.max() + 1), np.int64)
    np.add.at(table, (pseudo, truth), 1)
    pairs = lambda c: (c * (c - 1) // 2).sum()  # noqa: E731 - number of unordered pairs per cell
    tp, flagged, true_pairs = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    precision = float(tp / max(flagged, 1))
    return {
        "pair_precision": precision, "pair_recall": float(tp / max(true_pairs, 1)),
        "x_chance": times_chance(precision, truth),
        "flagged_pairs": int(flagged), "true_pairs": int(true_pairs),
        "purity": float(table.max(1).sum() / len(pseudo)),
        "nmi": float(normalized_mutual_info_score(truth, pseudo)),
        "clusters": int((table.sum(1) > 0).sum()),
        "pairs_lost_per_anchor": _lost(table.sum(1)[pseudo] - 1),  # other samples flagged for each anchor
    }


def table_pairs(neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique unordered pairs (a < b) of a neighbour table (N, K), -1 padded: two int64 arrays (P,)."""
    n = neighbours.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), neighbours.shape[1])
    cols = neighbours.reshape(-1).astype(np.int64)
    keep = (cols >= 0) & (cols != rows)
    lo, hi = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
    codes = np.unique(lo * n + hi)
    return codes // n, codes % n


def neighbour_pair_quality(neighbours: np.ndarray, truth: np.ndarray) -> dict:
    """Pair precision/recall of the (symmetrised) neighbour graph against the true labels."""
    a, b = table_pairs(neighbours)
    tp, true_pairs = int((truth[a] == truth[b]).sum()), same_class_pairs(truth)
    precision = tp / max(len(a), 1)
    return {
        "pair_precision": precision, "pair_recall": tp / max(true_pairs, 1),
        "x_chance": times_chance(precision, truth),
        "flagged_pairs": int(len(a)), "true_pairs": true_pairs, "purity": None, "nmi": None, "clusters": None,
        "pairs_lost_per_anchor": _lost(np.bincount(np.concatenate([a, b]), minlength=len(truth))),
    }


def times_chance(precision: float, truth: np.ndarray) -> float | None:
    """Precision over chance; None when no two samples share a class (chance is 0: nothing to mine)."""
    chance = chance_precision(truth)
    return precision / chance if chance > 0 else None
