"""Adversarial training methods for the ALF and AFF protocols: name -> `TrainingEntry(fn, attack, ...)`.

Each `fn` is a loss `(model, x, y, ctx) -> scalar` that runs its own inner attack; `attack`
builds the full-strength inner attack it uses from the protocol's config. Keys equal the
schema's `adversarial.training` enum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.config import AdversarialConfig
from pipeline.finetune.adversarial.context import AdversarialContext, LossFn
from pipeline.finetune.adversarial.dynamic import DynamicAdversary, dynamic
from pipeline.finetune.adversarial.fgsm_rs import fast_attack
from pipeline.finetune.adversarial.guard import CollapseGuard
from pipeline.finetune.adversarial.inner import Attack, perturb
from pipeline.finetune.adversarial.pgd_at import adversarial_ce, pgd_attack
from pipeline.finetune.adversarial.spat import spat, spat_consistency, spat_logits
from pipeline.finetune.adversarial.trades import trades, trades_attack, trades_kl
from pipeline.models.modes import module_mode


@dataclass(frozen=True)
class TrainingEntry:
    """One adversarial training method and what the finetune stage needs to know about it."""

    fn: LossFn  # (model, x, y, ctx) -> scalar loss, inner attack included
    attack: Callable[[AdversarialConfig], Attack]  # the inner attack at full strength
    cosine_head: bool = False  # trains a CosineClassifier (SPAT)
    guarded: bool = False  # watched by the catastrophic-overfitting guard (fast FGSM)
    regulated: bool = False  # starts from the clean SLF head; the dynamic adversary sets the attack


TRAINING: dict[str, TrainingEntry] = {
    "pgd_at": TrainingEntry(adversarial_ce, pgd_attack),
    "trades": TrainingEntry(trades, trades_attack),
    "fgsm_rs": TrainingEntry(adversarial_ce, fast_attack, guarded=True),
    "spat": TrainingEntry(spat, trades_attack, cosine_head=True),  # type: ignore[arg-type]  # needs a CosineClassifier
    "dynamic": TrainingEntry(dynamic, pgd_attack, regulated=True),
}

__all__ = [
    "TRAINING", "Attack", "CollapseGuard", "DynamicAdversary", "AdversarialContext", "TrainingEntry", "module_mode", "perturb",
    "spat_consistency", "spat_logits", "trades_kl",
]
