"""Contrast and brightness at 5 severities (Hendrycks & Dietterich CIFAR-10-C settings; torch, not bit-identical)."""

from __future__ import annotations

import torch

from pipeline.corruptions.common import severity_value

CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)  # factor towards the per-channel mean
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to HSV value


def contrast(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """(x - mean) * c + mean with the per-channel mean of each image (each frame for clips)."""
    c = severity_value(CONTRAST, severity)
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return ((x - mean) * c + mean).clamp(0, 1)


def brightness(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add c to the HSV value V = max(R, G, B), keeping hue and saturation.

    With H and S fixed, RGB scales linearly with V, so HSV -> RGB reduces to RGB * V'/V
    (black pixels, whose hue is undefined, become grey V'). No colour-space round trip.
    """
    c = severity_value(BRIGHTNESS, severity)
    v = x.amax(dim=1, keepdim=True)  # channel dim of (N,C,H,W) and (N,C,T,H,W)
    v_new = (v + c).clamp(max=1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x)).clamp(0, 1)
