"""Train/eval mode of a model for one block of code: the one BatchNorm-mode helper of every stage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def module_mode(model: nn.Module, train: bool, frozen: tuple[nn.Module, ...] = ()) -> Iterator[None]:
    """Put `model` in train or eval mode for a block; `frozen` parts stay in eval mode throughout.

    A frozen encoder must never see train mode: its BatchNorm running statistics would move.
    """
    was_training = model.training
    model.train(train)
    for part in frozen:
        part.eval()
    try:
        yield
    finally:
        model.train(was_training)
        for part in frozen:
            part.eval()
