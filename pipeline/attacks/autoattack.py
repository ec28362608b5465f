"""Standard AutoAttack (Croce & Hein 2020, arXiv 2003.01690), Linf, through `pyautoattack`.

The reported AutoAttack numbers come from pyautoattack's own `AutoAttack` class (APGD-CE,
APGD-T, FAB-T, Square, each only on the samples still robust). Its API is keyword-only,
its `device` defaults to 'cpu' (we always pass the input's device) and it returns
`(x_adv, y_adv)`. Clips go through `VideoAs4D` because its Square needs 4-D input.

Resuming: pyautoattack writes its progress to `state_path` (robust flags, attacks done),
but version 0.2.0 cannot read its own file back: it saves the attack set as `str(set)`,
so every restore fails with "different set of attacks", and its restore branch never
defines `y_adv`. `read_state` therefore parses the file here, and a resumed call runs the
remaining attacks, with the same parameters, on the samples the state still lists as
robust. Samples broken before the kill come back unchanged (their adversarial examples
were lost with the process); `state_robust_flags` gives the caller their status.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pyautoattack
import torch
from pyautoattack import AutoAttack
from torch import nn

from pipeline.attacks.adapters import as_4d, capped_targets, num_classes
from pipeline.logs import Progress

IMPLEMENTATION = f"pyautoattack {pyautoattack.__version__} AutoAttack via VideoAs4D for clips"
STANDARD = {"steps": 100, "square_queries": 5000, "n_target_classes": 9}  # the published budget


def set_apgd_iterations(apgd, steps: int) -> None:
    """Change an APGD attack's iterations together with the schedule its __init__ derives from them."""
    apgd.n_iter = apgd.n_iter_orig = steps
    apgd.n_iter_2 = max(int(0.22 * steps), 1)  # same formulas as pyautoattack's APGDAttack.__init__
    apgd.n_iter_min = max(int(0.06 * steps), 1)
    apgd.size_decr = max(int(0.03 * steps), 1)


def build(model: nn.Module, classes: int, device: torch.device, *, eps: float, version: str, n_target_classes: int,
          steps: int, square_queries: int, seed: int) -> AutoAttack:
    """pyautoattack's AutoAttack with its version's settings, then our iteration and target budget."""
    aa = AutoAttack(model, norm="Linf", eps=eps, version=version, seed=seed, device=device)
    set_apgd_iterations(aa.apgd, steps)
    set_apgd_iterations(aa.apgd_targeted, steps)
    aa.fab.n_iter = steps
    aa.square.n_queries = square_queries
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = capped_targets(n_target_classes, classes)
    return aa


def describe(aa: AutoAttack) -> dict:
    """The parameters that ran, for the results file."""
    return {"implementation": IMPLEMENTATION, "version": aa.version, "norm": aa.norm, "attacks": list(aa.attacks_to_run),
            "apgd_iterations": aa.apgd.n_iter, "apgd_restarts": aa.apgd.n_restarts, "apgd_t_iterations": aa.apgd_targeted.n_iter,
            "apgd_t_target_classes": aa.apgd_targeted.n_target_classes, "fab_iterations": aa.fab.n_iter,
            "fab_target_classes": aa.fab.n_target_classes, "square_queries": aa.square.n_queries, "seed": aa.seed}


def parameters(classes: int, *, version: str, n_target_classes: int, steps: int, square_queries: int,
               **_: object) -> dict:
    """What `autoattack(...)` with these settings runs on a `classes`-way model (no attack is run)."""
    aa = build(nn.Identity(), classes, torch.device("cpu"), eps=0.0, version=version, n_target_classes=n_target_classes,
               steps=steps, square_queries=square_queries, seed=0)
    standard = {"steps": steps, "square_queries": square_queries, "n_target_classes": n_target_classes} == STANDARD
    return {**describe(aa), "standard_budget": standard and version == "standard"}


def read_state(path: Path | None, attacks: list[str]) -> tuple[set[str], torch.Tensor | None]:
    """(attacks done, robust flags) from a pyautoattack state file; (set(), None) if absent or for other attacks."""
    if path is None or not Path(path).exists():
        return set(), None
    state = json.loads(Path(path).read_text())
    saved = state["_attacks_to_run"]
    saved = set(ast.literal_eval(saved) if isinstance(saved, str) else saved)  # 0.2.0 writes str(set)
    if saved != set(attacks) or state["_robust_flags"] is None:
        return set(), None
    return set(state["_run_attacks"]), torch.tensor(state["_robust_flags"], dtype=torch.bool)


def state_robust_flags(path: Path | None) -> torch.Tensor | None:
    """Per-sample robust flags recorded in a pyautoattack state file (None if there is none)."""
    if path is None or not Path(path).exists():
        return None
    flags = json.loads(Path(path).read_text())["_robust_flags"]
    return None if flags is None else torch.tensor(flags, dtype=torch.bool)


def continue_from_state(aa: AutoAttack, x: torch.Tensor, y: torch.Tensor, done: set[str], robust: torch.Tensor,
                        batch_size: int) -> torch.Tensor:
    """Run the attacks not in `done` on the samples still `robust`; the others come back unchanged."""
    aa.attacks_to_run = [a for a in aa.attacks_to_run if a not in done]
    x_adv = x.clone()
    idx = robust.nonzero().squeeze(1).to(x.device)
    if aa.attacks_to_run and len(idx):
        x_adv[idx], _ = aa.run_standard_evaluation(x[idx], y[idx], batch_size=batch_size)
    return x_adv


def track_progress(aa: AutoAttack, samples: int, batch_size: int) -> Progress:
    """A Progress counting AutoAttack's sub-attack batches (pyautoattack calls each attack's
    `perturb` once per batch of still-robust samples). The total assumes every attack sees all
    `samples`, so the ETA is an upper bound: later attacks get only the samples left robust."""
    progress = Progress(len(aa.attacks_to_run) * math.ceil(samples / batch_size), "autoattack", "batch")
    for attack in {id(a): a for a in (aa.apgd, aa.apgd_targeted, aa.fab, aa.square)}.values():
        def counted(*args, _perturb=attack.perturb, **kwargs):
            out = _perturb(*args, **kwargs)
            progress.update()
            return out

        attack.perturb = counted
    return progress


def autoattack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, version: str, n_target_classes: int,
    steps: int, square_queries: int, seed: int = 0, batch_size: int = 250, state_path: Path | None = None,
) -> torch.Tensor:
    """AutoAttack's cascade through pyautoattack, resumable through `state_path`.

    Args:
        model: maps [0,1] inputs to logits, in eval mode.
        x: clean inputs in [0, 1], all at once (AutoAttack batches internally). Shape (N,C,H,W) or (N,C,T,H,W).
        y: labels (N,).
        eps: Linf budget in input units.
        version: "standard" (APGD-CE, APGD-T, FAB-T, Square) or "plus".
        n_target_classes: targets of APGD-T and FAB-T (standard: 9), capped at classes - 1.
        steps: APGD and FAB iterations (standard: 100); fewer is cheaper but not the published budget.
        square_queries: Square's queries (standard: 5000).
        seed: AutoAttack's seed.
        batch_size: AutoAttack's batch size.
        state_path: pyautoattack's progress file; if it exists, the run continues from it.

    Returns:
        x_adv, same shape as x; unbroken samples (and, on a resumed run, samples broken before it) unchanged.
    """
    model4, x4 = as_4d(model, x)
    aa = build(model4, num_classes(model4, x4), x.device, eps=eps, version=version, n_target_classes=n_target_classes,
               steps=steps, square_queries=square_queries, seed=seed)
    done, robust = read_state(state_path, aa.attacks_to_run)
    with track_progress(aa, len(x), batch_size):
        if robust is not None and len(robust) == len(x):
            return continue_from_state(aa, x4, y, done, robust, batch_size).reshape(x.shape)
        x_adv, _ = aa.run_standard_evaluation(x4, y, batch_size=batch_size,
                                              state_path=None if state_path is None else Path(state_path))
    return x_adv.detach().reshape(x.shape)
