"""Losses against naive loop references, closed forms and the masks they must respect."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.losses import focal_infonce, neighbour_mask, nt_xent, same_label_mask, similarity_threshold_mask, supcon


def naive_info_nce(z1, z2, t, positives_of, excluded_of):
    """Loop reference: for each anchor, mean over its positives of -log softmax over allowed candidates."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    m = len(z)
    total, anchors = 0.0, 0
    for i in range(m):
        allowed = [k for k in range(m) if k != i and k not in excluded_of(i)]
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in allowed)
        pos = positives_of(i)
        if not pos:
            continue
        total += sum(-math.log(math.exp(float(z[i] @ z[p]) / t) / denom) for p in pos) / len(pos)
        anchors += 1
    return total / anchors


@pytest.mark.parametrize("n,d,t", [(4, 8, 0.5), (7, 3, 0.1), (16, 32, 1.0)])
def test_nt_xent_matches_loop_reference(n, d, t):
    g = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    ref = naive_info_nce(z1, z2, t, lambda i: [(i + n) % (2 * n)], lambda i: set())
    assert nt_xent(z1, z2, temperature=t).item() == pytest.approx(ref, abs=1e-5)


def test_nt_xent_closed_form_identical_embeddings():
    # All 2N embeddings equal: every logit is 1/t, so the loss is log(2N - 1) (lightly's check).
    n = 8
    z = torch.ones(n, 4)
    assert nt_xent(z, z.clone(), temperature=0.5).item() == pytest.approx(math.log(2 * n - 1), abs=1e-5)


def test_nt_xent_symmetric():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert nt_xent(z1, z2, temperature=0.3).item() == pytest.approx(nt_xent(z2, z1, temperature=0.3).item(), abs=1e-6)


@pytest.mark.parametrize("mode", ["eliminate", "attract"])
def test_fn_handling_matches_reference(mode):
    n, t = 8, 0.5
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(n, 6, generator=g), torch.randn(n, 6, generator=g)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])
    both = labels.repeat(2)
    same = lambda i: {k for k in range(2 * n) if k != i and k != (i + n) % (2 * n) and both[k] == both[i]}  # noqa: E731
    if mode == "eliminate":
        ref = naive_info_nce(z1, z2, t, lambda i: [(i + n) % (2 * n)], same)
    else:
        ref = naive_info_nce(z1, z2, t, lambda i: [(i + n) % (2 * n), *sorted(same(i))], lambda i: set())
    got = nt_xent(z1, z2, temperature=t, fn_mask=same_label_mask(labels), fn_mode=mode)
    assert got.item() == pytest.approx(ref, abs=1e-5)


def test_oracle_mask_flags_exactly_same_class_negatives():
    labels = torch.tensor([0, 1, 0, 1, 2])
    mask = same_label_mask(labels)
    n = len(labels)
    for i in range(2 * n):
        for k in range(2 * n):
            expected = i != k and k != (i + n) % (2 * n) and labels[i % n] == labels[k % n]
            assert bool(mask[i, k]) == expected
    # per anchor: (class size - 1) other samples, each seen in both views
    assert mask.sum(1).tolist() == [2, 2, 2, 2, 0] * 2


def test_unknown_labels_are_never_flagged():
    mask = same_label_mask(torch.tensor([-1, -1, 0, 0]))
    assert not mask[[0, 1, 4, 5]].any()
    assert mask[2, 3] and mask[2, 7]


def test_supcon_equals_reference():
    n, t = 6, 0.2
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    both = labels.repeat(2)
    pos = lambda i: [k for k in range(2 * n) if k != i and both[k] == both[i]]  # noqa: E731
    assert supcon(z1, z2, labels, temperature=t).item() == pytest.approx(naive_info_nce(z1, z2, t, pos, lambda i: set()), abs=1e-5)


def test_focal_infonce_formula_on_hand_made_similarities():
    # Two samples on a circle: cosine similarities are known exactly.
    a = math.radians(30)
    z1 = torch.tensor([[1.0, 0.0], [math.cos(2 * a), math.sin(2 * a)]])
    z2 = torch.tensor([[math.cos(a), math.sin(a)], [math.cos(3 * a), math.sin(3 * a)]])
    t, m = 0.5, 0.3
    z = torch.cat([z1, z2]).double()
    sim = z @ z.T
    losses = []
    for i in range(4):
        p = (i + 2) % 4
        pos = math.exp(float(sim[i, p]) ** 2 / t)
        neg = sum(math.exp(float(sim[i, k]) * (float(sim[i, k]) + m) / t) for k in range(4) if k not in (i, p))
        losses.append(-math.log(pos / (pos + neg)))
    assert focal_infonce(z1, z2, temperature=t, margin=m).item() == pytest.approx(sum(losses) / 4, abs=1e-5)


def test_neighbour_mask_is_symmetric_and_matches_table():
    idx = torch.tensor([10, 11, 12])
    neighbours = torch.tensor([[11, -1], [-1, -1], [99, 10]])  # 10<->11, 12->10, 99 not in batch
    mask = neighbour_mask(neighbours, idx)
    pairs = {(i, k) for i in range(3) for k in range(3) if mask[i, k]}
    assert pairs == {(0, 1), (1, 0), (0, 2), (2, 0)}
    assert torch.equal(mask, mask.T)


def test_threshold_mask_flags_similar_pairs_only():
    z1 = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]])
    mask = similarity_threshold_mask(z1, z1.clone(), threshold=0.95)
    assert mask[0, 1] and mask[1, 0] and mask[0, 4] and not mask[0, 2] and not mask[0, 3]


@pytest.mark.parametrize("name", ["nt_xent", "nt_xent_fn", "supcon", "focal_infonce"])
def test_loss_decreases_under_sgd(name):
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(16, 8, generator=g, requires_grad=True)
    z2 = torch.randn(16, 8, generator=g, requires_grad=True)
    labels = torch.arange(16) % 4
    fns = {
        "nt_xent": lambda: nt_xent(z1, z2, temperature=0.5),
        "nt_xent_fn": lambda: nt_xent(z1, z2, temperature=0.5, fn_mask=same_label_mask(labels)),
        "supcon": lambda: supcon(z1, z2, labels, temperature=0.5),
        "focal_infonce": lambda: focal_infonce(z1, z2, temperature=0.5),
    }
    opt = torch.optim.SGD([z1, z2], lr=0.5)
    first = fns[name]().item()
    for _ in range(20):
        opt.zero_grad()
        fns[name]().backward()
        opt.step()
    assert fns[name]().item() < first - 1e-3
