"""Representation statistics equal their closed forms on constructed point sets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pipeline.analyse.representation import alignment, centroid_margins, class_distance_matrix, intra_inter, uniformity
from pipeline.config import AnalyseConfig, PretrainConfig, from_dict
from tests.conftest import pretrain_cfg, schema_defaults


def test_uniformity_closed_forms():
    same = torch.tensor([[1.0, 0.0]] * 5)
    assert uniformity(same) == pytest.approx(0.0)  # all distances 0: log(mean(exp(0))) = 0
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity(antipodal, t=2) == pytest.approx(-8.0)  # ||x - (-x)||^2 = 4
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    # 4 neighbours at squared distance 2 and 2 antipodal pairs at 4
    assert uniformity(square, t=2) == pytest.approx(math.log((4 * math.exp(-4) + 2 * math.exp(-8)) / 6))


def test_alignment_closed_forms():
    f = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
    assert alignment(f, f) == pytest.approx(0.0)
    assert alignment(f, -f) == pytest.approx(4.0)


def test_class_distances_on_two_tight_orthogonal_classes():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    intra, inter = intra_inter(f, y)
    assert intra == pytest.approx(0.0) and inter == pytest.approx(1.0)
    assert torch.allclose(class_distance_matrix(f, y, 2), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert torch.allclose(centroid_margins(f, y, 2), torch.ones(4))


def test_margin_is_negative_for_a_sample_on_the_wrong_side():
    f = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1, 0])  # the last class-0 sample sits in class 1's cluster
    m = centroid_margins(f, y, 2)
    assert m[4] < 0 and (m[2:4] > 0).all()


def test_analyse_stage_writes_stats_in_every_space(tmp_path, digits_dir):
    from pipeline import analyse, pretrain

    cfg = pretrain_cfg({"loss": "nt_xent"}, {"epochs": 1})
    pretrain.run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, digits_dir, None, tmp_path / "enc.pt", tmp_path / "m.json")
    acfg = from_dict(AnalyseConfig, schema_defaults("analyse", {"device": "cpu", "max_samples": 200}))
    stats = analyse.run(acfg, digits_dir, [("simclr", 0, tmp_path / "enc.pt")], tmp_path / "rep.json")
    test = stats["simclr:0"]["test"]
    assert -4 <= test["uniformity"] <= 0 and 0 <= test["alignment"] <= 4
    assert len(test["class_distances"]) == 10
    written = json.loads((tmp_path / "rep.json").read_text())
    indices = written["sample_indices"]["test"]
    assert len(test["per_sample"]["margin"]) == len(test["per_sample"]["uniformity"]) == len(indices) == 200
    assert sum(test["per_sample"]["margin"]) / 200 == pytest.approx(test["margin"]["mean"], abs=1e-4)
    assert test["space"] == "centred" and set(test["spaces"]) == {"backbone", "centred", "projection"}
    assert test["per_sample"] == test["spaces"]["centred"]["per_sample"]  # the claims read the primary space
    assert test["spaces"]["backbone"]["uniformity"] > test["spaces"]["centred"]["uniformity"]  # post-ReLU features share a direction
    sens = test["sensitivity"]
    assert len(sens["per_sample"]["displacement"]) == 200 and sens["space"] == "centred"
    assert all(w >= r >= 0 for w, r in zip(sens["per_sample"]["displacement"], sens["per_sample"]["random_displacement"], strict=True))


def test_analyse_describes_a_match_classifier_encoder_without_alignment(tmp_path, digits_dir):
    from pipeline import analyse
    from pipeline.io import save_torch, sha256_file
    from pipeline.models import Classifier, Encoder

    meta = json.loads((digits_dir / "meta.json").read_text())
    args = {"backbone": "resnet_small", "width": 4, "small_input": True, "mean": meta["mean"], "std": meta["std"]}
    torch.manual_seed(0)
    model = Classifier(Encoder(**args), 10)
    path = tmp_path / "classifier.pt"
    save_torch(path, {"model": model.state_dict(), "model_args": args, "num_classes": 10})
    (tmp_path / "metrics.json").write_text(json.dumps({"model_sha256": sha256_file(path)}))
    acfg = from_dict(AnalyseConfig, schema_defaults("analyse", {"device": "cpu", "max_samples": 100, "sensitivity_samples": 20}))
    stats = analyse.run(acfg, digits_dir, [("supervised_matched", 0, path)], tmp_path / "rep.json")
    test = stats["supervised_matched:0"]["test"]
    assert test["alignment"] is None and "projection" not in test["spaces"] and len(test["per_sample"]["margin"]) == 100


def test_subset_covers_every_class_of_a_class_sorted_split():
    """A class-sorted split (as videos are decoded) keeps all classes; the first n would keep one."""
    import numpy as np

    from pipeline.analyse import subset
    from pipeline.data import Split

    y = torch.arange(5).repeat_interleave(20)  # 100 samples, sorted by class
    x = np.arange(100 * 2, dtype=np.uint8).reshape(100, 2)  # memory-mapped style (numpy) data
    small = subset(Split(x=x, y=y, device=torch.device("cpu")), 10)
    assert sorted(small.y.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert (small.x[:, 0] // 2).tolist() == [round(i * 99 / 9) for i in range(10)]  # x and y stay paired
    tensor_small = subset(Split(x=torch.from_numpy(x), y=y, device=torch.device("cpu")), 10)
    assert torch.equal(tensor_small.x, torch.from_numpy(small.x))


def test_per_sample_uniformity_matches_a_naive_loop():
    import math

    from pipeline.analyse.representation import uniformity, uniformity_per_sample

    torch.manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(30, 5), dim=1)
    naive = [math.log(sum(math.exp(-2 * float((f[i] - f[j]).pow(2).sum())) for j in range(30) if j != i) / 29) for i in range(30)]
    assert torch.allclose(uniformity_per_sample(f, 2), torch.tensor(naive), atol=1e-5)
    assert float(uniformity_per_sample(f, 2).mean()) <= uniformity(f, 2) + 1e-6  # Jensen


def test_heatmaps_are_a_grid_with_integer_class_ticks_and_one_panel_per_method(tmp_path, monkeypatch):
    import matplotlib.figure

    from pipeline.report.plots import class_distance_grid

    figures = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), real(fig, *a, **k)))
    dist = [[0.1 * (i == j) + 0.5 * (i != j) for j in range(6)] for i in range(6)]
    stats = {f"m{k}:{seed}": {"test": {"class_distances": dist, "uniformity": -2.0 - k}} for k in range(6) for seed in (0, 1)}
    class_distance_grid(stats, "toy", tmp_path / "h.png")
    panels = [ax for ax in figures[0].axes if ax.get_title()]
    assert [ax.get_title().split("\n")[0] for ax in panels] == [f"m{k}" for k in range(6)]  # first seed of each method
    rows = {round(ax.get_position().y0, 3) for ax in panels}
    assert len(rows) == 2  # 6 panels wrap into a grid of 4 columns, not one long row
    assert list(panels[0].get_xticks()) == list(range(6)) and list(panels[0].get_yticks()) == list(range(6))
