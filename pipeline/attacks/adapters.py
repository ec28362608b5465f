"""Small adapters between our models and attack libraries.

`VideoAs4D` presents a clip model (N,C,T,H,W) as an image model over (N, C*T, H, W):
pyautoattack's Square (and hence its AutoAttack) and torchattacks' APGD/PGDL2/Square
crash on 5-D input (anchors.md 0.1 and 1.7). Flattening (C, T) into channels changes no
Linf or L2 norm and no element-wise clipping; only Square's sampling changes (its squares
are then drawn per (channel, frame) pair). `FloatLogits` makes bf16-autocast logits float32,
which the libraries' sorting and margin code expects.
"""

from __future__ import annotations

import torch
from torch import nn


class VideoAs4D(nn.Module):
    """Wrap `model` so it takes (N, C*T, H, W) and reshapes to `clip_shape` = (C, T, H, W) inside."""

    def __init__(self, model: nn.Module, clip_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.clip_shape = model, tuple(clip_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(x.shape[0], *self.clip_shape))


class FloatLogits(nn.Module):
    """logits.float(): attack code sorts and subtracts logits, which bf16 would round."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float()


def as_4d(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
    """(model, contiguous x) for images; (VideoAs4D(model), x as (N, C*T, H, W)) for clips; logits float32."""
    model, x = FloatLogits(model), x.contiguous()  # pyautoattack .view()s inputs and gradients
    if x.dim() == 4:
        return model, x
    return VideoAs4D(model, x.shape[1:]), x.flatten(1, 2)


@torch.no_grad()
def num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """Number of logits, from one forward pass on the first sample."""
    return int(model(x[:1]).shape[1])


def capped_targets(requested: int, classes: int) -> int:
    """Target classes of a targeted attack: at most classes - 1 (AutoAttack uses 9 of 10)."""
    return max(1, min(requested, classes - 1))
