"""Power: the claims interval's expected half-width from the variance components of per-sample values
(`statistics.variance_components`), and the (seeds x samples) a decisive verdict would need."""

from __future__ import annotations

import numpy as np

from pipeline.report.statistics import MIN_SEEDS, VarianceComponents, t_quantile, variance_components, welch_df


def half_width(seeds: int, samples: int, vc: VarianceComponents, level: float = 0.95) -> float:
    """Expected half-width of `seed_interval` at s seeds and n samples, from variance components.

    a = (var_seed + var_sample / n) / s (the per-seed statistic's variance over s seeds),
    b = var_item / n, t on the Welch-Satterthwaite df.
    """
    a = (vc.var_seed + vc.var_sample / samples) / seeds
    b = vc.var_item / samples
    return t_quantile(welch_df(a, b, seeds - 1.0, samples - 1.0), level) * float(np.sqrt(a + b))


def required_size(effect: float, vc: VarianceComponents, *, alpha: float = 0.05, max_samples: int, max_seeds: int = 20,
                  min_seeds: int = MIN_SEEDS) -> list[tuple[int, int]]:
    """For each s in min_seeds..max_seeds, the smallest n <= max_samples at which the interval excludes 0.

    The interval is at level 1 - alpha (pass the claim's Holm level); `max_samples` is the
    dataset's test split: a size beyond it is not reachable and not listed. Returns
    [(seeds, samples), ...], only the s for which such an n exists.
    """
    if not np.isfinite(effect) or effect == 0:
        return []
    out = []
    for s in range(min_seeds, max_seeds + 1):
        if half_width(s, max_samples, vc, 1 - alpha) >= abs(effect):
            continue
        low, high = 2, max_samples  # half-width decreases in n: bisect for the smallest n that decides
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if half_width(s, mid, vc, 1 - alpha) < abs(effect) else (mid + 1, high)
        out.append((s, low))
    return out


def needed_size(values: np.ndarray, effect: float, alpha: float, max_samples: int) -> str:
    """The (seeds x samples) at which the claim's Holm level would decide the observed effect.

    From the observed variance components (the between-seed one measured, with one seed unknown),
    never beyond the dataset's `max_samples` test samples.
    """
    if values.shape[1] < 2 or not np.isfinite(effect) or abs(effect) < 1e-12:
        return "no effect observed: no finite size decides it"
    vc = variance_components(values)
    if vc.n_seeds < 2:
        return "unknown: the between-seed variance needs >= 2 seeds"
    sizes = required_size(effect, vc, alpha=alpha, max_samples=max_samples)
    level = f"at its Holm level {alpha:.3g}"
    if not sizes:
        return f"not reachable with <= 20 seeds and the {max_samples:,} test samples, {level}"
    shown = [f"{s} seeds x {n:,} samples" for s, n in sizes[:3]]
    return "; ".join(shown) + f" ({level}; measured between-seed sd {np.sqrt(vc.var_seed) * 100:.1f} points per sample mean)"
