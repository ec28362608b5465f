"""Shared helpers: per-frame application to clips, and random draws shared by a clip's frames."""

from __future__ import annotations

from collections.abc import Callable

import torch

FrameFn = Callable[[torch.Tensor], torch.Tensor]  # (B,C,H,W) -> (B,C,H',W')


def per_frame(fn: FrameFn, x: torch.Tensor) -> torch.Tensor:
    """Apply an image function to images (N,C,H,W) or to every frame of clips (N,C,T,H,W)."""
    if x.dim() == 4:
        return fn(x)
    n, c, t, h, w = x.shape
    out = fn(x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w))
    return out.reshape(n, t, c, *out.shape[-2:]).permute(0, 2, 1, 3, 4)


def draw_shape(x: torch.Tensor) -> tuple[int, ...]:
    """Shape of a random draw: the input's, with time collapsed to 1 so that a clip shares one draw."""
    return tuple(x.shape) if x.dim() == 4 else (x.shape[0], x.shape[1], 1, *x.shape[3:])


def severity_value(values: tuple, severity: int) -> object:
    """The parameter of severity 1..5."""
    if not 1 <= severity <= len(values):
        raise ValueError(f"severity must be in 1..{len(values)}, got {severity}")
    return values[severity - 1]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)
