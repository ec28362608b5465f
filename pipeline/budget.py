"""Linf budgets: one type (`Eps`), one result key (`eps_key`) and one display (`eps_text`).

The config writes a Linf budget in units of 1/255 (`eps: 8`); `pipeline.config.from_dict`
turns it into `Eps(8)` once, a float in [0, 1] pixel units that keeps the written 1/255
value as its label. Stage code computes in pixel units; results are keyed by the label, and
every table and plot shows it as "8/255". L2 budgets are plain floats in input units.
"""

from __future__ import annotations


class Eps(float):
    """A Linf budget in [0, 1] pixel units that remembers the value the config wrote in units of 1/255.

    The config says `eps: 8`; `from_dict` turns it into Eps(8) == 8 / 255 once, so stage
    code computes in pixel units only. `per_255` (8.0) labels results (robustness.json keys,
    report columns): 8 / 255 * 255 need not give back 8 exactly. Arithmetic gives plain floats.
    """

    per_255: float

    def __new__(cls, per_255: float) -> Eps:
        self = super().__new__(cls, per_255 / 255)
        self.per_255 = float(per_255)
        return self

    def __getnewargs__(self) -> tuple[float]:  # copy/deepcopy/pickle rebuild from the label, not the pixels
        return (self.per_255,)


def per_255(eps: float) -> float:
    """The 1/255 label of a Linf budget: Eps.per_255, or a plain float's value as given (L2, tests)."""
    return eps.per_255 if isinstance(eps, Eps) else eps


def eps_key(eps: float) -> str:
    """The one key format of a budget in results (robustness.json, partial units): its 1/255 label (Linf) or its
    value (L2) as a float's text, "8.0" for 8/255, "0.5" for L2 0.5."""
    return str(float(per_255(eps)))


def eps_text(eps: float | str) -> str:
    """The one display format of a Linf budget (a 1/255 label or a result key): "8/255"."""
    return f"{float(eps):g}/255"


PER_255 = {"unit": "1/255"}  # field metadata: the config gives this budget (or list) in 1/255; from_dict makes Eps
