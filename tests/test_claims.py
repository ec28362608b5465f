"""The claims section: per-sample outcomes in, estimates, intervals and verdicts out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.grid import Grid
from pipeline.report import claims, power

METHODS = ["supervised", "simclr", "simclr_oracle_elim"]
N = 400


def grid(seeds=(0, 1, 2)) -> Grid:
    return Grid(datasets={"toy": "image"}, embeds=[], methods=METHODS, seeds=list(seeds), method_seeds={m: list(seeds) for m in METHODS},
                protocols=["slf"], protocol_methods={"slf": METHODS}, protocol_seeds={"slf": []}, mined_methods=[],
                warmup_method="simclr")


ROLES = claims.Roles(supervised="supervised", csl="simclr", matched=None, oracle=["simclr_oracle_elim"], mined=[], adversarial={},
                     protocol="slf")


def bits(flags: np.ndarray) -> str:
    return "".join("1" if f else "0" for f in flags)


def write_outcomes(results: Path, method: str, seed: int, clean: np.ndarray, robust: dict[str, np.ndarray]) -> None:
    path = results / "evaluate" / "toy" / method / f"seed{seed}" / "slf" / "robustness.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    attacks = {"any": {e: {"accuracy": float(r.mean()), "samples": len(r)} for e, r in robust.items()}}
    path.write_text(json.dumps({"clean_accuracy": float(clean.mean()), "samples": len(clean), "attacks": attacks,
                                "outcomes": {"clean": bits(clean), "attacks": {"any": {e: bits(r) for e, r in robust.items()}}}}))


def study(tmp_path: Path, robust_rate: dict[str, float], seeds=(0, 1, 2), clean_rate: dict[str, float] | None = None,
          shared_noise: bool = False) -> Path:
    """Per-sample outcomes where a shared per-sample difficulty makes methods' outcomes correlated
    (`shared_noise`: the methods of a seed see the same noise, so equal rates give equal outcomes)."""
    rng = np.random.default_rng(0)
    difficulty = rng.random(N)  # the same test samples are hard for every method
    for seed in seeds:
        seed_noise = rng.random(N) * 0.1
        for method in METHODS:
            noise = seed_noise if shared_noise else rng.random(N) * 0.1
            clean = difficulty + noise < (clean_rate or {}).get(method, 0.9)
            robust8 = clean & (difficulty + noise < robust_rate[method])
            robust2 = clean & (difficulty + noise < min(0.9, robust_rate[method] + 0.2))
            write_outcomes(tmp_path, method, seed, clean, {"2.0": robust2, "8.0": robust8})
    return tmp_path


def by_claim(rows, claim):
    return [r for r in rows if r.claim == claim and r.primary]


def test_a_large_gap_is_supported_and_the_share_is_reported(tmp_path):
    results = study(tmp_path, {"supervised": 0.7, "simclr": 0.4, "simclr_oracle_elim": 0.55})
    rows = claims.dataset_claims(results, grid(), "toy", ROLES)
    (c1a,) = by_claim(rows, "C1a")
    assert c1a.eps == 8.0 and c1a.verdict == "supported" and c1a.interval.low > 0
    assert c1a.interval.n_seeds == 3 and c1a.interval.n_samples == N
    (c3,) = by_claim(rows, "C3")
    assert c3.verdict == "supported" and "share of the gap" in c3.extra
    share = float(c3.extra.split(": ")[1].split("%")[0]) / 100
    assert share == pytest.approx(0.5, abs=0.1)  # (0.55 - 0.4) / (0.7 - 0.4)
    assert all(r.eps == 2.0 for r in rows if not r.primary) and all("uncorrected" in r.verdict for r in rows if not r.primary)


def test_a_reversed_gap_is_contradicted(tmp_path):
    results = study(tmp_path, {"supervised": 0.4, "simclr": 0.7, "simclr_oracle_elim": 0.7})
    (c1a,) = by_claim(claims.dataset_claims(results, grid(), "toy", ROLES), "C1a")
    assert c1a.verdict == "contradicted" and c1a.interval.high < 0


def test_a_known_zero_effect_is_inconclusive(tmp_path):
    results = study(tmp_path, {"supervised": 0.6, "simclr": 0.6, "simclr_oracle_elim": 0.6}, shared_noise=True)
    rows = claims.dataset_claims(results, grid(), "toy", ROLES)
    (c1a,) = by_claim(rows, "C1a")
    assert c1a.verdict == "inconclusive" and c1a.interval.estimate == 0 and c1a.interval.low <= 0 <= c1a.interval.high
    assert c1a.needs == "no effect observed: no finite size decides it"
    (c3,) = by_claim(rows, "C3")
    assert "undefined" in c3.extra  # no established gap: no share


def test_conditional_robustness_removes_the_clean_accuracy_confound(tmp_path):
    """Supervised has higher clean accuracy but the same share of its clean-correct samples survives:
    robust accuracy differs (C1a supported) while conditional robustness does not (C1b inconclusive)."""
    rng = np.random.default_rng(1)
    for seed in (0, 1, 2):
        for method, clean_rate in (("supervised", 0.9), ("simclr", 0.6), ("simclr_oracle_elim", 0.6)):
            clean = rng.random(N) < clean_rate
            survive = rng.random(N) < 0.5
            write_outcomes(tmp_path, method, seed, clean, {"8.0": clean & survive})
    rows = claims.dataset_claims(tmp_path, grid(), "toy", ROLES)
    assert by_claim(rows, "C1a")[0].verdict == "supported"
    (c1b,) = by_claim(rows, "C1b")
    assert c1b.verdict == "inconclusive" and abs(c1b.interval.estimate) < 0.06


def test_needed_size_uses_the_seed_variance_the_holm_level_and_the_dataset():
    """The sizes printed decide the effect at the claim's Holm level, with the measured seed variance, within the test set."""
    rng = np.random.default_rng(0)
    values = rng.choice([-1.0, 0.0, 1.0], p=[0.1, 0.8, 0.1], size=(3, 3000)) + rng.normal(0, 0.02, (3, 1))
    text = power.needed_size(values, 0.03, alpha=0.01, max_samples=3000)
    found = re.match(r"(\d+) seeds x ([\d,]+) samples", text)
    s, n = int(found.group(1)), int(found.group(2).replace(",", ""))
    vc = claims.st.variance_components(values)
    assert s >= 3 and n <= 3000 and "Holm level 0.01" in text
    assert power.half_width(s, n, vc, 0.99) < 0.03 <= power.half_width(s, n - 1, vc, 0.99)
    assert "not reachable" in power.needed_size(values, 0.001, alpha=0.01, max_samples=3000)
    assert "needs >= 2 seeds" in power.needed_size(values[:1], 0.03, alpha=0.05, max_samples=3000)


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_fewer_than_three_seeds_give_an_estimate_only(tmp_path, seeds):
    results = study(tmp_path, {"supervised": 0.9, "simclr": 0.2, "simclr_oracle_elim": 0.55}, seeds=seeds)
    rows = claims.dataset_claims(results, grid(seeds=seeds), "toy", ROLES)
    (c1a,) = by_claim(rows, "C1a")
    assert c1a.verdict == f"estimate only, {len(seeds)} seed{'s' if len(seeds) > 1 else ''}" and np.isnan(c1a.p_holm)
    assert c1a.interval.note and c1a.interval.seed_level == (len(seeds) > 1)
    assert all(r.verdict.startswith("estimate only") for r in rows)
    (c3,) = by_claim(rows, "C3")
    assert "undefined" in c3.extra  # a gap on < 3 seeds is not established: no share


def test_primary_eps_is_chosen_per_dataset(tmp_path):
    results = study(tmp_path, {"supervised": 0.7, "simclr": 0.4, "simclr_oracle_elim": 0.55})
    roles = claims.Roles(**{**ROLES.__dict__, "primary_eps": {"toy": 2.0}})
    rows = claims.dataset_claims(results, grid(), "toy", roles)
    assert {r.eps for r in rows if r.primary} == {2.0} and {r.eps for r in rows if not r.primary} == {8.0}


def test_holm_is_applied_over_the_primary_claims(tmp_path):
    results = study(tmp_path, {"supervised": 0.7, "simclr": 0.4, "simclr_oracle_elim": 0.55})
    rows = claims.dataset_claims(results, grid(), "toy", ROLES)
    primary = [r for r in rows if r.primary]
    raw = sorted(r.interval.p_value() for r in primary)
    assert all(r.p_holm >= r.interval.p_value() - 1e-12 for r in primary)
    assert min(r.p_holm for r in primary) == pytest.approx(min(1.0, raw[0] * len(primary)))


def test_markdown_and_records_are_well_formed(tmp_path):
    results = study(tmp_path, {"supervised": 0.7, "simclr": 0.4, "simclr_oracle_elim": 0.55})
    rows = claims.dataset_claims(results, grid(), "toy", ROLES)
    md = claims.markdown(rows)
    assert "Holm-corrected" in md and "| C1a |" in md and "**supported**" in md and "3 seeds (0, 1, 2) x 400 test samples" in md
    record = claims.as_record(rows[0])
    assert {"claim", "estimate", "low", "high", "verdict", "seeds", "samples", "p_holm"} <= set(record)


def test_rerun_gives_the_same_numbers(tmp_path):
    results = study(tmp_path, {"supervised": 0.7, "simclr": 0.4, "simclr_oracle_elim": 0.55})
    a = [claims.as_record(r) for r in claims.dataset_claims(results, grid(), "toy", ROLES)]
    b = [claims.as_record(r) for r in claims.dataset_claims(results, grid(), "toy", ROLES)]
    assert a == b


def add_corruptions(results: Path, method: str, seed: int, per_cell: list[np.ndarray]) -> None:
    """Per-sample corruption outcomes (two corruptions x severities) into an existing robustness.json."""
    path = results / "evaluate" / "toy" / method / f"seed{seed}" / "slf" / "robustness.json"
    record = json.loads(path.read_text())
    cells = iter(per_cell)
    record["corruptions"] = {name: {sev: {"accuracy": 0.0, "outcomes": bits(next(cells))} for sev in ("1", "5")}
                             for name in ("gaussian_noise", "contrast")}
    path.write_text(json.dumps(record))


def test_corruption_claim_c6_is_the_paired_mean_over_corruptions_against_a_naive_reference(tmp_path):
    study(tmp_path, {"supervised": 0.5, "simclr": 0.5, "simclr_oracle_elim": 0.5})
    rng = np.random.default_rng(1)
    naive = []
    for seed in (0, 1, 2):
        sup = [rng.random(N) < 0.8 for _ in range(4)]
        csl = [rng.random(N) < 0.6 for _ in range(4)]
        add_corruptions(tmp_path, "supervised", seed, sup)
        add_corruptions(tmp_path, "simclr", seed, csl)
        naive.append(np.mean(sup) - np.mean(csl))
    (row,) = by_claim(claims.dataset_claims(tmp_path, grid(), "toy", ROLES), "C6")
    assert row.interval.estimate == pytest.approx(np.mean(naive))
    assert row.verdict == "supported" and row.eps is None and row.comparison == "supervised - simclr"


def test_supcon_claim_c7_and_c5_under_its_own_protocol(tmp_path):
    methods = METHODS + ["supcon"]
    g = Grid(datasets={"toy": "image"}, embeds=[], methods=methods, seeds=[0, 1, 2], method_seeds={m: [0, 1, 2] for m in methods},
             protocols=["slf", "aff"], protocol_methods={"slf": methods, "aff": ["simclr", "simclr_oracle_elim"]},
             protocol_seeds={"slf": [], "aff": []}, mined_methods=[], warmup_method="simclr")
    rng = np.random.default_rng(2)
    for seed in (0, 1, 2):
        for method, rate in (("supervised", 0.5), ("simclr", 0.3), ("simclr_oracle_elim", 0.3), ("supcon", 0.6)):
            clean = np.ones(N, dtype=bool)
            write_outcomes(tmp_path, method, seed, clean, {"8.0": rng.random(N) < rate})
        for method, rate in (("simclr", 0.2), ("simclr_oracle_elim", 0.5)):  # under AFF the variant is far more robust
            path = tmp_path / "evaluate" / "toy" / method / f"seed{seed}" / "aff" / "robustness.json"
            path.parent.mkdir(parents=True)
            flags = rng.random(N) < rate
            path.write_text(json.dumps({"clean_accuracy": 1.0, "samples": N, "attacks": {}, "outcomes": {
                "clean": bits(np.ones(N, dtype=bool)), "attacks": {"any": {"8.0": bits(flags)}}}}))
    roles = claims.Roles(supervised="supervised", csl="simclr", matched=None, oracle=[], mined=[],
                         adversarial={"simclr_oracle_elim": "simclr"}, protocol="slf", supcon="supcon", adversarial_protocol="aff")
    rows = claims.dataset_claims(tmp_path, g, "toy", roles)
    (c7,) = by_claim(rows, "C7")
    assert c7.comparison == "supcon - simclr" and c7.interval.estimate == pytest.approx(0.3, abs=0.05)
    (c5,) = by_claim(rows, "C5")
    assert c5.interval.estimate == pytest.approx(0.3, abs=0.05)  # the AFF outcomes; under SLF the two are equal
