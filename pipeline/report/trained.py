"""Is every encoder trained? Two checks the report makes before any claim is read.

1. Levelled off (`plateau`): over the last `fraction` of the epochs (default a fifth), the mean
   training loss fell by at most `tolerance` (default 10 %) of the whole run's fall (first epoch
   to the last window), and the kNN test accuracy, where monitored, rose by no more than its own
   measurement noise, max(2 points, one binomial standard error on the n test samples), from the
   last value before that window to the end. A run shorter than two windows cannot show it. A
   cosine schedule flattens the loss near its end by itself, so the kNN part guards against a
   representation that is still improving; the training loss of a supervised model keeps
   creeping down as it memorises, so the loss part allows a small residual fall.
2. Better than no training (`beats_random_init`): each pretrained method's clean accuracy under
   the claims protocol minus that of the randomly initialised encoder (same architecture, same
   head), paired by seed and test sample, with the claims' t interval: it must exclude zero.

An encoder that fails either check is flagged in the report, and every claim that uses it says so.
Pure numpy (the report stage runs without torch).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import ReportConfig
from pipeline.grid import Grid
from pipeline.io import read_json, read_sealed
from pipeline.report import statistics as st
from pipeline.report.outcomes import Outcomes, common_seeds, pair
from pipeline.report.tables import markdown_table

KNN_GAIN_MIN = 0.02  # the kNN rise (fraction) over the last window still called level, at least


def knn_tolerance(accuracy: float, samples: int | None) -> float:
    """The kNN rise still called level: max(2 points, one binomial se of the accuracy on `samples` test samples)."""
    if not samples:
        return KNN_GAIN_MIN
    return max(KNN_GAIN_MIN, float(np.sqrt(max(accuracy * (1 - accuracy), 0.0) / samples)))


@dataclass(frozen=True)
class Plateau:
    """The levelled-off check of one training run."""

    epochs: int
    levelled: bool
    loss_first: float
    loss_last: float  # mean over the last window
    last_drop_share: float  # the last window's loss fall as a share of the whole run's (nan: undefined)
    knn_gain: float  # kNN rise over the last window (nan: not monitored there)
    reason: str  # why not levelled ("" when levelled)


def window(epochs: int, fraction: float) -> int:
    """Epochs in the last window: a `fraction` of the run, at least one."""
    return max(1, round(fraction * epochs))


def plateau(history: list[dict], final_knn: float | None, fraction: float = 0.2, tolerance: float = 0.1,
            knn_samples: int | None = None) -> Plateau:
    """Levelled-off check of a pretraining history (one dict per epoch: loss, optional knn_acc); `knn_samples`: test split size."""
    losses = np.array([h["loss"] for h in history], dtype=np.float64)
    e, k = len(losses), window(len(losses), fraction)
    nan = float("nan")
    if e < 2 * k or e < 2:
        return Plateau(e, False, losses[0] if e else nan, losses[-1] if e else nan, nan, nan,
                       f"{e} epoch(s): too few to see a plateau (needs two windows of {k})")
    last, before = losses[-k:].mean(), losses[-2 * k:-k].mean()
    total = losses[0] - last
    share = (before - last) / total if total > 0 else nan
    gain = knn_gain(history, final_knn, e - k)
    reasons = []
    if not total > 0:
        reasons.append(f"the loss did not fall ({losses[0]:.4f} -> {last:.4f})")
    elif share > tolerance:
        reasons.append(f"the loss still fell {100 * share:.0f}% of its total fall in the last {k} epochs (limit {100 * tolerance:.0f}%)")
    limit = knn_tolerance(final_knn if final_knn is not None else 0.5, knn_samples)
    if np.isfinite(gain) and gain > limit:
        reasons.append(f"kNN accuracy still rose {100 * gain:.1f} points in the last {k} epochs (limit {100 * limit:.1f})")
    return Plateau(e, not reasons, float(losses[0]), float(last), float(share), float(gain), "; ".join(reasons))


def knn_gain(history: list[dict], final_knn: float | None, start_epoch: int) -> float:
    """Final kNN accuracy minus the last one measured at or before `start_epoch` (1-based epochs); nan if none."""
    earlier = [h["knn_acc"] for h in history if "knn_acc" in h and h["epoch"] <= start_epoch]
    end = final_knn if final_knn is not None else next((h["knn_acc"] for h in reversed(history) if "knn_acc" in h), None)
    if not earlier or end is None:
        return float("nan")
    return float(end - earlier[-1])


def beats_random_init(clean_method: np.ndarray, clean_random: np.ndarray) -> tuple[st.Interval, bool]:
    """Clean-accuracy difference method - random init ((S, n) correctness, paired); True when its interval is above 0."""
    iv = st.accuracy_difference(clean_method, clean_random)
    return iv, bool(iv.decidable() and iv.low > 0)


# ---- the report's training section ---------------------------------------------------------
def training_rows(results: Path, grid: Grid, cfg: ReportConfig) -> list[dict]:
    """Per dataset, method and seed: the levelled-off check and, per method, clean accuracy against random init."""
    rows = []
    for dataset in grid.datasets:
        outcomes = Outcomes(results, grid, dataset, cfg.claims_protocol)
        meta = results / "decode" / dataset / "meta.json"
        test_samples = read_json(meta)["test"]["shape"][0] if meta.exists() else None
        for method in grid.methods:
            if method == cfg.random_init_method:
                continue
            vs_random = None
            if cfg.random_init_method and (seeds := common_seeds(outcomes, method, cfg.random_init_method)):
                a, b = pair(outcomes.matrix(method, seeds, None, None), outcomes.matrix(cfg.random_init_method, seeds, None, None))
                vs_random = beats_random_init(a, b)
            for seed in grid.method_seeds[method]:
                path = results / "pretrain" / dataset / method / f"seed{seed}" / "metrics.json"
                if not path.exists():
                    continue
                m = read_sealed(path, "pretrain")
                p = plateau(m["history"], m.get("knn_acc"), cfg.plateau_fraction, cfg.plateau_tolerance, test_samples)
                row = {"dataset": dataset, "method": method, "seed": seed, "epochs": p.epochs, "loss_first": p.loss_first,
                       "loss_last": p.loss_last, "last_drop_share": p.last_drop_share, "knn_final": m.get("knn_acc"),
                       "knn_gain_last": p.knn_gain, "levelled": p.levelled, "why_not": p.reason}
                if vs_random is not None:
                    iv, beats = vs_random
                    row |= {"clean_minus_random": iv.estimate, "clean_minus_random_low": iv.low, "clean_minus_random_high": iv.high,
                            "random_init_seeds": iv.n_seeds, "beats_random_init": beats}
                rows.append(row)
    return rows


def untrained_methods(training: list[dict]) -> dict[tuple[str, str], str]:
    """(dataset, method) -> why its encoders fail the training checks (seeds not levelled off, not above random init)."""
    unlevelled: dict[tuple[str, str], list[int]] = defaultdict(list)
    below: dict[tuple[str, str], str] = {}
    for r in training:
        key = (r["dataset"], r["method"])
        if not r["levelled"]:
            unlevelled[key].append(r["seed"])
        if r.get("beats_random_init") is False:
            seeds = r.get("random_init_seeds", st.MIN_SEEDS)
            below[key] = "not above random init" if seeds >= st.MIN_SEEDS else f"not shown above random init ({seeds} seed(s))"
    out = {}
    for key in sorted(set(unlevelled) | set(below)):
        why = [f"not levelled off on seed{'s' if len(unlevelled[key]) > 1 else ''} {', '.join(map(str, unlevelled[key]))}"] \
            if unlevelled.get(key) else []
        out[key] = "; ".join(why + ([below[key]] if key in below else []))
    return out


def flag_untrained_claims(claim_rows: dict[str, list], failing: dict[tuple[str, str], str], grid: Grid, supervised: str) -> None:
    """Every claim that uses an encoder failing the training checks says so."""
    for dataset, rows_ in claim_rows.items():
        for row in rows_:
            for method in row.comparison.split(" - "):
                base = supervised if method == grid.matched_method else method
                if (dataset, base) in failing:
                    row.flags.append(f"{base} fails the training checks: {failing[(dataset, base)]}")


def above_text(row: dict) -> str:
    """yes / **no** / not decided on fewer than MIN_SEEDS seeds."""
    if row["beats_random_init"]:
        return "yes"
    seeds = row.get("random_init_seeds", st.MIN_SEEDS)
    return "**no**" if seeds >= st.MIN_SEEDS else f"**not decided** ({seeds} seed{'s' if seeds > 1 else ''})"


def training_markdown(training: list[dict], dataset: str) -> str:
    """The training checks of one dataset, one row per method (seeds pooled)."""
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in training:
        if r["dataset"] == dataset:
            by_method[r["method"]].append(r)
    body = []
    for method, rs in by_method.items():
        levelled = sum(r["levelled"] for r in rs)
        knn = [r["knn_final"] for r in rs if r["knn_final"] is not None]
        drop = [r["last_drop_share"] for r in rs if math.isfinite(r["last_drop_share"])]
        gain = [r["knn_gain_last"] for r in rs if math.isfinite(r["knn_gain_last"])]
        vs = rs[0]
        random = (f"{100 * vs['clean_minus_random']:+.1f} [{100 * vs['clean_minus_random_low']:+.1f}, "
                  f"{100 * vs['clean_minus_random_high']:+.1f}] {above_text(vs)}" if "clean_minus_random" in vs else "—")
        body.append([method, f"{rs[0]['epochs']}", f"{levelled}/{len(rs)}" + ("" if levelled == len(rs) else " **flagged**"),
                     f"{np.mean(drop) * 100:.1f}%" if drop else "—", f"{np.mean(gain) * 100:+.1f}" if gain else "—",
                     f"{np.mean(knn) * 100:.1f}" if knn else "—", random])
    return markdown_table(["method", "epochs", "levelled off (seeds)", "loss fall in the last window (share of total)",
                           "kNN change in the last window (points)", "kNN accuracy (%)",
                           "clean accuracy minus random init (points) [95% CI], above?"], body)
