"""What a training method needs besides (model, x, y): runtime, inner attack, BN mode, RNG, settings."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.config import AdversarialConfig
from pipeline.finetune.adversarial.inner import Attack
from pipeline.models.modes import module_mode
from pipeline.runtime import Runtime


@dataclass
class AdversarialContext:
    """Mutable on purpose: the dynamic adversary replaces `attack` during training."""

    rt: Runtime
    attack: Attack  # the current inner attack
    attack_train_mode: bool  # BatchNorm mode during the inner attack (config `attack_bn`)
    frozen: tuple[nn.Module, ...]  # parts that stay in eval mode (ALF's encoder)
    generator: torch.Generator | None
    cfg: AdversarialConfig

    def attack_mode(self, model: nn.Module) -> AbstractContextManager[None]:
        """Context for the inner attack; the outer step runs in train mode (frozen parts in eval)."""
        return module_mode(model, self.attack_train_mode, self.frozen)


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, AdversarialContext], torch.Tensor]  # (model, x, y, ctx) -> loss
