"""Claims statistics: coverage where seed variance dominates, a known zero, ratios, Holm, the seed rule, power.

Monte-Carlo tolerance: with R = 1000 repetitions and true coverage 0.95 the observed share has
standard error sqrt(0.95 * 0.05 / 1000) = 0.007; the accepted bound 0.93 is 2.9 se below the
nominal level, and the 7 % bound on decisive known-zero verdicts is 2.9 se above 5 %. Measured
(these streams): coverage 0.938-0.958, decisive at zero 0.051-0.065 over the 8 regimes. The
random streams are fixed, so the checks are deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.report import power
from pipeline.report import statistics as st

R = 1000  # repetitions of the coverage checks


def synthetic(rng: np.random.Generator, seeds: int, n: int, effect: float, method_seed_sd: float, item_sd: float = 0.1):
    """Paired (seeds, n) correctness of methods A and B with E[acc_A - acc_B] = effect over seeds and samples.

    Per-sample difficulty shared by both methods and all seeds (the pairing), a per-sample
    difference of the two methods shared by the seeds (sd `item_sd`), a seed shift of each
    method of sd `method_seed_sd` (training randomness: what a rerun with other seeds changes),
    and Bernoulli noise per (seed, sample). Every shift has mean 0, so the truth is `effect`.
    """
    base, item = rng.uniform(0.25, 0.75, n), rng.normal(0, item_sd, n)
    item -= item.mean() - rng.normal(0, item_sd / np.sqrt(n))  # a test set is a sample of items: its mean effect varies
    da, db = rng.normal(0, method_seed_sd, seeds), rng.normal(0, method_seed_sd, seeds)
    pa = np.clip(base + item / 2 + da[:, None] + effect / 2, 0, 1)
    pb = np.clip(base - item / 2 + db[:, None] - effect / 2, 0, 1)
    return rng.random((seeds, n)) < pa, rng.random((seeds, n)) < pb


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("seed_sd", [0.03, 0.06])
@pytest.mark.parametrize("n", [140, 540])
def test_coverage_and_false_decisions_where_seed_variance_dominates(seeds, seed_sd, n):
    rng = np.random.default_rng(1)
    covered = decisive_at_zero = 0
    for _ in range(R):
        iv = st.accuracy_difference(*synthetic(rng, seeds, n, 0.05, seed_sd))
        covered += iv.low <= 0.05 <= iv.high
        zero = st.accuracy_difference(*synthetic(rng, seeds, n, 0.0, seed_sd))
        decisive_at_zero += st.verdict(zero, +1) != "inconclusive"
    assert covered / R >= 0.93
    assert decisive_at_zero / R <= 0.07


def test_a_sample_only_interval_would_under_cover_in_that_regime():
    """The reason for the seed level: the test samples' spread alone is far too narrow when seeds vary."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(R):
        a, b = synthetic(rng, 3, 540, 0.05, 0.06)
        d = st.paired_difference(a, b)
        half = 1.96 * d.std(ddof=1) / np.sqrt(d.size)
        covered += abs(d.mean() - 0.05) <= half
    assert covered / R < 0.6


def test_interval_matches_a_hand_computed_t_interval_when_seeds_dominate():
    d = np.array([[1.0, 0.0] * 50, [0.0, 0.0] * 50, [1.0, 1.0] * 50])  # per-seed means 0.5, 0, 1; no item effect
    iv = st.mean_interval(d)
    per_seed = d.mean(1)
    se = per_seed.std(ddof=1) / np.sqrt(3)
    assert iv.estimate == pytest.approx(0.5) and iv.se == pytest.approx(se, rel=1e-9)
    assert iv.df == pytest.approx(2.0, rel=1e-6)  # no item variance: all the df come from the seeds
    assert iv.high - iv.estimate == pytest.approx(4.302652729911275 * se, rel=1e-6)  # t_{2, 0.975}
    assert iv.seed_sd == pytest.approx(0.5)


def test_the_test_set_variance_enters_when_the_seeds_agree():
    rng = np.random.default_rng(3)
    row = (rng.random(400) < 0.6).astype(float) - (rng.random(400) < 0.4).astype(float)
    d = np.stack([row, row, row])  # three identical seeds: the seed level adds nothing, the item level everything
    iv = st.mean_interval(d)
    assert iv.se == pytest.approx(row.std(ddof=1) / np.sqrt(400), rel=1e-6)
    assert iv.df > 300


def test_fewer_than_three_seeds_give_no_verdict_and_say_why():
    rng = np.random.default_rng(4)
    for seeds in (1, 2):
        a, b = synthetic(rng, seeds, 300, 0.3, 0.0)
        iv = st.accuracy_difference(a, b)
        assert not iv.decidable() and iv.note
        verdicts, adjusted = st.holm_verdicts([iv], [+1])
        assert verdicts == [st.estimate_only(seeds)] and np.isnan(adjusted[0])
    assert not st.accuracy_difference(*synthetic(rng, 1, 300, 0.3, 0.0)).seed_level


def test_conditional_robustness_difference_per_seed():
    clean_a = np.array([[1, 1, 1, 1, 0, 0]] * 3, dtype=bool)
    robust_a = np.array([[1, 1, 0, 0, 0, 1]] * 3, dtype=bool)  # CR_a = 2/4 (a robust-but-wrong-clean sample does not count)
    clean_b = np.array([[1, 1, 0, 0, 0, 0]] * 3, dtype=bool)
    robust_b = np.array([[1, 0, 0, 0, 0, 0]] * 3, dtype=bool)  # CR_b = 1/2
    iv = st.conditional_robustness_difference(clean_a, robust_a, clean_b, robust_b)
    assert iv.estimate == pytest.approx(0.0)
    assert st.conditional_robustness(clean_a[0], robust_a[0]) == pytest.approx(0.5)


def test_ratio_interval_agrees_with_a_ratio_of_means_and_covers():
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(300):
        den = rng.normal(0.2, 0.3, (5, 500)) + rng.normal(0, 0.03, (5, 1))  # seed shifts of the gap
        num = 0.5 * den + rng.normal(0, 0.05, (5, 500)) + rng.normal(0, 0.02, (5, 1))
        iv = st.ratio_interval(num, den)
        covered += iv.low <= 0.5 <= iv.high
    assert iv.estimate == pytest.approx(num.mean() / den.mean())
    assert covered / 300 >= 0.9


def test_share_of_the_gap_is_undefined_unless_the_gap_is_established():
    rng = np.random.default_rng(6)
    sup, csl = synthetic(rng, 5, 500, 0.0, 0.01)
    share = st.gap_share(csl, csl, sup)
    assert share.share is None and "not established" in share.text()
    sup, csl = synthetic(rng, 5, 500, 0.3, 0.01)
    variant = np.where(rng.random(csl.shape) < 0.5, sup, csl)  # closes about half of the gap
    share = st.gap_share(variant, csl, sup)
    assert share.defined and 0.3 < share.share.estimate < 0.7 and share.share.low < share.share.estimate < share.share.high
    two_seeds = st.gap_share(variant[:2], csl[:2], sup[:2])
    assert two_seeds.share is None  # a gap on 2 seeds is not established, whatever its interval


def test_verdict_reads_the_interval_and_the_claimed_direction():
    iv = lambda lo, hi: (lo, hi)  # noqa: E731
    assert st.verdict(iv(0.1, 0.2), +1) == "supported" and st.verdict(iv(0.1, 0.2), -1) == "contradicted"
    assert st.verdict(iv(-0.1, 0.2), +1) == "inconclusive"
    with pytest.raises(ValueError, match="direction"):
        st.verdict(iv(0, 1), 0)


def test_holm_matches_a_hand_computation():
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted 0.01 (x4 = 0.04), 0.03 (x3 = 0.09), 0.04 (x2 = 0.08 -> running max 0.09), 0.2 (x1, max 0.2)
    assert st.holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert st.holm_levels(p) == pytest.approx([0.0125, 0.025, 0.01666666, 0.05])


def test_holm_verdicts_use_t_p_values_and_the_sign():
    def interval(est, se, seeds=5):
        return st.Interval(est, est - 2 * se, est + 2 * se, 0.95, se, 4.0, seeds, 100, True)
    ivs = [interval(0.2, 0.02), interval(-0.2, 0.02), interval(0.01, 0.02), interval(0.3, 0.01, seeds=2)]
    verdicts, adjusted = st.holm_verdicts(ivs, [+1, +1, +1, +1])
    assert verdicts == ["supported", "contradicted", "inconclusive", "estimate only, 2 seeds"]
    assert np.isnan(adjusted[3]) and adjusted[2] == pytest.approx(min(1.0, ivs[2].p_value()))  # 3 tested claims
    assert ivs[0].p_value() == pytest.approx(2 * 0.000290, rel=0.05)  # t = 10 on 4 df


def test_variance_components_recover_known_components():
    rng = np.random.default_rng(8)
    s, n = 40, 2000
    d = rng.normal(0, 0.3, (s, 1)) + rng.normal(0, 0.2, (1, n)) + rng.normal(0, 0.5, (s, n))
    vc = st.variance_components(d)
    assert vc.var_seed == pytest.approx(0.09, rel=0.4) and vc.var_item == pytest.approx(0.04, rel=0.1)
    assert vc.var_sample == pytest.approx(0.25, rel=0.02)


def test_half_width_predicts_the_interval_and_required_size_decides():
    rng = np.random.default_rng(9)
    a, b = synthetic(rng, 5, 540, 0.05, 0.03)
    d = st.paired_difference(a, b)
    vc = st.variance_components(d)
    assert power.half_width(5, 540, vc) == pytest.approx(st.mean_interval(d).half_width(), rel=0.35)
    sizes = power.required_size(0.05, vc, alpha=0.01, max_samples=540)
    for s_, n_ in sizes:
        assert power.half_width(s_, n_, vc, 0.99) < 0.05 <= power.half_width(s_, n_ - 1, vc, 0.99) or n_ == 2
        assert n_ <= 540 and s_ >= st.MIN_SEEDS
    assert power.required_size(0.0, vc, max_samples=540) == []
    huge = st.VarianceComponents(1.0, 0.0, 0.0, 5, 540)  # a seed variance no test set can beat within 20 seeds
    assert power.required_size(0.05, huge, max_samples=540) == []


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="seeds, samples"):
        st.mean_interval(np.zeros(5))
    with pytest.raises(ValueError, match="same"):
        st.paired_difference(np.zeros((2, 3)), np.zeros((2, 4)))
