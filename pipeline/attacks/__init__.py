"""Attack registry: name -> `AttackEntry(fn, norm, implementation, ...)`.

Every `fn` is `(model, x, y, *, eps, **settings) -> x_adv` on inputs in [0, 1] with
normalisation inside the model; images (N,C,H,W) or clips (N,C,T,H,W). eps is in input
units for both threat models (the config's Linf budgets in 1/255 are converted by
`pipeline.config`). Keys equal the schema's `evaluate.attacks` properties. The registry's
order is the cascade order of the evaluate stage (cheap and white-box first, as in
AutoAttack). Optional keyword arguments the evaluate stage fills in when an attack has
them: `generator` (a seeded torch.Generator), `seed` (an int), `state_path` (a resumable
progress file) and `batch_size` (the attack batches itself and receives all its samples at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.attacks import apgd_ce as _apgd_ce
from pipeline.attacks import apgd_t as _apgd_t
from pipeline.attacks import autoattack as _autoattack
from pipeline.attacks import fab_t as _fab_t
from pipeline.attacks import square as _square
from pipeline.attacks.apgd_ce import apgd_ce
from pipeline.attacks.apgd_t import apgd_t
from pipeline.attacks.autoattack import autoattack
from pipeline.attacks.cw_l2 import cw_l2
from pipeline.attacks.fab_t import fab_t
from pipeline.attacks.fgsm import fgsm
from pipeline.attacks.pgd import pgd
from pipeline.attacks.pgd_l2 import pgd_l2
from pipeline.attacks.square import square


@dataclass(frozen=True)
class AttackEntry:
    """One evaluation attack and what the evaluate stage needs to know about it."""

    fn: Callable[..., torch.Tensor]  # (model, x, y, *, eps, **settings) -> x_adv
    norm: str  # threat model: "Linf" or "L2" (names of L2 attacks end in "_l2")
    implementation: str  # who wrote the attack (recorded next to its numbers)
    black_box: bool = False  # breaking samples the white-box attacks could not is a gradient-masking sign
    standalone: bool = False  # a cascade itself: always runs on every clean-correct sample, so its number is AutoAttack's
    describe: Callable[..., dict] | None = None  # (classes, **settings) -> the effective library parameters


BY_HAND = "pipeline (by hand)"
ATTACKS: dict[str, AttackEntry] = {
    "fgsm": AttackEntry(fgsm, "Linf", BY_HAND),
    "pgd": AttackEntry(pgd, "Linf", BY_HAND),
    "apgd_ce": AttackEntry(apgd_ce, "Linf", _apgd_ce.IMPLEMENTATION),
    "apgd_t": AttackEntry(apgd_t, "Linf", _apgd_t.IMPLEMENTATION),
    "fab_t": AttackEntry(fab_t, "Linf", _fab_t.IMPLEMENTATION),
    "square": AttackEntry(square, "Linf", _square.IMPLEMENTATION, black_box=True),
    "autoattack": AttackEntry(autoattack, "Linf", _autoattack.IMPLEMENTATION, standalone=True, describe=_autoattack.parameters),
    "pgd_l2": AttackEntry(pgd_l2, "L2", BY_HAND),
    "cw_l2": AttackEntry(cw_l2, "L2", BY_HAND),
}

__all__ = ["ATTACKS", "AttackEntry", "apgd_ce", "apgd_t", "autoattack", "cw_l2", "fab_t", "fgsm", "pgd", "pgd_l2", "square"]
