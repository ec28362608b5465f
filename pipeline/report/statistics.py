"""Claims with intervals and verdicts: a t interval over seeds that also carries the test-sample variance.

Pure numpy/scipy (the report stage uses it without torch). See /work/shared/reference/statistics.md.

Inputs are per-sample values: for one method and one condition (attack, eps), an array
`x[seed_index, sample]` of shape (S, n), e.g. 0/1 correctness. Every method is evaluated on
the same n test samples (column i is the same sample for every method) and seed index k of
every method shares its seed number, so a claim's statistic can be taken seed by seed on
paired samples.

Why not a bootstrap: with S = 2-5 seeds a percentile bootstrap draws the seed level from only
S values (at S = 2 its seed part is ~0.71 |d0 - d1| wide where a t interval on 1 df needs
6.35 |d0 - d1|), and any shrinkage of that level estimated from S - 1 degrees of freedom is
often 0. In this study training randomness dominates (between-run sd of a claim 2-17
points), so the interval is built where that randomness is seen, the seeds:

    d_s   = the statistic on seed s (e.g. acc_A,s - acc_B,s over the shared n samples), s = 1..S
    est   = mean_s d_s                       (a ratio: ratio of the means, linearised below)
    a     = Var_s(d_s) / S                   the seed level; it already holds the per-(seed, sample)
                                             noise / n, because each d_s is one seed's full test set
    b     = var_item / n                     the test set's own sampling: a sample's effect shared by
                                             every seed (two-way components of the per-sample values)
    se    = sqrt(a + b)
    df    = (a + b)^2 / (a^2 / (S - 1) + b^2 / (n - 1))      Welch-Satterthwaite
    95 %  = est +- t_{df, 0.975} se;  p = 2 P(T_df > |est| / se)

When the seed part dominates, df -> S - 1 (a t interval over per-seed paired differences);
when the seeds agree, df grows towards n - 1 and the test-set part decides. A statistic that
is not a mean (conditional robustness, the share of a gap) is linearised (delta method) into
per-sample values whose seed means are its per-seed contributions. Coverage of this interval
in a regime where seed variance dominates (per-method seed sd 3-6 points, n = 140 or 540,
S = 3 or 5) is checked in tests/test_statistics.py (>= 0.93), as is the rate at which a
known-zero effect is called decisive (<= 7 %).

Verdicts: `holm_verdicts` applies Holm's step-down adjustment to the p-values of the claims
that can be decided, those resting on >= MIN_SEEDS seeds; a claim on fewer seeds gets no
verdict ("estimate only, n seeds") and is not counted in the family. Power (`required_size`):
from the variance components, the seeds x samples at which the interval at the claim's Holm
level would exclude zero for the observed effect, never beyond the dataset's test samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

MIN_SEEDS = 3  # fewest seeds a verdict may rest on: below it the seed variance is too poorly known
VERDICTS = ("supported", "contradicted", "inconclusive")


def estimate_only(n_seeds: int) -> str:
    """The verdict text of a claim on too few seeds to be decided."""
    return f"estimate only, {n_seeds} seed{'' if n_seeds == 1 else 's'}"


def seeds_note(n_seeds: int) -> str:
    """Why a claim on fewer than MIN_SEEDS seeds carries no verdict."""
    if n_seeds == 1:
        return ("one seed: the between-seed variance is unknown, so the interval covers the test samples only "
                f"(a lower bound on the uncertainty); no verdict below {MIN_SEEDS} seeds")
    return f"{n_seeds} seeds: the between-seed variance rests on {n_seeds - 1} degree(s) of freedom; no verdict below {MIN_SEEDS} seeds"


@dataclass(frozen=True)
class Interval:
    """A statistic with its two-sided t interval and what it rests on.

    se: standard error; df: Welch-Satterthwaite degrees of freedom (inf: normal); seed_sd: sd of
    the per-seed statistics (nan with one seed); seed_level: whether the seeds entered the
    variance (False with one seed, `note` then says so).
    """

    estimate: float
    low: float
    high: float
    level: float
    se: float
    df: float
    n_seeds: int
    n_samples: int
    seed_level: bool
    seed_sd: float = float("nan")
    note: str = ""

    def p_value(self) -> float:
        """Two-sided p-value of "the statistic is 0" from the t distribution on `df`."""
        if not (np.isfinite(self.estimate) and np.isfinite(self.se)):
            return 1.0
        if self.se == 0:
            return 0.0 if self.estimate != 0 else 1.0
        return float(2 * sps.t.sf(abs(self.estimate) / self.se, self.df))

    def decidable(self) -> bool:
        """Whether a verdict may rest on this interval (enough seeds)."""
        return self.n_seeds >= MIN_SEEDS

    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_dict(self) -> dict:
        """JSON-ready summary."""
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level, "se": self.se,
                "df": self.df, "n_seeds": self.n_seeds, "n_samples": self.n_samples, "seed_level": self.seed_level,
                "seed_sd": self.seed_sd, "note": self.note, "p_value": self.p_value()}


# ---- the interval -------------------------------------------------------------------------------
def _check(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 2:
        raise ValueError(f"per-sample values must be (seeds, samples) with at least 2 samples, got shape {v.shape}")
    return v


def t_quantile(df: float, level: float = 0.95) -> float:
    """Two-sided quantile of Student's t on `df` degrees of freedom (the normal one for df = inf)."""
    q = 1 - (1 - level) / 2
    return float(sps.norm.ppf(q) if not np.isfinite(df) else sps.t.ppf(q, df))


def welch_df(a: float, b: float, df_a: float, df_b: float) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of two variance terms a (on df_a) and b (on df_b)."""
    if a + b <= 0:
        return float("inf")
    denominator = (a * a / df_a if df_a > 0 else 0.0) + (b * b / df_b if df_b > 0 else 0.0)
    return float((a + b) ** 2 / denominator) if denominator > 0 else float("inf")


def seed_interval(per_seed: np.ndarray, values: np.ndarray, estimate: float | None = None, level: float = 0.95) -> Interval:
    """The t interval of a statistic from its per-seed values (S,) and per-sample values (S, n).

    `values` are the statistic's per-sample (linearised) contributions: their row means are the
    per-seed values up to a constant, and they give the test set's item variance. With one seed
    only the test-sample variance is known: the interval is a lower bound and says so.
    """
    v = _check(values)
    d = np.asarray(per_seed, dtype=np.float64).reshape(-1)
    s, n = v.shape
    if len(d) != s:
        raise ValueError(f"{len(d)} per-seed values for {s} seeds")
    est = float(d.mean()) if estimate is None else float(estimate)
    if not np.all(np.isfinite(d)) or not np.isfinite(est):
        nan = float("nan")
        return Interval(est, nan, nan, level, nan, nan, s, n, s > 1, nan, "undefined on these samples")
    if s == 1:
        a, b, df_a = 0.0, float(v.var(ddof=1)) / n, 0.0  # seed level unknown: the within-seed spread only
    else:
        vc = variance_components(v)
        a, b, df_a = float(d.var(ddof=1)) / s, vc.var_item / n, s - 1.0
    se = float(np.sqrt(a + b))
    df = welch_df(a, b, df_a, n - 1.0)
    half = t_quantile(df, level) * se
    seed_sd = float(d.std(ddof=1)) if s > 1 else float("nan")
    note = "" if s >= MIN_SEEDS else seeds_note(s)
    return Interval(est, est - half, est + half, level, se, df, s, n, s > 1, seed_sd, note)


def mean_interval(values: np.ndarray, level: float = 0.95) -> Interval:
    """Interval of the grand mean of (S, n) per-sample values (e.g. a per-sample paired difference)."""
    v = _check(values)
    return seed_interval(v.mean(1), v, level=level)


def accuracy_difference(correct_a: np.ndarray, correct_b: np.ndarray, level: float = 0.95) -> Interval:
    """Accuracy of A minus accuracy of B (fractions), from (S, n) per-sample correctness paired by seed and sample."""
    return mean_interval(paired_difference(correct_a, correct_b), level)


def paired_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(S, n) per-sample paired difference a - b (for 0/1 correctness, values in {-1, 0, 1})."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays must have the same (seeds, samples) shape, got {a.shape} and {b.shape}")
    return a - b


# ---- conditional robustness ---------------------------------------------------------------------
def _and(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=bool) & np.asarray(b, dtype=bool)


def conditional_robustness(clean: np.ndarray, robust: np.ndarray) -> float:
    """Among the samples correct when clean, the share still correct under attack: sum(robust & clean) / sum(clean)."""
    clean = np.asarray(clean, dtype=bool)
    return float((clean & np.asarray(robust, dtype=bool)).sum() / clean.sum())


def conditional_robustness_values(clean: np.ndarray, robust: np.ndarray) -> np.ndarray:
    """(S, n) linearised per-sample values of conditional robustness (delta method).

    v[s, i] = CR_s + (rc[s, i] - CR_s c[s, i]) / mean_i c[s, i], with c = clean and rc = robust &
    clean: each seed's row mean is its CR_s, and the sample-level spread is the ratio's.
    """
    c = np.asarray(clean, dtype=np.float64)
    rc = _and(robust, clean).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cr = rc.sum(1, keepdims=True) / c.sum(1, keepdims=True)
        return cr + (rc - cr * c) / c.mean(1, keepdims=True)


def conditional_robustness_difference(clean_a: np.ndarray, robust_a: np.ndarray, clean_b: np.ndarray, robust_b: np.ndarray,
                                      level: float = 0.95) -> Interval:
    """Conditional robustness of A minus that of B, each over its own clean-correct samples, per seed.

    All four arrays are (S, n) bool, `robust_*` the per-sample correctness under one attack and eps.
    """
    values = conditional_robustness_values(clean_a, robust_a) - conditional_robustness_values(clean_b, robust_b)
    return seed_interval(values.mean(1), values, level=level)


# ---- the share of a gap ---------------------------------------------------------------------------
def ratio_interval(numerator: np.ndarray, denominator: np.ndarray, level: float = 0.95) -> Interval:
    """Interval of mean(numerator) / mean(denominator) of (S, n) per-sample values, by the delta method.

    The linearised per-sample values (N - r D) / mean(D) have seed means that vary as the ratio
    does; their spread over seeds and samples gives the se (a ratio estimator, not a mean of
    per-seed ratios, which is unstable when one seed's denominator is near 0).
    """
    num, den = _check(numerator), _check(denominator)
    d_mean = den.mean()
    ratio = float(num.mean() / d_mean) if d_mean != 0 else float("nan")
    values = (num - ratio * den) / d_mean if d_mean != 0 else np.full(num.shape, np.nan)
    iv = seed_interval(values.mean(1), values, estimate=0.0, level=level)
    return Interval(ratio, ratio + iv.low, ratio + iv.high, level, iv.se, iv.df, iv.n_seeds, iv.n_samples, iv.seed_level,
                    iv.seed_sd, iv.note)


@dataclass(frozen=True)
class GapShare:
    """Share of the CSL-vs-supervised gap that a variant closes.

    `gap` is RA_sup - RA_csl; `share` is (RA_v - RA_csl) / (RA_sup - RA_csl), or None when the gap
    is not established (its interval contains 0, or it rests on too few seeds): the share is then
    undefined. `flags` lists a share outside [0, 1] (point estimate or interval).
    """

    gap: Interval
    share: Interval | None
    flags: tuple[str, ...]

    @property
    def defined(self) -> bool:
        return self.share is not None

    def as_dict(self) -> dict:
        return {"gap": self.gap.as_dict(), "share": None if self.share is None else self.share.as_dict(),
                "flags": list(self.flags), "text": self.text()}

    def text(self) -> str:
        """`62% [40%, 85%]`, or why the share is undefined."""
        if self.share is None:
            return f"undefined: the gap {self.gap.estimate:+.3f} [{self.gap.low:+.3f}, {self.gap.high:+.3f}] is not established"
        s = self.share
        return f"{100 * s.estimate:.0f}% [{100 * s.low:.0f}%, {100 * s.high:.0f}%]" + "".join(f" ({f})" for f in self.flags)


def gap_established(gap: Interval) -> bool:
    """A gap is established when it is decidable and its interval lies above 0."""
    return gap.decidable() and gap.low > 0


def gap_share(robust_variant: np.ndarray, robust_csl: np.ndarray, robust_sup: np.ndarray, level: float = 0.95) -> GapShare:
    """Share of the gap closed, (RA_v - RA_csl) / (RA_sup - RA_csl), from (S, n) per-sample robust correctness."""
    gap = accuracy_difference(robust_sup, robust_csl, level)
    if not gap_established(gap):
        return GapShare(gap, None, ())
    share = ratio_interval(paired_difference(robust_variant, robust_csl), paired_difference(robust_sup, robust_csl), level)
    return GapShare(gap, share, share_flags(share))


def share_flags(share: Interval) -> tuple[str, ...]:
    """A share outside [0, 1] is a finding to report, not a number to average."""
    if not 0 <= share.estimate <= 1:
        return (f"share {share.estimate:.2f} outside [0, 1]",)
    if share.low < 0 or share.high > 1:
        return (f"interval [{share.low:.2f}, {share.high:.2f}] extends outside [0, 1]",)
    return ()


# ---- verdicts -----------------------------------------------------------------------------------
def verdict(interval: Interval | tuple[float, float], direction: int) -> str:
    """supported / contradicted / inconclusive for a claim that the statistic is > 0 (direction +1) or < 0 (-1).

    Reads the interval as given (no multiplicity correction, no seed rule: see `holm_verdicts`).
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 (claims > 0) or -1 (claims < 0), got {direction!r}")
    low, high = (interval.low, interval.high) if isinstance(interval, Interval) else interval
    side = 1 if low > 0 else -1 if high < 0 else 0
    return "inconclusive" if side == 0 else "supported" if side == direction else "contradicted"


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (k,), in the input order, capped at 1."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p))))
    out = np.empty_like(p)
    out[order] = np.minimum(scaled, 1.0)
    return out


def holm_levels(p_values: Sequence[float], alpha: float = 0.05) -> np.ndarray:
    """The per-claim significance level Holm's procedure compares each raw p with: alpha / (k - rank)."""
    p = np.asarray(p_values, dtype=np.float64)
    ranks = np.empty(len(p), dtype=int)
    ranks[np.argsort(p, kind="stable")] = np.arange(len(p))
    return alpha / (len(p) - ranks)


def holm_verdicts(intervals: Sequence[Interval], directions: Sequence[int], alpha: float = 0.05) -> tuple[list[str], np.ndarray]:
    """Verdicts of a dataset's claims with Holm's correction: (verdicts, adjusted p-values (k,), NaN where not tested).

    Only claims on >= MIN_SEEDS seeds form the family; the others read "estimate only, n seeds".
    A tested claim is decided when its adjusted p is below `alpha`: supported when its estimate
    lies on the claimed side (`directions`: +1 or -1), contradicted otherwise.
    """
    if len(intervals) != len(directions):
        raise ValueError(f"{len(intervals)} intervals but {len(directions)} directions")
    tested = [k for k, iv in enumerate(intervals) if iv.decidable()]
    adjusted = np.full(len(intervals), np.nan)
    adjusted[tested] = holm([intervals[k].p_value() for k in tested]) if tested else []
    out = []
    for iv, direction, p in zip(intervals, directions, adjusted, strict=True):
        side = int(np.sign(iv.estimate)) if np.isfinite(iv.estimate) else 0
        if not iv.decidable():
            out.append(estimate_only(iv.n_seeds))
        else:
            out.append("inconclusive" if p >= alpha or side == 0 else "supported" if side == direction else "contradicted")
    return out, adjusted


# ---- variance components (the interval's and the power notes') ----------------------------------
@dataclass(frozen=True)
class VarianceComponents:
    """Variance components of per-sample values d[s, i] = mu + a_s + b_i + e_si (seeds crossed with samples).

    var_seed = Var(a) (between seeds), var_item = Var(b) (a test sample's effect, shared by
    every seed), var_sample = Var(e) (residual); in units of the values squared. With one
    seed, a and b cannot be told from e: var_seed is 0 (unknown), the whole within-seed
    variance is var_item, and `note` says so.
    """

    var_seed: float
    var_item: float
    var_sample: float
    n_seeds: int
    n_samples: int
    note: str = ""


def variance_components(values: np.ndarray) -> VarianceComponents:
    """Two-way ANOVA (no replication) moment estimates of the components of (S, n) per-sample values.

    Mean squares: MS_seed = n Var(row means), MS_item = S Var(column means), MS_resid from the
    two-way residuals; var_sample = MS_resid, var_seed = (MS_seed - MS_resid) / n and
    var_item = (MS_item - MS_resid) / S, clipped at 0.
    """
    d = _check(values)
    s, n = d.shape
    if s == 1:
        return VarianceComponents(0.0, float(d.var(ddof=1)), 0.0, 1, n,
                                  "one seed: the between-seed variance is unknown")
    rows, cols, grand = d.mean(1, keepdims=True), d.mean(0, keepdims=True), d.mean()
    ms_resid = float(((d - rows - cols + grand) ** 2).sum() / ((s - 1) * (n - 1)))
    ms_seed, ms_item = n * float(rows.var(ddof=1)), s * float(cols.var(ddof=1))
    return VarianceComponents(max(0.0, (ms_seed - ms_resid) / n), max(0.0, (ms_item - ms_resid) / s), ms_resid, s, n)
