"""Fast adversarial training: FGSM from a random start (Wong, Rice and Kolter 2020, arXiv 2001.03994).

delta ~ U[-eps, eps], one signed step of `fgsm_rs.step_size` * eps (1.25 eps = 10/255 at
8/255), projected back onto the eps-ball and [0, 1]; the loss is CE at that point
(`pgd_at.adversarial_ce`). It can collapse ("catastrophic overfitting": FGSM accuracy
high, PGD accuracy near 0), hence the guard in `guard.py`.
"""

from __future__ import annotations

from pipeline.config import AdversarialConfig
from pipeline.finetune.adversarial.inner import Attack


def fast_attack(cfg: AdversarialConfig) -> Attack:
    eps = cfg.eps  # pixel units (config: 1/255, converted by pipeline.config)
    return Attack(eps=eps, steps=1, step_fraction=cfg.fgsm_rs.step_size, init="uniform")
