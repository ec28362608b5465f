"""Weighted cosine kNN classifier on frozen features (Wu et al. 2018's monitor; tau from `pretrain.<modality>.knn_temperature`)."""

from __future__ import annotations

import torch


@torch.no_grad()
def knn_predict(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, k: int, num_classes: int,
    temperature: float = 0.07, chunk: int = 1024,
) -> torch.Tensor:
    """Predicted labels (M,) for test features (M, D) from train features (N, D) and labels (N,)."""
    train = torch.nn.functional.normalize(train_feats, dim=1)
    test = torch.nn.functional.normalize(test_feats, dim=1)
    k = min(k, train.shape[0])
    preds = []
    for start in range(0, test.shape[0], chunk):
        sim = test[start : start + chunk] @ train.T  # (m, N)
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k: int, num_classes: int, temperature: float = 0.07) -> float:
    pred = knn_predict(train_feats, train_labels, test_feats, k, num_classes, temperature=temperature)
    return float((pred == test_labels).float().mean())
