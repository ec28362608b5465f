"""The weighted cosine kNN monitor (pipeline/pretrain/knn.py) against a naive per-sample loop."""

from __future__ import annotations

import math

import torch

from pipeline.pretrain.knn import knn_accuracy, knn_predict


def naive_knn(train, labels, test, k, classes, temperature):
    preds = []
    for q in test:
        sims = [float(torch.dot(q, t) / (q.norm() * t.norm())) for t in train]
        top = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * classes
        for i in top:
            votes[int(labels[i])] += math.exp(sims[i] / temperature)
        preds.append(max(range(classes), key=lambda c: votes[c]))
    return torch.tensor(preds)


def test_knn_equals_a_naive_weighted_vote_across_chunks():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(60, 5, generator=g), torch.randn(25, 5, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    for k, temperature in ((1, 0.07), (7, 0.07), (7, 10.0)):
        got = knn_predict(train, labels, test, k, 4, temperature=temperature, chunk=6)  # chunks of 6 queries
        assert torch.equal(got, naive_knn(train, labels, test, k, 4, temperature))


def test_weights_let_one_close_neighbour_outvote_two_far_ones():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.05, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.9]])  # cos 0.74 to class 0, 0.67 and 0.70 to class 1
    assert knn_predict(train, labels, query, 3, 2, temperature=0.01).item() == 0  # sharp weights: the nearest wins
    assert knn_predict(train, labels, query, 3, 2, temperature=100.0).item() == 1  # flat weights: a majority vote


def test_accuracy_on_separable_clusters_is_one_and_k_is_capped_by_the_train_size():
    centres = torch.eye(3) * 5
    train = centres.repeat_interleave(4, 0) + 0.1 * torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(3).repeat_interleave(4)
    assert knn_accuracy(train, labels, centres, torch.arange(3), k=200, num_classes=3) == 1.0
