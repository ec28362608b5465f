"""SPAT: self-paced hard-class-pair reweighting (Hou, Han and Li, AAAI 2023, arXiv 2210.15068).

With a cosine classifier (c_k = cos(W_k, f(x)), `pipeline.models.classifier.CosineClassifier`):
    natural loss  CE(l, y) with l_y = s (1 + m - c_y) c_y and l_k = s (c_k + m) c_k (k != y):
                  the self-paced weights grow for a hard target and for classes close to x;
    consistency   (1/N) sum_i sum_k kappa_ik (kappa_ik + n), kappa_k = p_k (log p_k - log q_k),
                  p = softmax(s c(x)), q = softmax(s c(x')): a TRADES KL whose per-class terms
                  are reweighted by their own size, so hard class pairs weigh more;
    total         natural + beta consistency; x' maximises the consistency term (PGD from
                  x + 0.001 N(0, I)), as in `puerrrr/Self-Paced-Adversarial-Training/spat.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.finetune.adversarial.context import AdversarialContext
from pipeline.finetune.adversarial.inner import perturb
from pipeline.models.classifier import CosineClassifier


def spat_logits(cos: torch.Tensor, y: torch.Tensor, *, scale: float, margin: float) -> torch.Tensor:
    """Self-paced logits (N, K) from cosines (N, K) and labels (N,); the weights are not detached."""
    target = F.one_hot(y, cos.shape[1]).bool()
    weight = torch.where(target, 1 + margin - cos, cos + margin)
    return scale * weight * cos


def spat_consistency(cos_clean: torch.Tensor, cos_adv: torch.Tensor, *, scale: float, n: float) -> torch.Tensor:
    """(1/N) sum_i sum_k kappa (kappa + n); cosines (N, K) -> scalar (float32)."""
    p_log = F.log_softmax(scale * cos_clean.float(), dim=1)
    q_log = F.log_softmax(scale * cos_adv.float(), dim=1)
    kappa = p_log.exp() * (p_log - q_log)
    return (kappa * (kappa + n)).sum(1).mean()


def spat(model: CosineClassifier, x: torch.Tensor, y: torch.Tensor, ctx: AdversarialContext) -> torch.Tensor:
    """SPAT loss of one batch; x (N,C,H,W) or (N,C,T,H,W) in [0, 1], y (N,)."""
    s = ctx.cfg.spat
    with ctx.attack_mode(model):
        with torch.no_grad(), ctx.rt.autocast():
            clean = model.cosines(x).float()
        objective = lambda xa: spat_consistency(clean, model.cosines(xa), scale=s.scale, n=s.n)  # noqa: E731
        x_adv = perturb(objective, x, ctx.attack, ctx.rt, ctx.generator)
    with ctx.rt.autocast():
        cos, cos_adv = model.cosines(x).float(), model.cosines(x_adv).float()
    natural = F.cross_entropy(spat_logits(cos, y, scale=s.scale, margin=s.margin), y)
    return natural + s.beta * spat_consistency(cos, cos_adv, scale=s.scale, n=s.n)
