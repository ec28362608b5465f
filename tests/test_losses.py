"""Losses against naive loop references, closed forms and the masks they must respect."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from pipeline.linf_pgd import pgd_linf
from pipeline.losses import (
    acl,
    clae,
    expand_views,
    focal_infonce,
    neighbour_mask,
    nt_xent,
    rocl,
    same_label_mask,
    similarity_threshold_mask,
    supcon,
)


def naive_info_nce(z1, z2, t, positives_of, excluded_of, *more):
    """Loop reference: for each anchor, mean over its positives of -log softmax over allowed candidates.

    Rows are the stacked views (z1, z2, *more): row v*N + i is view v of sample i.
    """
    z = F.normalize(torch.cat([z1, z2, *more]).double(), dim=1)
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


def assert_descends(loss: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> None:
    """20 SGD steps on `params` lower `loss()` (the gradient points the right way)."""
    opt = torch.optim.SGD(params, lr=0.5)
    first = loss().item()
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < first - 1e-3


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
    assert_descends(fns[name], [z1, z2])


def two_view_reference(z1, z2, t, labels, mode):
    """NT-Xent of (z1, z2) by loops, with same-label false negatives eliminated or attracted (or none)."""
    n = len(z1)
    partner = lambda i: (i + n) % (2 * n)  # noqa: E731
    same = lambda i: {k for k in range(2 * n) if k not in (i, partner(i)) and labels is not None and labels[k % n] == labels[i % n]}  # noqa: E731
    if mode == "attract":
        return naive_info_nce(z1, z2, t, lambda i: [partner(i), *sorted(same(i))], lambda i: set())
    return naive_info_nce(z1, z2, t, lambda i: [partner(i)], same)


@pytest.mark.parametrize("mode", ["none", "eliminate", "attract"])
def test_rocl_matches_three_view_loop_reference(mode):
    n, t = 6, 0.5
    g = torch.Generator().manual_seed(5)
    z1, z2, za = (torch.randn(n, 5, generator=g) for _ in range(3))
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    # positives: the other two views of the sample; false negatives: every view of a same-label sample
    views_of = lambda i: [v * n + i % n for v in range(3) if v * n + i % n != i]  # noqa: E731
    same = lambda i: {k for k in range(3 * n) if k % n != i % n and labels[k % n] == labels[i % n]}  # noqa: E731
    if mode == "none":
        ref, got = naive_info_nce(z1, z2, t, views_of, lambda i: set(), za), rocl(z1, z2, za, temperature=t)
    elif mode == "eliminate":
        ref = naive_info_nce(z1, z2, t, views_of, same, za)
        got = rocl(z1, z2, za, temperature=t, fn_mask=same_label_mask(labels), fn_mode=mode)
    else:
        ref = naive_info_nce(z1, z2, t, lambda i: [*views_of(i), *sorted(same(i))], lambda i: set(), za)
        got = rocl(z1, z2, za, temperature=t, fn_mask=same_label_mask(labels), fn_mode=mode)
    assert got.item() == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("mode", ["none", "eliminate"])
def test_clae_matches_loop_reference(mode):
    n, t, alpha = 7, 0.3, 0.7
    g = torch.Generator().manual_seed(6)
    z1, z2, za = (torch.randn(n, 4, generator=g) for _ in range(3))
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3]) if mode != "none" else None
    mask = same_label_mask(labels) if labels is not None else None
    ref = two_view_reference(z1, z2, t, labels, mode) + alpha * two_view_reference(z1, za, t, labels, mode)
    assert clae(z1, z2, za, temperature=t, alpha=alpha, fn_mask=mask).item() == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_acl_matches_loop_reference(weight):
    n, t = 5, 0.5
    g = torch.Generator().manual_seed(7)
    z1, z2, a1, a2 = (torch.randn(n, 6, generator=g) for _ in range(4))
    labels = torch.tensor([0, 1, 1, 0, 2])
    ref = ((2 - weight) * two_view_reference(z1, z2, t, labels, "eliminate")
           + weight * two_view_reference(a1, a2, t, labels, "eliminate")) / 2
    got = acl(z1, z2, a1, a2, temperature=t, weight=weight, fn_mask=same_label_mask(labels))
    assert got.item() == pytest.approx(ref, abs=1e-5)


def test_expand_views_is_exact_for_label_masks():
    labels = torch.tensor([2, 0, 2, 1, 0])
    assert torch.equal(expand_views(same_label_mask(labels), 2), same_label_mask(labels))
    m3 = expand_views(same_label_mask(labels), 3)
    both = labels.repeat(3)
    expected = (both[:, None] == both[None, :]) & ((torch.arange(15)[:, None] % 5) != (torch.arange(15)[None, :] % 5))
    assert torch.equal(m3, expected)


def test_inner_attack_stays_in_the_ball_and_the_unit_box_and_raises_the_objective():
    g = torch.Generator().manual_seed(8)
    x = torch.rand(6, 3, 5, 5, generator=g)
    x[0] = 0.0
    x[1] = 1.0  # samples on the box boundary: the ball must be clipped to [0, 1]
    w = torch.randn(3 * 25, generator=g)
    objective = lambda xa: (xa.flatten(1) @ w).sin().sum()  # noqa: E731
    eps = 8 / 255
    for kw in ({"steps": 5, "step_size": eps / 4, "start": "uniform_like"}, {"steps": 1, "step_size": eps, "start": None}):
        x_adv = pgd_linf(objective, x, eps=eps, generator=torch.Generator().manual_seed(0), **kw)
        assert (x_adv - x).abs().max() <= eps + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1 and x_adv.shape == x.shape
        assert objective(x_adv) > objective(x)
    # FGSM (one full step, no random start) is the closed form clip(x + eps * sign(grad))
    xg = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(objective(xg), xg)
    fgsm = pgd_linf(objective, x, eps=eps, steps=1, step_size=eps)  # step sizes are absolute
    assert torch.allclose(fgsm, (x + eps * gx.sign()).clamp(0, 1))


def test_inner_attack_keeps_memory_format_and_handles_clips():
    x = torch.rand(2, 3, 4, 6, 6).contiguous(memory_format=torch.channels_last_3d)
    x_adv = pgd_linf(lambda xa: xa.square().sum(), x, eps=0.1, steps=2, step_size=0.05, start="uniform_like")
    assert x_adv.is_contiguous(memory_format=torch.channels_last_3d) and (x_adv - x).abs().max() <= 0.1 + 1e-6


@pytest.mark.parametrize("name", ["clae", "rocl", "acl"])
def test_adversarial_losses_decrease_under_sgd(name):
    g = torch.Generator().manual_seed(9)
    zs = [torch.randn(12, 8, generator=g, requires_grad=True) for _ in range(4)]
    mask = same_label_mask(torch.arange(12) % 3)
    fns = {
        "clae": lambda: clae(zs[0], zs[1], zs[2], temperature=0.5, fn_mask=mask),
        "rocl": lambda: rocl(zs[0], zs[1], zs[2], temperature=0.5, fn_mask=mask),
        "acl": lambda: acl(*zs, temperature=0.5, fn_mask=mask),
    }
    assert_descends(fns[name], zs)
