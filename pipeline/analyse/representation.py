"""Representation statistics on L2-normalised features (pure functions, tested on closed forms)."""

from __future__ import annotations

import torch


def alignment(f1: torch.Tensor, f2: torch.Tensor, alpha: float = 2) -> float:
    """Wang and Isola's L_align = E ||f(x) - f(x+)||_2^alpha over positive pairs (N, D) x (N, D)."""
    return float((f1 - f2).norm(dim=1).pow(alpha).mean())


def uniformity(f: torch.Tensor, t: float = 2) -> float:
    """Wang and Isola's L_unif = log E_{i<j} exp(-t ||f_i - f_j||^2). Lower = more uniform."""
    return float(torch.pdist(f.double(), p=2).pow(2).mul(-t).exp().mean().log())


def uniformity_per_sample(f: torch.Tensor, t: float = 2) -> torch.Tensor:
    """Per sample i: log mean_{j != i} exp(-t ||f_i - f_j||^2), shape (N,). Lower = more uniform around i.

    The per-sample form of Wang and Isola's L_unif, so that two encoders can be compared on the same
    samples with a paired bootstrap; its mean is at most L_unif (Jensen) and ranks encoders alike.
    """
    sq = torch.cdist(f.double(), f.double()).pow(2)  # (N, N)
    k = sq.mul(-t).exp()
    k.fill_diagonal_(0)
    return (k.sum(1) / (len(f) - 1)).log().float()


def class_distance_matrix(f: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """(C, C) mean cosine distance 1 - cos between members of class a and class b (a != b pairs only on the diagonal)."""
    onehot = torch.nn.functional.one_hot(y, classes).double()  # (N, C)
    dist = 1 - (f @ f.T).double()  # (N, N)
    sums = onehot.T @ dist @ onehot  # (C, C) sum of distances over member pairs
    counts = onehot.sum(0)
    pairs = counts[:, None] * counts[None, :] - torch.diag(counts)  # exclude i == j on the diagonal
    return (sums / pairs.clamp(min=1)).float()


def intra_inter(f: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cosine distance over same-class pairs (i != j) and over different-class pairs."""
    dist = 1 - f @ f.T
    same = y[:, None] == y[None, :]
    off = ~torch.eye(len(y), dtype=torch.bool, device=f.device)
    return float(dist[same & off].mean()), float(dist[~same].mean())


def centroid_margins(f: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """Per sample: cosine distance to the nearest other-class centroid minus to its own class's centroid. (N,)

    The own centroid leaves the sample out (the mean of the other members of its class), so a
    class of few samples is not pulled towards each of its members. Positive means the sample
    sits closer to its own class; small margins mean classes crowd each other on the hypersphere.
    A sample alone in its class has no own centroid: its margin is NaN.
    """
    sums = torch.zeros(classes, f.shape[1], dtype=f.dtype, device=f.device).index_add_(0, y, f)  # (C, D)
    counts = torch.bincount(y, minlength=classes)
    centroids = torch.nn.functional.normalize(sums, dim=1)
    dist = 1 - f @ centroids.T  # (N, C)
    own_centroid = torch.nn.functional.normalize(sums[y] - f, dim=1)  # (N, D) leave-one-out
    own = 1 - (f * own_centroid).sum(1)
    own = torch.where(counts[y] > 1, own, torch.full_like(own, float("nan")))
    other = dist.scatter(1, y[:, None], float("inf")).min(1).values
    return other - own


def within_class_uniformity(f: torch.Tensor, y: torch.Tensor, t: float = 2) -> float:
    """Mean over classes (with >= 2 members) of L_unif among that class's samples: how spread each class is."""
    values = [uniformity(f[y == c], t) for c in torch.unique(y).tolist() if int((y == c).sum()) > 1]
    return float(sum(values) / len(values)) if values else float("nan")


def centred(f: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Features (N, D) minus their mean (or the given one), L2-normalised.

    A linear head with a bias is blind to the features' common offset; after the final ReLU
    backbone features share a large mean direction that dominates cosine statistics.
    """
    mean = f.mean(0, keepdim=True) if mean is None else mean
    return torch.nn.functional.normalize(f - mean, dim=1)


def between_class_distance(f: torch.Tensor, y: torch.Tensor, classes: int) -> float:
    """Mean Euclidean distance between the class means of features f (N, D), over class pairs: the yardstick of displacements."""
    sums = torch.zeros(classes, f.shape[1], dtype=torch.float64, device=f.device).index_add_(0, y, f.double())
    counts = torch.bincount(y, minlength=classes).double()
    present = counts > 0
    means = sums[present] / counts[present, None]
    return float(torch.pdist(means).mean()) if len(means) > 1 else float("nan")
