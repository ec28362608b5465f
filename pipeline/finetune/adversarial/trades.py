"""TRADES (Zhang et al. 2019, arXiv 1901.08573): CE(f(x), y) + beta KL(p(x) || p(x')).

The inner attack starts at x + 0.001 N(0, I) and maximises the KL against the (fixed)
clean prediction, as in the reference code `yaodongyu/TRADES` (which recomputes the clean
logits at every step; they are constant there, so they are computed once here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import AdversarialConfig
from pipeline.finetune.adversarial.context import AdversarialContext
from pipeline.finetune.adversarial.inner import Attack, perturb


def trades_attack(cfg: AdversarialConfig) -> Attack:
    eps = cfg.eps  # pixel units (config: 1/255, converted by pipeline.config)
    return Attack(eps=eps, steps=cfg.steps, step_fraction=cfg.step_size, init="normal")


def trades_kl(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) || softmax(adv)) summed over classes, mean over the batch.

    Shapes: (N, K), (N, K) -> scalar (float32). Equals PyTorch's
    `KLDivLoss(reduction="sum")(log_softmax(adv), softmax(clean)) / N` of the reference code.
    """
    p_log = F.log_softmax(logits_clean.float(), dim=1)
    q_log = F.log_softmax(logits_adv.float(), dim=1)
    return (p_log.exp() * (p_log - q_log)).sum(1).mean()


def trades(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AdversarialContext) -> torch.Tensor:
    """TRADES loss of one batch; x (N,C,H,W) or (N,C,T,H,W) in [0, 1], y (N,)."""
    with ctx.attack_mode(model):
        with torch.no_grad(), ctx.rt.autocast():
            clean = model(x).float()
        x_adv = perturb(lambda xa: trades_kl(clean, model(xa)), x, ctx.attack, ctx.rt, ctx.generator)
    with ctx.rt.autocast():
        logits, logits_adv = model(x).float(), model(x_adv).float()
    return F.cross_entropy(logits, y) + ctx.cfg.trades.beta * trades_kl(logits, logits_adv)
