"""Gaussian, shot and impulse noise at 5 severities.

Severity parameters follow Hendrycks & Dietterich (ICLR 2019, CIFAR-10-C settings); the
implementation is torch on the device, so results are close to but not bit-identical
with the published CIFAR-10-C arrays. Clips share one noise draw across their frames.
"""

from __future__ import annotations

import torch

from pipeline.corruptions.common import draw_shape, severity_value

GAUSSIAN_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_PHOTONS = (500, 250, 100, 75, 50)  # Poisson rate per unit intensity
IMPULSE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)  # share of salt-and-pepper elements


def gaussian_noise(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, std^2), clipped. x: (N,C,H,W) or (N,C,T,H,W) in [0, 1]."""
    noise = torch.randn(draw_shape(x), device=x.device, generator=generator)
    return (x + severity_value(GAUSSIAN_STD, severity) * noise).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson(x * lam) / lam, clipped. Images draw exact Poisson counts; clips, which share one draw
    across frames of different intensity, use its normal approximation x + sqrt(x / lam) * z."""
    lam = severity_value(SHOT_PHOTONS, severity)
    if x.dim() == 4:
        return (torch.poisson(x * lam, generator=generator) / lam).clamp(0, 1)
    z = torch.randn(draw_shape(x), device=x.device, generator=generator)
    return (x + (x / lam).sqrt() * z).clamp(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Salt and pepper (skimage's 's&p', salt_vs_pepper 0.5): a share `amount` of elements set to 1 or 0."""
    amount = severity_value(IMPULSE_AMOUNT, severity)
    u = torch.rand(draw_shape(x), device=x.device, generator=generator)
    return torch.where(u < amount / 2, 1.0, torch.where(u < amount, 0.0, x))
