"""Mining: every algorithm finds planted clusters, quality numbers equal a naive reference, and the
stage writes the contract pretrain reads plus the four-algorithm comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.config import MineConfig, PretrainConfig, from_dict
from pipeline.mine import ALGORITHMS, mine_candidates, quality_of, run
from pipeline.mine.algorithms import fnc_table, kmeans_labels, knn_table, threshold_table
from pipeline.mine.embeddings import base_embeddings, windows
from pipeline.mine.quality import chance_precision, label_pair_quality, neighbour_pair_quality
from tests.conftest import as_json, pretrain_cfg, schema_defaults


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: torch's thread pool only adds contention on a shared CPU (26 s -> 0.2 s for k-means)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(classes=5, per_class=40, dim=16, noise=0.05, seed=0):
    """Unit vectors (N, dim) around `classes` random centres, and their labels (N,)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=g), dim=1)
    y = torch.arange(classes).repeat_interleave(per_class)
    z = torch.nn.functional.normalize(centres[y] + noise * torch.randn(len(y), dim, generator=g), dim=1)
    return z, y.numpy()


def noisy_views(z: torch.Tensor, views: int, noise: float, seed: int = 1) -> torch.Tensor:
    """z (N, D) first, then `views` perturbed copies, unit norm: (views + 1, N, D)."""
    g = torch.Generator().manual_seed(seed)
    extra = [torch.nn.functional.normalize(z + noise * torch.randn(z.shape, generator=g), dim=1) for _ in range(views)]
    return torch.stack([z, *extra])


def mine_cfg(**kw) -> MineConfig:
    return from_dict(MineConfig, schema_defaults("mine", {"device": "cpu", **kw}))


def naive_pair_quality(flag: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """O(N^2) reference: precision and recall of a symmetric bool (N, N) "flagged pair" matrix."""
    n = len(truth)
    tp = flagged = same = 0
    for i in range(n):
        for j in range(i + 1, n):
            flagged += bool(flag[i, j])
            same += bool(truth[i] == truth[j])
            tp += bool(flag[i, j] and truth[i] == truth[j])
    return tp / max(flagged, 1), tp / max(same, 1)


def test_kmeans_recovers_known_clusters():
    z, y = blobs()
    q = label_pair_quality(kmeans_labels(z, [5], restarts=3, iterations=50, seed=0), y)
    assert q["pair_precision"] >= 0.9 and q["pair_recall"] >= 0.9 and q["nmi"] > 0.9


def test_several_clusterings_combine_by_intersection():
    z, _ = blobs()
    one = kmeans_labels(z, [5], 3, 50, seed=0)
    both = kmeans_labels(z, [5, 10], 3, 50, seed=0)
    # every pair flagged by the combination is flagged by the 5-cluster labelling
    assert not ((both[:, None] == both[None, :]) & ~(one[:, None] == one[None, :])).any()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_finds_planted_clusters(algorithm):
    z, y = blobs(noise=0.3)  # overlapping enough that a wrong implementation cannot be perfect by luck
    cfg = mine_cfg(algorithm=algorithm, clusters=[5], knn_k=5, threshold=0.8)
    q = quality_of(mine_candidates(algorithm, z, noisy_views(z, 4, 0.1), cfg, seed=0), y)
    assert q["flagged_pairs"] > 0
    assert q["pair_precision"] >= 0.8 and q["x_chance"] >= 3  # chance is 1/5 here
    assert q["x_chance"] == pytest.approx(q["pair_precision"] / chance_precision(y))


def test_threshold_keeps_only_pairs_above_it():
    z, _ = blobs(noise=0.3)
    table = threshold_table(z, 0.8)
    sim = z @ z.T
    rows, cols = np.nonzero(table >= 0)
    assert (sim[rows, table[rows, cols]] > 0.8).all()
    above = (sim > 0.8).sum(1) - 1  # minus oneself
    assert ((table >= 0).sum(1) == np.minimum(above.numpy(), table.shape[1])).all()


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_support_views_with_identical_views_equal_knn(aggregate):
    z, _ = blobs(noise=0.3)
    same = z[None].expand(5, -1, -1).contiguous()
    assert (fnc_table(same, 7, aggregate) == knn_table(z, 7)).all()


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_support_views_match_naive_aggregation_over_all_view_pairs(aggregate):
    g = torch.Generator().manual_seed(3)
    views = torch.nn.functional.normalize(torch.randn(4, 30, 8, generator=g), dim=2)  # (V, N, D)
    pair_sims = torch.einsum("and,bmd->abnm", views, views)  # (V, V, N, N)
    agg = pair_sims.amax((0, 1)) if aggregate == "max" else pair_sims.mean((0, 1))
    agg.fill_diagonal_(-torch.inf)
    expected = agg.topk(5, dim=1).indices.numpy()
    got = fnc_table(views, 5, aggregate)
    assert (got == expected).all()
    # the views matter: the first view alone gives another table
    assert (got != knn_table(views[0], 5)).any()


def test_support_views_raise_precision_over_one_noisy_view():
    z, y = blobs(noise=0.35, seed=2)
    views = noisy_views(z, 8, 0.6)  # every view noisy; their agreement is less noisy than one
    one = neighbour_pair_quality(knn_table(views[1], 5), y)["pair_precision"]
    several = neighbour_pair_quality(fnc_table(views[1:], 5, "mean"), y)["pair_precision"]
    assert several > one


def test_neighbour_quality_matches_naive_reference():
    rng = np.random.default_rng(0)
    n, k = 40, 6
    truth = rng.integers(0, 4, n)
    table = rng.integers(-1, n, (n, k))  # -1 padding, duplicates, and oneself (ignored) all occur
    flag = np.zeros((n, n), bool)
    for i in range(n):
        for j in table[i]:
            if j >= 0 and j != i:
                flag[i, j] = flag[j, i] = True
    q = neighbour_pair_quality(table, truth)
    precision, recall = naive_pair_quality(flag, truth)
    assert q["pair_precision"] == pytest.approx(precision) and q["pair_recall"] == pytest.approx(recall)
    assert q["flagged_pairs"] == flag.sum() // 2
    assert q["pairs_lost_per_anchor"]["mean"] == pytest.approx(flag.sum(1).mean())


def test_label_quality_matches_naive_reference():
    rng = np.random.default_rng(1)
    pseudo, truth = rng.integers(0, 6, 50), rng.integers(0, 4, 50)
    flag = pseudo[:, None] == pseudo[None, :]
    q = label_pair_quality(pseudo, truth)
    precision, recall = naive_pair_quality(flag, truth)
    assert q["pair_precision"] == pytest.approx(precision) and q["pair_recall"] == pytest.approx(recall)
    assert chance_precision(truth) == pytest.approx(naive_pair_quality(np.ones((50, 50), bool), truth)[0])


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


def test_clip_windows_are_non_overlapping_training_lengths():
    assert windows(8, 4) == [0, 4] and windows(9, 4) == [0, 4] and windows(8, 0) == [0] and windows(4, 8) == [0]

    class Split:  # two clips of 8 frames whose frame t has value t; "features" = mean frame value
        x = None
        def __len__(self):
            return 2
        def batch(self, idx):
            return torch.arange(8.0).view(1, 1, 8, 1, 1).expand(len(idx), 3, 8, 2, 2)

    seen = []
    def fn(x):
        seen.append(x.shape[2])
        return torch.stack([x.mean((1, 2, 3, 4)), torch.ones(len(x))], 1)
    z = base_embeddings(fn, Split(), batch_size=2, window=4)
    assert seen == [4, 4]
    # windows average 1.5 and 5.5 -> mean 3.5, the same as the whole clip for this linear feature
    assert torch.allclose(z, torch.nn.functional.normalize(torch.tensor([[3.5, 1.0]] * 2), dim=1))


@pytest.fixture(scope="module")
def warmup_encoder(tmp_path_factory, digits_dir):
    """An untrained SimCLR warm-up checkpoint for the 8x8 digits (enough to exercise the stage)."""
    from pipeline.io import read_json
    from pipeline.pretrain import build_nets, save_encoder

    cfg_dict = pretrain_cfg({"loss": "nt_xent"})
    cfg = from_dict(PretrainConfig, cfg_dict)
    torch.manual_seed(0)
    meta = read_json(digits_dir / "meta.json")
    nets = build_nets(cfg, meta, is_video=False)
    path = tmp_path_factory.mktemp("warmup") / "encoder.pt"
    save_encoder(path, nets.eval(), cfg, as_json(cfg_dict), meta, seed=0, knn=0.0)
    return path


@pytest.mark.parametrize(("algorithm", "features", "array"),
                         [("fnc", "backbone", "neighbours"), ("kmeans", "projection", "labels")])
def test_stage_writes_the_pretrain_contract_and_the_comparison(tmp_path, digits_dir, warmup_encoder, algorithm, features, array):
    cfg = mine_cfg(algorithm=algorithm, features=features, support_views=2, restarts=1, iterations=5)
    q = run(cfg, 0, digits_dir, warmup_encoder, tmp_path)
    n = len(np.load(digits_dir / "train_y.npy"))
    with np.load(tmp_path / "false_negatives.npz") as f:
        assert list(f) == [array] and len(f[array]) == n
    saved = json.loads((tmp_path / "quality.json").read_text())
    assert set(saved["candidates"]) == set(ALGORITHMS)
    assert saved["candidates"][algorithm]["pair_precision"] == q["pair_precision"] == saved["pair_precision"]
    assert saved["chance"] == pytest.approx(0.1, abs=0.01)
    assert saved["candidates"]["knn"]["x_chance"] > 1.5  # even random conv features group digits


def test_projection_features_need_an_mlp_head():
    from pipeline.mine.embeddings import projection_from_state

    with pytest.raises(ValueError, match="mine.features"):
        projection_from_state({"head": {"weight": torch.zeros(10, 4), "bias": torch.zeros(10)}}, torch.device("cpu"))


def test_select_k_finds_the_neighbourhood_that_augmentations_do_not_change():
    from pipeline.mine.algorithms import select_k, split_half_agreement

    g = torch.Generator().manual_seed(0)
    centres = torch.eye(16)[:4]  # equidistant blobs: which other blob's members come next is the draw's noise
    z = torch.nn.functional.normalize(centres.repeat_interleave(10, 0) + 0.01 * torch.randn(40, 16, generator=g), dim=1)
    views = noisy_views(z, views=4, noise=0.05)
    assert split_half_agreement(views, 9, "max") > 0.95  # a sample's 9 blob mates, whatever the augmentation draw
    chosen, agreement = select_k(views, [3, 9, 20], "max", tolerance=0.01)
    assert agreement[20] < agreement[9] - 0.1  # beyond the blob (9 others) the neighbours are the draw's noise
    assert chosen == 9  # the blob: its agreement is the best


def test_stage_choice_of_k_is_the_same_with_shuffled_labels(tmp_path, digits_dir, warmup_encoder):
    """The label-free criterion: permuting the training labels changes the reported precision, never the choice."""
    import hashlib
    import shutil

    shuffled = tmp_path / "shuffled"
    shutil.copytree(digits_dir, shuffled)
    y = np.load(shuffled / "train_y.npy")
    np.save(shuffled / "train_y.npy", np.random.default_rng(0).permutation(y))
    meta = json.loads((shuffled / "meta.json").read_text())
    meta["sha256"]["train_y.npy"] = hashlib.sha256((shuffled / "train_y.npy").read_bytes()).hexdigest()
    (shuffled / "meta.json").write_text(json.dumps(meta))
    cfg = mine_cfg(algorithm="fnc", support_views=4, select_k=[2, 5, 10, 40], compare=False)
    real = run(cfg, 0, digits_dir, warmup_encoder, tmp_path / "real")
    fake = run(cfg, 0, shuffled, warmup_encoder, tmp_path / "fake")
    assert real["selection"]["chosen_k"] == fake["selection"]["chosen_k"]
    assert real["selection"]["agreement"] == fake["selection"]["agreement"]
    with np.load(tmp_path / "real" / "false_negatives.npz") as a, np.load(tmp_path / "fake" / "false_negatives.npz") as b:
        assert np.array_equal(a["neighbours"], b["neighbours"])
    assert real["pair_precision"] != fake["pair_precision"]  # the labels only score the result


def test_split_half_agreement_is_one_for_fixed_neighbourhoods_and_near_zero_for_noise():
    from pipeline.mine.algorithms import split_half_agreement

    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(60, 8, generator=g), dim=1)
    assert split_half_agreement(torch.stack([z] * 5), 7, "max") == pytest.approx(1.0)  # every view the same
    noise = torch.nn.functional.normalize(torch.randn(5, 60, 8, generator=g), dim=2)  # views unrelated to each other
    assert abs(split_half_agreement(noise, 7, "max")) < 0.1  # only chance overlap, which the kappa removes
