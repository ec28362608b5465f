"""The mechanism study: its levers (temperature, false-negative dose, simulated miner), its measures
(feature displacement, minimal radius, logit margin, spaces) and its statistics, each against a
closed form or a naive reference."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from pipeline import grid as study
from pipeline import validation
from pipeline.analyse.representation import between_class_distance, centred, centroid_margins, uniformity, within_class_uniformity
from pipeline.config import PretrainConfig, from_dict
from pipeline.io import load_torch
from pipeline.losses import same_label_mask, simulated_miner_mask
from pipeline.losses.contrastive import off_diagonal, partner_mask
from pipeline.pretrain import run
from pipeline.report.mechanism import MethodValues, per_seed_means, slope_interval, within_seed_slopes
from pipeline.sensitivity import feature_displacement, logit_margin, minimal_radius
from tests.conftest import pretrain_cfg


# ---- the simulated miner --------------------------------------------------------------------------
def test_simulated_miner_at_full_recall_and_precision_is_the_oracle():
    y = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2])
    oracle = same_label_mask(y)
    assert simulated_miner_mask(oracle, 1.0, 1.0, torch.Generator().manual_seed(0)) is oracle


@pytest.mark.parametrize(("recall", "precision"), [(0.5, 1.0), (0.25, 0.5), (1.0, 0.4)])
def test_simulated_miner_hits_its_recall_and_precision_per_anchor(recall, precision):
    y = torch.arange(64) % 4  # 16 per class: each anchor has 31 false negatives among 2 x 64 views
    oracle = same_label_mask(y)
    mask = simulated_miner_mask(oracle, recall, precision, torch.Generator().manual_seed(1))
    kept = (mask & oracle).sum(1)
    assert torch.equal(kept, torch.round(oracle.sum(1) * recall).long())  # recall, exactly per anchor
    false = (mask & ~oracle).sum(1)
    assert torch.equal(false, torch.round(kept * (1 - precision) / precision).long())  # diluted to the precision
    n = len(y)
    assert not (mask & ~(off_diagonal(2 * n, mask.device) & ~partner_mask(n, mask.device))).any()  # never self or partner


def test_simulated_miner_draws_differ_by_generator_and_repeat_with_it():
    oracle = same_label_mask(torch.arange(40) % 4)
    a = simulated_miner_mask(oracle, 0.5, 0.6, torch.Generator().manual_seed(3))
    b = simulated_miner_mask(oracle, 0.5, 0.6, torch.Generator().manual_seed(3))
    c = simulated_miner_mask(oracle, 0.5, 0.6, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _weights(path) -> dict:
    return load_torch(path)["encoder"]


def _train(tmp_path, data_dir, name, method):
    cfg = pretrain_cfg(method, {"epochs": 1})
    out = tmp_path / name / "encoder.pt"
    out.parent.mkdir()
    run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, data_dir, None, out, out.with_name("metrics.json"))
    return _weights(out)


def test_dose_one_is_oracle_elimination_and_dose_zero_is_simclr_bit_for_bit(tmp_path, digits_dir):
    simclr = _train(tmp_path, digits_dir, "simclr", {"loss": "nt_xent"})
    oracle = _train(tmp_path, digits_dir, "oracle", {"loss": "nt_xent", "false_negatives": "oracle"})
    dose0 = _train(tmp_path, digits_dir, "dose0", {"loss": "nt_xent", "false_negatives": "oracle", "fn_recall": 0.0})
    dose1 = _train(tmp_path, digits_dir, "dose1", {"loss": "nt_xent", "false_negatives": "oracle", "fn_recall": 1.0})
    half = _train(tmp_path, digits_dir, "half", {"loss": "nt_xent", "false_negatives": "oracle", "fn_recall": 0.5})
    for key in simclr:
        assert torch.equal(dose0[key], simclr[key]), key
        assert torch.equal(dose1[key], oracle[key]), key
    assert any(not torch.equal(half[k], simclr[k]) and not torch.equal(half[k], oracle[k]) for k in simclr)


def test_method_temperature_overrides_the_modality_in_the_job_slice():
    config = {"pretrain": {"device": "cpu", "precision": "fp32", "budget_mb": 1, "image": {"temperature": 0.5, "epochs": 3},
                           "methods": {"hot": {"loss": "nt_xent", "temperature": 1.0}, "plain": {"loss": "nt_xent", "temperature": None}}},
              "decode": {"d": {"source": "sklearn_digits"}}}
    assert study.pretrain_slice(config, "d", "hot")["model"]["temperature"] == 1.0
    assert study.pretrain_slice(config, "d", "plain")["model"]["temperature"] == 0.5


# ---- the grid's expansion ---------------------------------------------------------------------------
def mechanism_config(**section) -> dict:
    return {"datasets": ["d"], "decode": {"d": {"source": "sklearn_digits"}},
            "pretrain": {"image": {"temperature": 0.5}, "methods": {"simclr": {"loss": "nt_xent", "false_negatives": "none",
                                                                              "temperature": None, "seeds": []}}},
            "mechanism": {"base_method": "simclr", **section}}


def test_expansion_names_levels_and_reuses_the_base_and_the_doses():
    config = mechanism_config(temperatures=[0.1, 0.5], doses=[0, 0.25, 1], miner_recalls=[0.25], miner_precisions=[0.4, 1])
    study.expand_mechanism(config)
    methods = config["pretrain"]["methods"]
    assert set(methods) == {"simclr", "simclr_tau0p1", "simclr_dose0p25", "simclr_dose1", "simclr_sim_r0p25_p0p4"}
    assert methods["simclr_tau0p1"]["temperature"] == 0.1 and methods["simclr_tau0p1"]["false_negatives"] == "none"
    assert methods["simclr_dose0p25"] | {} == {**methods["simclr"], "false_negatives": "oracle", "fn_mode": "eliminate",
                                               "fn_recall": 0.25, "fn_precision": 1.0}
    assert methods["simclr_sim_r0p25_p0p4"]["fn_precision"] == 0.4
    found = study.mechanism_methods(config)
    assert found["temperature"] == [[0.1, "simclr_tau0p1"], [0.5, "simclr"]]  # the base's own tau is the base
    assert found["dose"][0] == [0, "simclr"]  # dose 0 is the base run, not a copy
    assert found["miner"] == [[0.25, 0.4, "simclr_sim_r0p25_p0p4"], [0.25, 1, "simclr_dose0p25"]]  # p = 1 is the dose
    again = copy.deepcopy(config)
    study.expand_mechanism(again)
    assert again == config  # idempotent


def test_expansion_refuses_a_base_that_already_removes_false_negatives():
    config = mechanism_config(doses=[0.5])
    config["pretrain"]["methods"]["simclr"]["false_negatives"] = "oracle"
    with pytest.raises(study.GridError, match="mechanism.base_method"):
        study.expand_mechanism(config)


# ---- measures ------------------------------------------------------------------------------------------
def test_feature_displacement_of_a_linear_encoder_is_eps_times_the_l1_norm():
    torch.manual_seed(0)
    w = torch.randn(1, 12)
    linear = lambda x: x.flatten(1) @ w.T  # noqa: E731  # (N, 1)
    x = 0.3 + 0.4 * torch.rand(5, 3, 2, 2)  # away from the box: no clipping
    eps = 4 / 255
    worst, random = feature_displacement(linear, x, eps, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(worst, torch.full((5,), eps * w.abs().sum().item()), rtol=1e-4)
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    assert torch.allclose(random, (eps * signs.flatten(1) @ w.T).abs().squeeze(1), rtol=1e-4)
    assert (random <= worst + 1e-7).all()


def test_minimal_radius_of_a_linear_classifier_is_the_margin_over_the_l1_norm():
    torch.manual_seed(1)
    w, b = torch.randn(8) * 0.5, 0.05
    model = torch.nn.Linear(8, 2)
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(8), w]))
        model.bias.copy_(torch.tensor([0.0, b]))
    x = 0.4 + 0.2 * torch.rand(16, 8)
    y = (x @ w + b > 0).long()  # every sample classified correctly
    max_eps, steps = 64 / 255, 12
    radius = minimal_radius(model, x, y, max_eps, bisection_steps=steps, pgd_steps=1)
    exact = ((x @ w + b).abs() / w.abs().sum()).clamp(max=max_eps)
    assert (radius >= exact - 1e-6).all() and (radius <= exact + max_eps / 2**steps + 1e-6).all()


def test_minimal_radius_is_zero_for_a_misclassified_sample_and_censored_at_the_cap():
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        model.bias.zero_()
    x = torch.tensor([[0.9, 0.5], [0.9, 0.5]])
    radius = minimal_radius(model, x, torch.tensor([0, 1]), 8 / 255, bisection_steps=4, pgd_steps=2)
    assert radius[0] == 0 and radius[1] == pytest.approx(8 / 255)  # 0.9 cannot cross 0 within 8/255


def test_logit_margin_closed_form():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    assert torch.allclose(logit_margin(logits, torch.tensor([0, 2])), torch.tensor([1.5, -2.0]))


def test_leave_one_out_margin_matches_a_naive_loop():
    torch.manual_seed(2)
    f = torch.nn.functional.normalize(torch.randn(30, 6), dim=1)
    y = torch.arange(30) % 3
    fast = centroid_margins(f, y, 3)
    for i in range(30):
        dist = []
        for c in range(3):
            members = [j for j in range(30) if y[j] == c and j != i] if c == y[i] else [j for j in range(30) if y[j] == c]
            centroid = torch.nn.functional.normalize(f[members].sum(0), dim=0)
            dist.append(1 - float(f[i] @ centroid))
        own = dist[int(y[i])]
        other = min(d for c, d in enumerate(dist) if c != y[i])
        assert fast[i].item() == pytest.approx(other - own, abs=1e-5)


def test_within_class_uniformity_is_the_mean_of_per_class_uniformities():
    f = torch.nn.functional.normalize(torch.randn(12, 4), dim=1)
    y = torch.tensor([0] * 5 + [1] * 6 + [2])  # class 2 has one sample: no pair, left out
    expected = (uniformity(f[:5]) + uniformity(f[5:11])) / 2
    assert within_class_uniformity(f, y) == pytest.approx(expected)


def test_centring_removes_a_common_offset_and_the_class_distance_is_of_the_means():
    f = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 4.0], [3.0, 4.0]])
    assert torch.allclose(centred(f + 10), centred(f), atol=1e-6)
    assert between_class_distance(f, torch.tensor([0, 0, 1, 1]), 2) == pytest.approx(4.0)


# ---- the chain statistic -------------------------------------------------------------------------------
def test_within_seed_slopes_match_numpy_polyfit():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    expected = [np.polyfit(x[s], y[s], 1)[0] for s in range(4)]
    assert np.allclose(within_seed_slopes(x, y), expected)


def test_slope_interval_is_a_t_interval_over_seeds():
    from scipy import stats

    slopes = np.array([1.0, 2.0, 4.0])
    iv = slope_interval(slopes)
    half = stats.t.ppf(0.975, 2) * slopes.std(ddof=1) / np.sqrt(3)
    assert iv.estimate == pytest.approx(7 / 3) and iv.high - iv.estimate == pytest.approx(half)


def test_per_seed_means_pair_levels_by_seed():
    values = {"a": MethodValues([0, 1], {"robust": np.array([[0.0, 100.0], [100.0, 100.0]])}),
              "b": MethodValues([1, 2], {"robust": np.array([[0.0, 0.0], [50.0, 50.0]])})}
    seeds, table = per_seed_means(values, [[0, "a"], [1, "b"]], "robust")
    assert seeds == [1] and table.tolist() == [[100.0, 0.0]]


def test_a_dose_without_the_oracle_is_a_config_error_naming_the_key():
    import yaml

    from pipeline.validation import validate_config
    from tests.conftest import REPO, SCHEMA

    config = yaml.safe_load((REPO / "config" / "mechanism.yaml").read_text())
    config["pretrain"]["methods"]["simclr_half"] = {"loss": "nt_xent", "fn_recall": 0.5}  # no false_negatives: oracle
    validate_config(config, SCHEMA)
    with pytest.raises(study.GridError, match=r"pretrain.methods.simclr_half.fn_recall"):
        validation.check_references(config)
