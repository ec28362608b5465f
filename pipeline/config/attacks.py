"""Typed settings of the evaluation attacks, `evaluate.attacks.<name>`: one frozen dataclass per attack.

`config.from_dict(EvaluateConfig, ...)` builds them once (`parse_attacks`); stage code reads
attributes, never dict keys with fallbacks. Like the rest of `pipeline.config` they have no
defaults: the schema is the one home of every default, and `tests/test_config.py` checks
that each class's fields are its schema entry's properties.

Two kinds of field. `max_samples` and `epsilons` are the evaluate stage's (which samples,
which budgets); the rest are the attack function's keyword arguments, handed over by
`arguments(eps)`. That method is also the one place where a relative step (`step_size`,
a fraction of eps, as the config writes it so that one setting serves every budget)
becomes the absolute step the attack takes at that eps.

Kept out of `pipeline.attacks` on purpose: importing that package loads pyautoattack and
torch, and every stage imports the config (its code hash would widen to every attack).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.budget import per_255

STAGE_FIELDS = frozenset({"max_samples", "epsilons"})  # consumed by the evaluate stage, not passed to the attack


@dataclass(frozen=True)
class AttackSettings:
    max_samples: int  # attack the first N test samples only

    def arguments(self, eps: float) -> dict[str, Any]:
        """Keyword arguments of the attack function at budget `eps` (input units)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in STAGE_FIELDS}

    def runs_at(self, epsilons: list[float]) -> list[float]:
        """The budgets of its norm's `epsilons` the attack runs at: those its own `epsilons` names by 1/255
        label (L2: by value), to save time on expensive attacks; all of them where it names none."""
        own = getattr(self, "epsilons", [])  # the attacks without the field run at every budget
        return [e for e in epsilons if per_255(e) in own] if own else list(epsilons)


@dataclass(frozen=True)
class FgsmSettings(AttackSettings):
    pass


@dataclass(frozen=True)
class ProjectedStepsSettings(AttackSettings):
    """PGD's settings in either norm."""

    steps: int
    step_size: float  # fraction of eps (0.25 = eps/4); arguments() passes the absolute step
    random_start: bool
    restarts: int

    def arguments(self, eps: float) -> dict[str, Any]:
        return {**super().arguments(eps), "step_size": self.step_size * eps}


@dataclass(frozen=True)
class PgdSettings(ProjectedStepsSettings):
    epsilons: list[float]


@dataclass(frozen=True)
class ApgdCeSettings(AttackSettings):
    steps: int
    restarts: int
    rho: float
    epsilons: list[float]


@dataclass(frozen=True)
class ApgdTSettings(AttackSettings):
    steps: int
    restarts: int
    n_target_classes: int
    rho: float
    epsilons: list[float]


@dataclass(frozen=True)
class FabTSettings(AttackSettings):
    steps: int
    restarts: int
    n_target_classes: int
    epsilons: list[float]


@dataclass(frozen=True)
class SquareSettings(AttackSettings):
    queries: int
    p_init: float
    restarts: int
    epsilons: list[float]


@dataclass(frozen=True)
class AutoAttackSettings(AttackSettings):
    version: str
    n_target_classes: int
    steps: int
    square_queries: int
    epsilons: list[float]


@dataclass(frozen=True)
class PgdL2Settings(ProjectedStepsSettings):
    pass


@dataclass(frozen=True)
class CwL2Settings(AttackSettings):
    c: float
    kappa: float
    steps: int
    lr: float


# Keys equal `pipeline.attacks.ATTACKS` and the schema's `evaluate.attacks` properties (tests check both).
ATTACK_SETTINGS: dict[str, type[AttackSettings]] = {
    "fgsm": FgsmSettings, "pgd": PgdSettings, "apgd_ce": ApgdCeSettings, "apgd_t": ApgdTSettings, "fab_t": FabTSettings,
    "square": SquareSettings, "autoattack": AutoAttackSettings, "pgd_l2": PgdL2Settings, "cw_l2": CwL2Settings,
}
