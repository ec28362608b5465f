"""FGSM (Goodfellow et al. 2015, arXiv 1412.6572): one signed-gradient step, Linf."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float) -> torch.Tensor:
    """x_adv = clip_[0,1](x + eps * sign(grad_x CE(model(x), y))).

    Args:
        model: maps [0,1] inputs to logits; the caller puts it in eval mode.
        x: clean inputs in [0, 1]. Shape (N,C,H,W) or (N,C,T,H,W).
        y: labels (N,).
        eps: Linf budget in input units (8/255 is common on CIFAR-10).

    Returns:
        x_adv with ||x_adv - x||_inf <= eps and x_adv in [0, 1]; same shape as x.
    """
    x_adv = x.clone().detach().requires_grad_(True)
    loss = F.cross_entropy(model(x_adv).float(), y)
    (grad,) = torch.autograd.grad(loss, x_adv)
    return (x + eps * grad.sign()).clamp(0, 1).detach()
