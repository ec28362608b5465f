"""Candidate false negatives: k-means pseudo-labels or neighbour tables (N, K), -1 padded.

  kmeans     same cluster (spherical k-means); with several cluster counts a pair is flagged only
             if it shares a cluster in every clustering (one combined pseudo-label);
  knn        top-k cosine neighbours of each anchor;
  threshold  cosine similarity above a threshold (at most MAX_THRESHOLD_NEIGHBOURS per anchor);
  fnc        top-k by support-view similarity (FNC, Huynh et al. 2022, arXiv 2011.11765): anchor i and
             candidate j are each seen through V views; their similarity is the max (or mean) over all
             V x V view pairs of the cosine similarity. With identical views this is plain kNN.
A neighbour table flags the pair {i, j} when j is in i's row or i in j's (the consumer symmetrises).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

MAX_THRESHOLD_NEIGHBOURS = 256
Similarity = Callable[[slice], torch.Tensor]  # anchor rows -> (rows, N) similarities to every sample


def spherical_kmeans(z: torch.Tensor, k: int, iterations: int, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """k-means on unit vectors z (N, D) with k-means++ seeding. Returns labels (N,) and inertia."""
    n = z.shape[0]
    centres = z[torch.randint(n, (1,), generator=gen, device=z.device)]
    for _ in range(1, k):  # k-means++: sample proportional to squared distance to the nearest centre
        d2 = (2 - 2 * z @ centres.T).clamp(min=0).min(1).values
        pick = torch.multinomial(d2 + 1e-12, 1, generator=gen)
        centres = torch.cat([centres, z[pick]])
    for _ in range(iterations):
        labels = (z @ centres.T).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, labels, z)
        empty = sums.norm(dim=1) == 0
        sums[empty] = centres[empty]  # keep an empty cluster's centre where it was
        centres = torch.nn.functional.normalize(sums, dim=1)
    labels = (z @ centres.T).argmax(1)
    inertia = float((2 - 2 * (z * centres[labels]).sum(1)).sum())
    return labels, inertia


def kmeans_labels(z: torch.Tensor, clusters: list[int], restarts: int, iterations: int, seed: int) -> np.ndarray:
    """Combined pseudo-labels (N,) over all cluster counts (best-inertia restart of each)."""
    gen = torch.Generator(device=z.device).manual_seed(seed)
    columns = []
    for k in clusters:
        runs = [spherical_kmeans(z, k, iterations, gen) for _ in range(restarts)]
        columns.append(min(runs, key=lambda r: r[1])[0].cpu().numpy())
    _, combined = np.unique(np.stack(columns, 1), axis=0, return_inverse=True)
    return combined.reshape(-1).astype(np.int64)


def top_table(similarity: Similarity, n: int, k: int, threshold: float | None = None, chunk: int = 1024) -> np.ndarray:
    """(N, min(k, N-1)) indices of each anchor's most similar other samples, best first, int64.

    With `threshold`, entries whose similarity is not above it become -1.
    """
    k = min(k, n - 1)
    rows = []
    for start in range(0, n, chunk):
        sim = similarity(slice(start, min(start + chunk, n))).clone()
        sim[torch.arange(sim.shape[0]), torch.arange(start, start + sim.shape[0])] = -torch.inf  # never oneself
        top_sim, top_idx = sim.topk(k, dim=1)
        if threshold is not None:
            top_idx = torch.where(top_sim > threshold, top_idx, -1)
        rows.append(top_idx)
    return torch.cat(rows).cpu().numpy().astype(np.int64)


def knn_table(z: torch.Tensor, k: int) -> np.ndarray:
    """Top-k cosine neighbours of unit vectors z (N, D). (N, k) int64."""
    return top_table(lambda rows: z[rows] @ z.T, z.shape[0], k)


def threshold_table(z: torch.Tensor, threshold: float) -> np.ndarray:
    """Neighbours with cosine similarity above `threshold` (the most similar 256 at most). (N, 256) int64, -1 padded."""
    return top_table(lambda rows: z[rows] @ z.T, z.shape[0], MAX_THRESHOLD_NEIGHBOURS, threshold)


def support_similarity(views: torch.Tensor, aggregate: str) -> Similarity:
    """Aggregated view-pair similarity of unit views (V, N, D): rows -> (rows, N).

    max: max over the V x V view pairs (a candidate counts if any view pair agrees strongly);
    mean: mean over the pairs, which equals the dot product of the mean views (one matmul).
    """
    if aggregate == "mean":
        mean = views.mean(0)
        return lambda rows: mean[rows] @ mean.T

    if aggregate == "max":
        def best(rows: slice) -> torch.Tensor:
            anchors = views[:, rows]  # (V, R, D)
            out = None
            for a in range(views.shape[0]):
                sim = (anchors[a] @ views.reshape(-1, views.shape[2]).T).view(anchors.shape[1], views.shape[0], -1)
                sim = sim.max(1).values  # (R, N): best candidate view for anchor view a
                out = sim if out is None else torch.maximum(out, sim)
            return out
        return best
    raise ValueError(f"mine.support_aggregate: unknown {aggregate!r}; choose max or mean")


def fnc_table(views: torch.Tensor, k: int, aggregate: str) -> np.ndarray:
    """Top-k candidates of each anchor by support-view similarity; views (V, N, D) unit norm. (N, k) int64."""
    v, n, _ = views.shape
    chunk = max(1, min(1024, 2**25 // (v * n)))  # the max path holds (chunk, V*N) similarities: <= 128 MB
    return top_table(support_similarity(views, aggregate), n, k, chunk=chunk)


def split_half_agreement(views: torch.Tensor, k: int, aggregate: str) -> float:
    """Label-free stability of top-k support-view neighbours, corrected for chance (a kappa).

    N_a and N_b are the `fnc_table` neighbours from two disjoint halves of the augmented views
    (views 1, 3, 5, ... and 2, 4, 6, ...; view 0, the un-augmented one, in neither). The raw
    agreement a = mean over anchors of |N_a(i) & N_b(i)| / k tends to 1 as k grows towards N, so it
    is corrected for what two random k-sets of the N - 1 others share, c = k / (N - 1):
    kappa = (a - c) / (1 - c). 1: the neighbourhoods belong to the samples, 0: to one draw of
    augmentations. views: (V, N, D) unit norm with V >= 3.
    """
    if views.shape[0] < 3:
        raise ValueError("mine.select_k needs support_views >= 2 (two disjoint halves of augmented views)")
    a, b = fnc_table(views[1::2], k, aggregate), fnc_table(views[2::2], k, aggregate)
    k_eff, n = a.shape[1], views.shape[1]
    hits = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1)  # (N,)
    raw, chance = float(hits.mean() / k_eff), k_eff / (n - 1)
    return (raw - chance) / (1 - chance) if chance < 1 else 0.0


def select_k(views: torch.Tensor, candidates: list[int], aggregate: str, tolerance: float) -> tuple[int, dict[int, float]]:
    """The smallest candidate k whose chance-corrected split-half agreement is within `tolerance` of the best, and every agreement.

    Never reads a label: the miner's neighbourhood size is chosen by how reproducible its flags are
    across independent augmentations (a stability criterion, as in stability-based model selection,
    Lange et al. 2004). On the digits the agreement rises while k grows within a class and flattens
    once k passes the class size (measured: 0.64 at k = 20, 0.85 at 120, 0.84 at 250-600, with ~126
    samples per class); the smallest k on the plateau is the largest dose the data supports without
    reaching into other classes.
    """
    agreement = {k: split_half_agreement(views, k, aggregate) for k in sorted(set(candidates))}
    best = max(agreement.values())
    return min(k for k, a in agreement.items() if a >= best - tolerance), agreement
