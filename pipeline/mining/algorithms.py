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
