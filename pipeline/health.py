"""Checks that a trained model is usable before it is written: finite weights, better than chance.

A checkpoint or result counts as good only if every floating-point parameter and buffer is
finite (BatchNorm's running_var = inf with finite weights is as broken as a NaN weight).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from pipeline.errors import Diverged


def non_finite_entries(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or inf (params and buffers)."""
    return [name for name, t in state.items()
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def require_finite(module: torch.nn.Module, what: str) -> None:
    """Raise Diverged naming up to 5 non-finite parameters/buffers of `module`."""
    bad = non_finite_entries(module.state_dict())
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise Diverged(f"{what}: non-finite parameters or buffers ({shown})")


def chance_sd(classes: int, samples: int) -> tuple[float, float]:
    """(chance accuracy 1/classes, binomial SD of a chance-level accuracy over `samples`)."""
    p = 1.0 / classes
    return p, math.sqrt(p * (1 - p) / max(samples, 1))


def at_chance_despite_features(acc: float, knn_acc: float | None, classes: int, samples: int) -> str | None:
    """Why `acc` (clean test accuracy over `samples`) looks like a diverged classifier, else None.

    Rule: the accuracy is within 3 binomial SDs of chance (1/classes) while the encoder's kNN
    accuracy on the same test split is more than 10 SDs above chance. Features that good
    support a linear head far better than chance, so a chance-level head means the training
    diverged (too high a learning rate, say), not that the encoder is weak. With no kNN
    accuracy recorded, or a weak encoder, nothing is concluded.
    """
    p, sd = chance_sd(classes, samples)
    if knn_acc is None or knn_acc <= p + 10 * sd or acc > p + 3 * sd:
        return None
    return (f"clean test accuracy {acc:.4f} is at chance ({p:.4f} +- {3 * sd:.4f}, {samples} samples) although the "
            f"encoder's kNN accuracy is {knn_acc:.4f}")
