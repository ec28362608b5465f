"""The evaluate stage's sanity checks: bounds, monotonicity, gradient masking and the steps check."""

from __future__ import annotations

import dataclasses
from functools import partial

import torch

from pipeline.attacks import ATTACKS
from pipeline.budget import eps_key, per_255
from pipeline.evaluate import attacking  # attack_samples looked up at call time (the resume test replaces it)
from pipeline.evaluate.units import Context, unit_seed


def sanity(results: dict, epsilons: dict[str, list[float]]) -> list[str]:
    """Warnings the report shows in its checks section (empty when all is well).

    `results`: attack -> eps key -> record with accuracy, clean_accuracy, samples, max_norm,
    within_eps, in_range; `epsilons`: attack -> its eps labels in order (1/255 for Linf, as the results are keyed).
    """
    found = []
    for name, per_eps in results.items():
        for e, r in per_eps.items():
            if not (r["within_eps"] and r["in_range"]):
                found.append(f"{name} eps {e}: perturbation outside the eps-ball or [0,1] (max norm {r['max_norm']:.6f})")
            if r["accuracy"] > r["clean_accuracy"] + 1e-9:
                found.append(f"{name} eps {e}: robust accuracy {r['accuracy']:.4f} above clean {r['clean_accuracy']:.4f}")
            found += [f"{name} eps {e}: library check: {w}" for w in r.get("library_warnings", [])]
        accs = [per_eps[eps_key(e)]["accuracy"] for e in epsilons.get(name, []) if eps_key(e) in per_eps]
        slack = 1 / max(1, min(r["samples"] for r in per_eps.values())) + 1e-9 if per_eps else 0.0  # one sample
        if any(b > a + slack for a, b in zip(accs, accs[1:], strict=False)):
            found.append(f"{name}: robust accuracy increases with eps {accs} (gradient masking or too few steps?)")
    return found


def black_box_warnings(results: dict, cascade: bool, outcomes: dict | None = None) -> list[str]:
    """Square (no gradients) breaking samples the white-box attacks could not: gradient masking.

    Cascade: the samples it broke after the white-box attacks. Otherwise, on the samples it
    attacked (it may run on a subset), those it broke while every white-box attack at that eps
    left them correct, from the per-sample `outcomes` (attack -> eps key -> 0/1 string).
    """
    found = []
    for name in [a for a in ATTACKS if a in results and ATTACKS[a].black_box]:
        for e, r in results[name].items():
            white = [a for a in results if a in ATTACKS and not ATTACKS[a].black_box and ATTACKS[a].norm == ATTACKS[name].norm
                     and e in results[a] and list(ATTACKS).index(a) < list(ATTACKS).index(name)]
            if not white:
                continue
            if cascade:
                gain = r["broken"]
            else:
                own = outcomes[name][e]
                gain = sum(b == "0" and all(outcomes[a][e][i] == "1" for a in white) for i, b in enumerate(own)) / max(1, len(own))
            if gain > (0 if cascade else 1 / max(1, r["samples"])):
                found.append(f"{name} eps {e}: black-box attack broke {gain:.1%} of its {r['samples']} samples that every "
                             f"white-box attack {white} left correct: gradient masking?")
    return found


def steps_check(ctx: Context) -> tuple[dict, list[str]]:
    """The check's attack (`attack`: pgd or apgd_ce) rerun with `factor` times the steps at each check eps:
    accuracy must move by at most `tolerance`.

    More steps leaving the model *more* robust is a broken attack; fewer robust samples beyond the
    tolerance means the configured steps have not converged (the reported numbers overstate
    robustness). Either is flagged. Returns {eps label: record} and the warnings.
    """
    check = ctx.cfg.pgd_steps_check
    if check.factor < 2 or check.attack not in ctx.cfg.attacks:
        return {}, []
    records, warnings = {}, []
    for eps in check_epsilons(ctx.cfg.epsilons, check.epsilons):
        record = steps_check_at(ctx, eps)
        records[eps_key(record["eps"])] = record
        (few, many), (a_few, a_many) = record["steps"], record["accuracy"]
        if abs(a_many - a_few) > check.tolerance + 1e-9:
            why = "more steps leave it more robust: a broken attack" if a_many > a_few else "the attack has not converged"
            warnings.append(f"{check.attack} eps {float(record['eps']):g}: {many} steps give accuracy {a_many:.4f}, "
                            f"{few} steps {a_few:.4f} "
                            f"(tolerance {check.tolerance}): {why}")
    return records, warnings


def check_epsilons(epsilons: list[float], chosen: list[float]) -> list[float]:
    """The eps (pixel units) of the steps check: `chosen` (1/255 labels) among those evaluated, else the largest."""
    picked = [e for e in epsilons if any(abs(float(per_255(e)) - c) < 1e-9 for c in chosen)]
    return picked or [max(epsilons)]


def steps_check_at(ctx: Context, eps: float) -> dict:
    """Accuracy under the check's attack with the configured steps and `factor` times as many, same seed, first max_samples samples."""
    check, name = ctx.cfg.pgd_steps_check, ctx.cfg.pgd_steps_check.attack
    m = min(ctx.n, check.max_samples)
    label = per_255(eps)  # keys, seed and record use the config's 1/255 value; the attack gets pixels
    settings = ctx.cfg.attacks[name]
    accs = {}
    for steps in (settings.steps, settings.steps * check.factor):
        key = f"{name}_steps{steps}@{float(label)}"
        more = dataclasses.replace(settings, steps=steps)
        run = dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, attacks={**ctx.cfg.attacks, name: more}))
        seed = unit_seed(ctx.seed, f"{name}_steps_check@{label}")  # the same random start for both
        r = ctx.partials.get_or_run(key, partial(attacking.attack_samples, run, name, float(eps), torch.arange(m), key, seed))
        accs[steps] = sum(r["correct"]) / max(1, m)
    (few, a_few), (many, a_many) = sorted(accs.items())
    return {"attack": name, "eps": label, "samples": m, "steps": [few, many], "accuracy": [a_few, a_many], "tolerance": check.tolerance}
