"""FGSM (Goodfellow et al. 2015, arXiv 1412.6572): one signed-gradient step, Linf."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.linf_pgd import pgd_linf


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
    """x_adv = clip_[0,1](x + eps * sign(grad_x CE(model(x), y))): `pgd_linf` with one step of eps from x.

    Args:
        model: maps [0,1] inputs to logits; the caller puts it in eval mode.
        x: clean inputs in [0, 1]. Shape (N,C,H,W) or (N,C,T,H,W).
        y: labels (N,).
        eps: Linf budget in [0, 1] pixel units (8/255 is common on CIFAR-10).

    Returns:
        x_adv with ||x_adv - x||_inf <= eps and x_adv in [0, 1]; same shape as x.
    """
    return pgd_linf(lambda xa: F.cross_entropy(model(xa).float(), y), x, eps=eps, step_size=eps, steps=1)
