"""Gaussian and defocus blur at 5 severities, per frame for clips.

Severity parameters follow Hendrycks & Dietterich (CIFAR-10-C settings); torch on the
device, not bit-identical with CIFAR-10-C. Kernels are cut to the image so that the
reflect padding stays valid on tiny (8 px) images.

Why not torchvision's `gaussian_blur`: importing torchvision costs ~1.5 s per process (it
imports torch._dynamo through torchvision.ops), a third of an evaluate job of the default
study. The blur here is the same separable kernel with reflect padding and agrees with
torchvision's to float rounding (tests/test_corruptions.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.corruptions.common import per_frame, severity_value

GAUSSIAN_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))  # (disk radius, anti-alias sigma)


def gaussian_kernel1d(kernel_size: int, sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised Gaussian weights at offsets -(k-1)/2 .. (k-1)/2. (K,)"""
    half = (kernel_size - 1) / 2
    offsets = torch.linspace(-half, half, kernel_size, device=device)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def separable_gaussian_blur(f: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Blur images (B,C,H,W) with a k x k Gaussian (as two 1-D passes), reflect padding."""
    c, pad = f.shape[1], kernel_size // 2
    k = gaussian_kernel1d(kernel_size, sigma, f.device).to(f.dtype)
    f = F.pad(f, (pad, pad, pad, pad), mode="reflect")
    f = F.conv2d(f, k.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size), groups=c)  # along W
    return F.conv2d(f, k.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1), groups=c)  # along H


def gaussian_blur(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian blur with sigma of the severity (kernel 2*ceil(3 sigma)+1, reflect padding)."""
    sigma = severity_value(GAUSSIAN_SIGMA, severity)

    def blur(f: torch.Tensor) -> torch.Tensor:
        k = min(2 * math.ceil(3 * sigma) + 1, 2 * min(f.shape[-2:]) - 1)
        return separable_gaussian_blur(f, k, sigma)

    return per_frame(blur, x)


def disk_kernel(radius: float, alias_sigma: float, device: torch.device) -> torch.Tensor:
    """Normalised disk of `radius` smoothed by a 3x3 Gaussian (H&D's aliased disk). (K, K)."""
    half = math.ceil(radius) + 1  # one ring of zeros around the disk for the 3x3 smoothing
    r = torch.arange(-half, half + 1, device=device, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()
    disk = separable_gaussian_blur((disk / disk.sum())[None, None], 3, alias_sigma)[0, 0]
    return disk / disk.sum()


def defocus_blur(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Convolution with an aliased disk (a defocused lens), per channel, reflect padding."""
    radius, alias = severity_value(DEFOCUS, severity)
    kernel = disk_kernel(radius, alias, x.device)

    def blur(f: torch.Tensor) -> torch.Tensor:
        pad = kernel.shape[0] // 2
        weight = kernel.expand(f.shape[1], 1, *kernel.shape)
        return F.conv2d(F.pad(f, (pad,) * 4, mode="reflect"), weight, groups=f.shape[1]).clamp(0, 1)

    return per_frame(blur, x)
