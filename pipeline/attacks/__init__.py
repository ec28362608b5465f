"""Attack registry. Every attack is `(model, x, y, *, eps, **settings) -> x_adv`.

Inputs are in [0, 1] with normalisation inside the model; images (N,C,H,W) or clips
(N,C,T,H,W). Keys equal the schema's `evaluate.attacks` properties.
"""

from pipeline.attacks.fgsm import fgsm
from pipeline.attacks.pgd import pgd

ATTACKS = {"fgsm": fgsm, "pgd": pgd}

__all__ = ["ATTACKS", "fgsm", "pgd"]
