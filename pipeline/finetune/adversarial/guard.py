"""Guard against catastrophic overfitting of fast FGSM training (Wong et al. 2020, section 5.3).

After every epoch the loop measures PGD accuracy on a held-out batch. A collapse is a drop
of more than `guard_drop` below the best epoch so far. Wong et al. stop at the first drop
and keep the weights from before it; here `stop` restores the best epoch's weights and
ends training, `rollback` restores the best epoch's weights and optimiser state and goes on
(the learning rate has decayed meanwhile, which often avoids a second collapse).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class CollapseGuard:
    """Keeps the best epoch's state; `update` says "continue", "stop" or "rollback"."""

    def __init__(self, drop: float, action: str) -> None:
        if action not in ("stop", "rollback", "off"):
            raise ValueError(f"guard action must be stop, rollback or off; got {action!r}")
        self.drop, self.action = drop, action
        self.best_accuracy, self.best_epoch = -1.0, -1
        self.best_state: dict[str, Any] | None = None
        self.events: list[dict[str, Any]] = []

    def update(self, epoch: int, robust_accuracy: float, model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
        """Record one epoch's held-out PGD accuracy; on a collapse return the configured action."""
        if self.action != "off" and robust_accuracy < self.best_accuracy - self.drop:
            self.events.append({"epoch": epoch, "robust_accuracy": robust_accuracy, "best_accuracy": self.best_accuracy,
                                "best_epoch": self.best_epoch, "action": self.action})
            return self.action
        if robust_accuracy >= self.best_accuracy:
            self.best_accuracy, self.best_epoch = robust_accuracy, epoch
            self.best_state = copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
        return "continue"

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load the best epoch's weights and optimiser state back."""
        assert self.best_state is not None, "restore() before any epoch was recorded"
        model.load_state_dict(self.best_state["model"])
        optimizer.load_state_dict(self.best_state["optimizer"])
