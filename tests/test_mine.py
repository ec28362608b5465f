"""Mining: high precision on well-separated clusters, quality numbers equal hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import MineConfig, from_dict
from pipeline.mine import kmeans_labels, label_pair_quality, neighbour_pair_quality, neighbour_table
from tests.conftest import schema_defaults


def blobs(classes=5, per_class=40, dim=16, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=g), dim=1)
    y = torch.arange(classes).repeat_interleave(per_class)
    z = torch.nn.functional.normalize(centres[y] + noise * torch.randn(len(y), dim, generator=g), dim=1)
    return z, y.numpy()


def mine_cfg(**kw) -> MineConfig:
    return from_dict(MineConfig, schema_defaults("mine", {"device": "cpu", **kw}))


def test_kmeans_recovers_known_clusters():
    z, y = blobs()
    labels = kmeans_labels(z, mine_cfg(clusters=[5]), seed=0)
    q = label_pair_quality(labels, y)
    assert q["pair_precision"] >= 0.9 and q["pair_recall"] >= 0.9 and q["nmi"] > 0.9


def test_several_clusterings_combine_by_intersection():
    z, y = blobs()
    one = kmeans_labels(z, mine_cfg(clusters=[5]), seed=0)
    both = kmeans_labels(z, mine_cfg(clusters=[5, 10]), seed=0)
    # every pair flagged by the combination is flagged by the 5-cluster labelling
    same_both = both[:, None] == both[None, :]
    same_one = one[:, None] == one[None, :]
    assert not (same_both & ~same_one).any()


@pytest.mark.parametrize("algorithm", ["knn", "threshold"])
def test_neighbour_mining_is_precise(algorithm):
    z, y = blobs()
    table = neighbour_table(z, mine_cfg(algorithm=algorithm, knn_k=5, threshold=0.9))
    q = neighbour_pair_quality(table, y)
    assert q["pair_precision"] >= 0.9 and q["flagged_pairs"] > 0


def test_label_quality_matches_hand_computation():
    pseudo = np.array([0, 0, 0, 1, 1, 2])
    truth = np.array([0, 0, 1, 1, 1, 1])
    q = label_pair_quality(pseudo, truth)
    # flagged pairs: C(3,2)+C(2,2) = 4; same-true-class among them: (0,1) and (3,4) = 2; true pairs: 1 + 6 = 7
    assert q["pair_precision"] == pytest.approx(2 / 4) and q["pair_recall"] == pytest.approx(2 / 7)
    assert q["purity"] == pytest.approx((2 + 2 + 1) / 6)
    assert q["pairs_lost_per_anchor"]["mean"] == pytest.approx((2 * 3 + 1 * 2 + 0) / 6)


def test_neighbour_quality_matches_hand_computation():
    truth = np.array([0, 0, 1, 1])
    table = np.array([[1, 2], [0, -1], [-1, -1], [-1, -1]])  # pairs {0,1} (correct) and {0,2} (wrong)
    q = neighbour_pair_quality(table, truth)
    assert q["flagged_pairs"] == 2 and q["pair_precision"] == 0.5 and q["pair_recall"] == 0.5
