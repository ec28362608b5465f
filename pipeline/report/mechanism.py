"""The report's mechanism section: sensitivity per method, dose-response of the chain, the miner grid.

The paper's chain: false negatives -> uniform features with small class margins -> a more
sensitive representation -> lower robust accuracy. This module reads, per method and seed, the
per-sample links the other stages measured on the same test samples

    uniformity, margin      analyse, the primary space (`representation.json`, test split)
    displacement            analyse, feature-space PGD / class-mean distance (`test.sensitivity`)
    radius, logit margin    evaluate, minimal PGD radius (1/255) and clean logit margin (`sensitivity`)
    robust accuracy         evaluate, per-sample worst case at the dataset's primary eps

and turns them into (1) a sensitivity table with 95 % intervals over seeds and samples
(`pipeline.report.statistics.mean_interval`), (2) dose-response curves along each manipulation of
`mechanism:` (temperature, false-negative dose) with the same intervals, (3) the chain statistic:
the within-seed OLS slope of robust accuracy on uniformity (and on margin) across the
manipulation's levels, one slope per seed, with a t interval over seeds (the seeds are the
replicates; the levels of one seed share its initialisation and augmentations), and (4) the
simulated-miner grid: the robust-accuracy effect of a miner of known (recall, precision) against
the base, with the real miners placed by their measured in-batch recall and precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.budget import eps_text
from pipeline.grid import Grid
from pipeline.io import read_sealed
from pipeline.report import claims
from pipeline.report import statistics as st
from pipeline.report.outcomes import WORST_CASE, Outcomes, bits_array
from pipeline.report.tables import markdown_table

# metric -> (label, unit, where it is read, better direction for robustness: +1 larger is more robust)
METRICS: dict[str, tuple[str, str]] = {
    "robust": ("robust accuracy", "%"),
    "uniformity": ("uniformity (centred)", "log"),
    "margin": ("class margin (centred)", "cos"),
    "displacement": ("feature displacement (PGD)", "x class dist"),
    "random_displacement": ("feature displacement (random sign)", "x class dist"),
    "radius": ("minimal PGD radius", "1/255"),
    "logit_margin": ("logit margin", "logit"),
}


@dataclass
class MethodValues:
    """Per-sample values (S, n) of one method's metrics on its seeds (missing metrics absent)."""

    seeds: list[int]
    values: dict[str, np.ndarray]


def _stack(rows: list[list[float | None]]) -> np.ndarray:
    n = min(len(r) for r in rows)
    return np.array([[np.nan if v is None else v for v in r[:n]] for r in rows], dtype=np.float64)


def method_values(results: Path, dataset: str, method: str, seeds: list[int], outcomes: Outcomes,
                  representation: dict, eps_key: str | None) -> MethodValues:
    """Every metric of `method` on the seeds that have all of its files."""
    found: dict[str, list] = {k: [] for k in METRICS}
    kept = []
    for seed in seeds:
        rec = outcomes.record(method, seed)
        enc = representation.get(f"{method}:{seed}")
        if rec is None or enc is None or "outcomes" not in rec:
            continue
        kept.append(seed)
        test = enc["test"]
        found["uniformity"].append(test["per_sample"]["uniformity"])
        found["margin"].append(test["per_sample"]["margin"])
        sens = test.get("sensitivity") or {}
        if sens:
            found["displacement"].append(sens["per_sample"]["displacement"])
            found["random_displacement"].append(sens["per_sample"]["random_displacement"])
        radius = rec.get("sensitivity") or {}
        if radius:
            found["radius"].append(radius["per_sample"]["radius_255"])
            found["logit_margin"].append(radius["per_sample"]["logit_margin"])
        attacks = rec["outcomes"]["attacks"].get(WORST_CASE, {})
        if eps_key in attacks:
            found["robust"].append((bits_array(attacks[eps_key]) * 100.0).tolist())
    values = {k: _stack(v) for k, v in found.items() if v and len(v) == len(kept)}
    return MethodValues(kept, values)


def level_interval(values: np.ndarray) -> st.Interval:
    """Mean over seeds and samples with its 95 % interval (NaN samples, e.g. a class of one, left out per seed)."""
    finite = np.isfinite(values).all(axis=0)
    if finite.sum() < 2:
        return interval(float("nan"), float("nan"), float("nan"), values.shape[0])
    return st.mean_interval(values[:, finite])


def interval(estimate: float, low: float, high: float, n_seeds: int, se: float = float("nan"), df: float = float("nan")) -> st.Interval:
    """An Interval rebuilt from a table row (95 %, seeds as given)."""
    return st.Interval(estimate, low, high, 0.95, se, df, n_seeds, 0, n_seeds > 1)


def fmt(iv: st.Interval, digits: int) -> str:
    if not np.isfinite(iv.estimate):
        return "—"
    if iv.n_seeds < 2:
        return f"{iv.estimate:.{digits}f} (n=1)"
    return f"{iv.estimate:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


DIGITS = {"robust": 1, "uniformity": 3, "margin": 3, "displacement": 3, "random_displacement": 3, "radius": 2, "logit_margin": 2}


# ---- the sensitivity table --------------------------------------------------------------------
def sensitivity_rows(values: dict[str, MethodValues], dataset: str, base: str) -> list[dict]:
    """Per method and metric: level with interval, and the paired difference to `base` (same seeds and samples)."""
    rows = []
    for method, mv in values.items():
        for metric, v in mv.values.items():
            iv = level_interval(v)
            row = {"dataset": dataset, "method": method, "metric": metric, "estimate": iv.estimate, "low": iv.low,
                   "high": iv.high, "seeds": len(mv.seeds)}
            other = values.get(base)
            if method != base and other is not None and metric in other.values:
                common = [s for s in mv.seeds if s in other.seeds]
                if common:
                    a = v[[mv.seeds.index(s) for s in common]]
                    b = other.values[metric][[other.seeds.index(s) for s in common]]
                    n = min(a.shape[1], b.shape[1])
                    d = level_interval(a[:, :n] - b[:, :n])
                    row |= {"minus_base": d.estimate, "minus_base_low": d.low, "minus_base_high": d.high,
                            "minus_base_seeds": d.n_seeds}
            rows.append(row)
    return rows


def sensitivity_markdown(rows: list[dict], dataset: str, base: str) -> str:
    order = ["displacement", "random_displacement", "radius", "logit_margin", "robust"]
    present = [m for m in order if any(r["metric"] == m and r["dataset"] == dataset for r in rows)]
    if not present:
        return "No sensitivity measured (analyse.sensitivity_samples and evaluate.radius.max_samples are 0).\n"
    header = ["method"] + [f"{METRICS[m][0]} ({METRICS[m][1]})" for m in present]
    body = []
    for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == dataset):
        cells = [f"`{method}`"]
        for m in present:
            r = next((r for r in rows if r["dataset"] == dataset and r["method"] == method and r["metric"] == m), None)
            if r is None:
                cells.append("—")
                continue
            text = fmt(interval(r["estimate"], r["low"], r["high"], r["seeds"]), DIGITS[m])
            if "minus_base" in r and r["minus_base_seeds"] >= 2:
                d = DIGITS[m]
                text += f"; vs base {r['minus_base']:+.{d}f} [{r['minus_base_low']:+.{d}f}, {r['minus_base_high']:+.{d}f}]"
            cells.append(text)
        body.append(cells)
    return markdown_table(header, body)


# ---- dose-response and the chain statistic ----------------------------------------------------
def curve_rows(values: dict[str, MethodValues], dataset: str, manipulation: str, levels: list[list]) -> list[dict]:
    """One row per (level, metric): the level's mean with its interval."""
    rows = []
    for level, method in levels:
        mv = values.get(method)
        if mv is None:
            continue
        for metric, v in mv.values.items():
            iv = level_interval(v)
            rows.append({"dataset": dataset, "manipulation": manipulation, "level": level, "method": method, "metric": metric,
                         "estimate": iv.estimate, "low": iv.low, "high": iv.high, "seeds": len(mv.seeds)})
    return rows


def per_seed_means(values: dict[str, MethodValues], levels: list[list], metric: str) -> tuple[list[int], np.ndarray]:
    """Seeds every level ran, and the (S, L) per-seed means of `metric` at each level."""
    methods = [m for _, m in levels if m in values and metric in values[m].values]
    if not methods or len(methods) < len(levels):
        return [], np.empty((0, 0))
    seeds = sorted(set.intersection(*(set(values[m].seeds) for m in methods)))
    table = np.array([[np.nanmean(values[m].values[metric][values[m].seeds.index(s)]) for m in methods] for s in seeds])
    return seeds, table


def within_seed_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slope of y on x across the levels, per seed: rows of (S, L) arrays -> (S,). NaN where x does not vary."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    denom = (xc * xc).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (xc * yc).sum(axis=1) / denom, np.nan)


def slope_interval(slopes: np.ndarray) -> st.Interval:
    """Mean of the per-seed slopes with a 95 % t interval over seeds (df = S - 1)."""
    slopes = slopes[np.isfinite(slopes)]
    if len(slopes) == 0:
        return interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(slopes.mean())
    if len(slopes) < 2:
        return interval(mean, float("nan"), float("nan"), 1)
    se = float(slopes.std(ddof=1) / np.sqrt(len(slopes)))
    q = st.t_quantile(len(slopes) - 1)
    return interval(mean, mean - q * se, mean + q * se, len(slopes), se, len(slopes) - 1)


# (y metric, x metric or "level") -> the sign the paper's chain predicts. Along either lever, less
# false-negative pressure (a higher dose; a higher temperature, which weighs uniformity less) should make
# the features less uniform (higher L_unif), widen the margins, shrink the displacement and raise robust
# accuracy; and robust accuracy should rise with L_unif and margin and fall with displacement.
SLOPES: dict[tuple[str, str], int] = {
    ("uniformity", "level"): +1, ("margin", "level"): +1, ("displacement", "level"): -1, ("robust", "level"): +1,
    ("robust", "uniformity"): +1, ("robust", "margin"): +1, ("robust", "displacement"): -1,
}


def slope_rows(values: dict[str, MethodValues], dataset: str, manipulation: str, levels: list[list]) -> list[dict]:
    rows = []
    for (y_metric, x_metric), predicted in SLOPES.items():
        seeds, y = per_seed_means(values, levels, y_metric)
        if not seeds or len(levels) < 2:
            continue
        if x_metric == "level":
            x = np.tile(np.array([float(lv) for lv, _ in levels]), (len(seeds), 1))
        else:
            x_seeds, x = per_seed_means(values, levels, x_metric)
            if x_seeds != seeds:
                continue
        iv = slope_interval(within_seed_slopes(x, y))
        decided = iv.n_seeds >= st.MIN_SEEDS and np.isfinite(iv.low)
        rows.append({"dataset": dataset, "manipulation": manipulation, "y": y_metric, "x": x_metric, "estimate": iv.estimate,
                     "low": iv.low, "high": iv.high, "seeds": iv.n_seeds, "predicted_sign": predicted,
                     "verdict": st.verdict(iv, predicted) if decided else st.estimate_only(iv.n_seeds)})
    return rows


def slope_markdown(rows: list[dict], dataset: str) -> str:
    body = []
    for r in rows:
        if r["dataset"] != dataset:
            continue
        x = r["manipulation"] if r["x"] == "level" else METRICS[r["x"]][0]
        iv = interval(r["estimate"], r["low"], r["high"], r["seeds"])
        verdict = f"**{r['verdict']}**" if r["verdict"] in ("supported", "contradicted") else r["verdict"]
        body.append([r["manipulation"], METRICS[r["y"]][0], x, fmt(iv, 3), "> 0" if r["predicted_sign"] > 0 else "< 0",
                     verdict, f"{r['seeds']}"])
    if not body:
        return "No manipulation with >= 2 levels ran.\n"
    return markdown_table(["manipulation", "y", "per unit of", "slope [95% CI]", "chain predicts", "verdict (uncorrected)", "seeds"],
                          body)


# ---- the simulated-miner grid ------------------------------------------------------------------
def measured_quality(results: Path, dataset: str, method: str, seeds: list[int]) -> tuple[float, float] | None:
    """Mean in-batch (recall, precision) of a method's false-negative flags over its seeds' last epochs."""
    pairs = []
    for seed in seeds:
        path = results / "pretrain" / dataset / method / f"seed{seed}" / "metrics.json"
        if path.exists():
            history = read_sealed(path, "pretrain")["history"]
            last = history[-1] if history else {}
            if last.get("fn_recall") is not None and last.get("fn_precision") is not None:
                pairs.append((last["fn_recall"], last["fn_precision"]))
    return tuple(np.mean(pairs, axis=0).tolist()) if pairs else None  # type: ignore[return-value]


def miner_rows(results: Path, values: dict[str, MethodValues], dataset: str, grid: Grid) -> list[dict]:
    """Robust-accuracy effect (points, vs the base) of each simulated cell and each real miner."""
    base = grid.mechanism.get("base")
    cells = [(r, p, m, "simulated") for r, p, m in grid.mechanism.get("miner", [])]
    cells += [(None, None, m, "real") for m in grid.mined_methods]
    rows = []
    matched = grid.mechanism.get("compute_matched")
    for r, p, method, kind in cells:
        mv = values.get(method)
        iv = robust_difference(mv, values.get(base))
        if iv is None:
            continue
        quality = measured_quality(results, dataset, method, mv.seeds)
        row = {"dataset": dataset, "method": method, "kind": kind, "recall_set": r, "precision_set": p,
               "recall_measured": quality[0] if quality else None, "precision_measured": quality[1] if quality else None,
               "effect": iv.estimate, "low": iv.low, "high": iv.high, "seeds": iv.n_seeds}
        versus = robust_difference(mv, values.get(matched)) if matched and kind == "real" else None
        if versus is not None:  # against the base trained as long as the miner's warm-up plus its own training
            row |= {"effect_vs_compute_matched": versus.estimate, "low_vs_compute_matched": versus.low,
                    "high_vs_compute_matched": versus.high}
        rows.append(row)
    return rows


def robust_difference(a: MethodValues | None, b: MethodValues | None) -> st.Interval | None:
    """Robust accuracy of a minus b, paired by seed and sample, with its interval; None without common seeds."""
    if a is None or b is None or "robust" not in a.values or "robust" not in b.values:
        return None
    common = [s for s in a.seeds if s in b.seeds]
    if not common:
        return None
    x = a.values["robust"][[a.seeds.index(s) for s in common]]
    y = b.values["robust"][[b.seeds.index(s) for s in common]]
    n = min(x.shape[1], y.shape[1])
    return level_interval(x[:, :n] - y[:, :n])


def miner_markdown(rows: list[dict], dataset: str, base: str, matched: str | None = None) -> str:
    body = []
    for r in rows:
        if r["dataset"] != dataset:
            continue
        iv = interval(r["effect"], r["low"], r["high"], r["seeds"])
        measured = "—" if r["recall_measured"] is None else f"{r['recall_measured']:.2f} / {r['precision_measured']:.2f}"
        setting = "—" if r["recall_set"] is None else f"{r['recall_set']:g} / {r['precision_set']:g}"
        versus = "—"
        if "effect_vs_compute_matched" in r:
            versus = fmt(interval(r["effect_vs_compute_matched"], r["low_vs_compute_matched"], r["high_vs_compute_matched"],
                                  r["seeds"]), 1)
        body.append([f"`{r['method']}`", r["kind"], setting, measured, fmt(iv, 1), versus, str(r["seeds"])])
    if not body:
        return ""
    return markdown_table(["method", "miner", "recall / precision set", "measured in batch", f"robust acc. minus `{base}` (points)",
                           f"minus `{matched}` (same compute)" if matched else "minus a compute-matched base", "seeds"], body)


# ---- the section ----------------------------------------------------------------------------------
def dataset_values(results: Path, grid: Grid, dataset: str, protocol: str, primary_eps: float | None) -> dict[str, MethodValues]:
    path = results / "analyse" / dataset / "representation.json"
    representation = read_sealed(path, "analyse")["encoders"] if path.exists() else {}
    outcomes = Outcomes(results, grid, dataset, protocol)
    out = {}
    for method in grid.evaluated_methods():
        seeds = outcomes.seeds(method)
        if not seeds:
            continue
        keys = outcomes.eps_keys(method, seeds)
        key = claims.primary_key(keys, primary_eps) if keys else None
        mv = method_values(results, dataset, method, seeds, outcomes, representation, key)
        if mv.seeds:
            out[method] = mv
    return out


def section(results: Path, grid: Grid, dataset: str, protocol: str, primary_eps: float | None, csl: str) -> dict:
    """Every table of one dataset's mechanism section: {"values", "sensitivity", "curves", "slopes", "miners"}."""
    values = dataset_values(results, grid, dataset, protocol, primary_eps)
    base = grid.mechanism.get("base", csl)
    curves, slopes = [], []
    for manipulation in ("temperature", "dose"):
        levels = grid.mechanism.get(manipulation, [])
        curves += curve_rows(values, dataset, manipulation, levels)
        slopes += slope_rows(values, dataset, manipulation, levels)
    return {"values": values, "sensitivity": sensitivity_rows(values, dataset, base), "curves": curves, "slopes": slopes,
            "miners": miner_rows(results, values, dataset, grid) if grid.mechanism else [], "base": base,
            "compute_matched": grid.mechanism.get("compute_matched")}


def markdown(sec: dict, dataset: str, eps: float | None) -> str:
    at_eps = eps_text(eps) if eps is not None else "the largest eps"
    base = sec["base"]
    md = [f"Per method: each link of the chain on the same test samples, mean [95 % interval over seeds and samples]; "
          f"`vs base` is the paired difference to `{base}`. Displacement: how far a Linf perturbation moves the centred "
          "backbone features, in units of the mean distance between class means (PGD: the worst case; random sign: the "
          "typical case); radius: the smallest Linf eps at which PGD flips the classifier (bisection; capped at its "
          f"maximum); robust accuracy: worst case at {at_eps}.\n\n", sensitivity_markdown(sec["sensitivity"], dataset, base)]
    if sec["slopes"]:
        md.append("\nThe chain along each manipulation: the within-seed OLS slope across its levels (one slope per seed, then "
                  "a 95 % t interval over seeds; the seeds are the replicates). `per unit of` the manipulation is the total "
                  "effect of the lever; robust accuracy per unit of uniformity or margin is the slope of robustness on that "
                  "link across the levels, the mediation-style reading: it says whether the levels that moved the link also "
                  "moved robustness. `chain predicts` is the paper's sign: less false-negative pressure (a higher dose or "
                  "temperature) gives less uniform features (higher uniformity loss), wider margins, smaller displacement and "
                  "higher robust accuracy. Verdicts need >= 3 seeds and are not corrected for the table's several tests.\n\n"
                  + slope_markdown(sec["slopes"], dataset))
    if sec["miners"]:
        md.append("\nWhere the real miner sits: the robust-accuracy effect of a simulated miner of known recall and precision "
                  f"(the oracle mask thinned and diluted per anchor) against `{base}`, and of the real miners, placed by the "
                  "recall and precision of their flags measured in the batches of their last epoch. A mined method costs "
                  "its warm-up (a whole run of the base) plus its own training: the column after the effect compares it "
                  "with the base trained for as many epochs (`mechanism.compute_matched_method`), where the study runs one.\n\n"
                  + miner_markdown(sec["miners"], dataset, base, sec.get("compute_matched")))
    return "".join(md)
