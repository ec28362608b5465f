"""Adversarial fine-tuning with a dynamically regulated adversary (after Hou et al., IJCNN 2022,
arXiv 2204.13232: "Adversarial Fine-tune with Dynamically Regulated Adversary").

The paper starts from a model trained on clean data and fine-tunes it against a
"training-friendly" attack whose strength is regulated so that clean accuracy is
protected; its schedule is not public. Ours (every constant is a config key, `dynamic:`):

- start: the clean SLF head on the frozen pretrained encoder (ALF keeps the encoder frozen,
  AFF then fine-tunes it too); its clean accuracy on the held-out batch is the reference;
- strength r in [0, 1] sets the attack: eps r and ceil(r steps) PGD steps, so a weak
  adversary is also a cheap one; r starts at `start`;
- every `check_every` optimiser steps: drop = reference - held-out clean accuracy;
  drop <= `tolerance` -> r = min(1, r + `increase`) (clean accuracy is safe: push harder);
  otherwise r = r * `backoff` (back off to let clean accuracy recover);
- loss (1 - `adv_weight`) CE(x) + `adv_weight` CE(x') keeps a clean term in every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import DynamicConfig
from pipeline.finetune.adversarial.context import AdversarialContext
from pipeline.finetune.adversarial.inner import Attack, perturb


class DynamicAdversary:
    """The strength schedule; `attack` is the full attack scaled by the current strength."""

    def __init__(self, settings: DynamicConfig, full: Attack, reference_accuracy: float) -> None:
        self.settings, self.full, self.reference = settings, full, reference_accuracy
        self.strength = settings.start
        self.history: list[dict[str, float]] = []

    @property
    def attack(self) -> Attack:
        return self.full.scaled(self.strength, self.full.steps)

    def update(self, step: int, clean_accuracy: float) -> Attack:
        """Move the strength after a check of held-out clean accuracy; return the new attack."""
        s = self.settings
        protected = self.reference - clean_accuracy <= s.tolerance
        self.strength = min(1.0, self.strength + s.increase) if protected else self.strength * s.backoff
        self.history.append({"step": step, "clean_accuracy": clean_accuracy, "strength": self.strength,
                             "eps_255": 255 * self.attack.eps, "steps": self.attack.steps})
        return self.attack


def dynamic(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AdversarialContext) -> torch.Tensor:
    """(1 - w) CE(x) + w CE(x_adv) with the current (regulated) attack; x (N,C,...) in [0, 1], y (N,)."""
    w = ctx.cfg.dynamic.adv_weight
    with ctx.attack_mode(model):
        x_adv = perturb(lambda xa: F.cross_entropy(model(xa).float(), y), x, ctx.attack, ctx.rt, ctx.generator)
    with ctx.rt.autocast():
        return (1 - w) * F.cross_entropy(model(x).float(), y) + w * F.cross_entropy(model(x_adv).float(), y)
