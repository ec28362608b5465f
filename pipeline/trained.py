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

from dataclasses import dataclass

import numpy as np

from pipeline import statistics as st

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
