"""Attack registry. Every attack is `(model, x, y, *, eps, **settings) -> x_adv`.

Inputs are in [0, 1] with normalisation inside the model; images (N,C,H,W) or clips
(N,C,T,H,W). Keys equal the schema's `evaluate.attacks` properties. The registry's order
is the cascade order of the evaluate stage (cheap and white-box first, as in AutoAttack);
`NORM` says which threat model an attack belongs to: Linf budgets are given in units of
1/255, L2 budgets in input units, and names of L2 attacks end in "_l2". Optional keyword
arguments the evaluate stage fills in when an attack has them: `generator` (a seeded
torch.Generator), `seed` (an int), `state_path` (a resumable progress file) and
`batch_size` (the attack batches itself and receives all its samples at once).
"""

from pipeline.attacks import apgd_ce as _apgd_ce
from pipeline.attacks import apgd_t as _apgd_t
from pipeline.attacks import autoattack as _autoattack
from pipeline.attacks import fab_t as _fab_t
from pipeline.attacks import square as _square
from pipeline.attacks.apgd_ce import apgd_ce
from pipeline.attacks.apgd_t import apgd_t
from pipeline.attacks.autoattack import autoattack
from pipeline.attacks.cw_l2 import cw_l2
from pipeline.attacks.fab_t import fab_t
from pipeline.attacks.fgsm import fgsm
from pipeline.attacks.pgd import pgd
from pipeline.attacks.pgd_l2 import pgd_l2
from pipeline.attacks.square import square

ATTACKS = {
    "fgsm": fgsm, "pgd": pgd, "apgd_ce": apgd_ce, "apgd_t": apgd_t, "fab_t": fab_t, "square": square, "autoattack": autoattack,
    "pgd_l2": pgd_l2, "cw_l2": cw_l2,
}
NORM = {name: "L2" if name.endswith("_l2") else "Linf" for name in ATTACKS}
BLACK_BOX = {"square"}  # breaking samples the white-box attacks could not is a gradient-masking sign
STANDALONE = {"autoattack"}  # a cascade itself: always runs on every clean-correct sample, so its number is AutoAttack's
IMPLEMENTATION = {
    "fgsm": "pipeline (by hand)", "pgd": "pipeline (by hand)", "pgd_l2": "pipeline (by hand)", "cw_l2": "pipeline (by hand)",
    "apgd_ce": _apgd_ce.IMPLEMENTATION, "apgd_t": _apgd_t.IMPLEMENTATION, "fab_t": _fab_t.IMPLEMENTATION,
    "square": _square.IMPLEMENTATION, "autoattack": _autoattack.IMPLEMENTATION,
}
DESCRIBE = {"autoattack": _autoattack.parameters}  # effective library parameters, given the number of classes

__all__ = ["ATTACKS", "BLACK_BOX", "DESCRIBE", "IMPLEMENTATION", "NORM", "STANDALONE", "apgd_ce", "apgd_t", "autoattack",
           "cw_l2", "fab_t", "fgsm", "pgd", "pgd_l2", "square"]
