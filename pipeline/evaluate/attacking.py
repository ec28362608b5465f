"""Attacks at each budget: one (attack, eps) unit, the cascade per eps, the per-sample worst case."""

from __future__ import annotations

import inspect
import sys
import time
from functools import partial
from pathlib import Path

import torch

from pipeline.attacks import ATTACKS
from pipeline.attacks.adapters import num_classes
from pipeline.attacks.autoattack import state_robust_flags
from pipeline.budget import eps_key, per_255
from pipeline.config import to_dict
from pipeline.config.attacks import AttackSettings
from pipeline.data import batch_indices
from pipeline.evaluate.units import Context, bits, library_warnings, predict, unit_seed

BOUND_TOLERANCE = 1e-6  # float32 rounding of x + delta (relative for L2)
GROUPS = (("Linf", "any", "epsilons"), ("L2", "any_l2", "epsilons_l2"))  # norm, worst-case key, EvaluateConfig field


def call_attack(name: str, model, x, y, eps: float, settings: AttackSettings, seed: int, state_path: Path,
                batch_size: int) -> torch.Tensor:
    """Registry call with the settings' arguments at `eps`, filling the optional ones an attack declares (see pipeline.attacks)."""
    fn = ATTACKS[name].fn
    params = inspect.signature(fn).parameters
    offered = {"generator": lambda: torch.Generator(device=x.device).manual_seed(seed), "seed": lambda: seed,
               "state_path": lambda: state_path, "batch_size": lambda: batch_size}
    extra = {k: make() for k, make in offered.items() if k in params}
    torch.manual_seed(seed)  # libraries that draw from the global RNG
    return fn(model, x, y, eps=eps, **settings.arguments(eps), **extra)


def delta_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    delta = (x_adv - x).flatten(1)
    return delta.abs().amax(1) if norm == "Linf" else delta.norm(dim=1)


def chunks(ctx: Context, name: str, idx: torch.Tensor) -> list[torch.Tensor]:
    """Attacks that batch themselves (AutoAttack) get all samples at once, the others batches."""
    if "batch_size" in inspect.signature(ATTACKS[name].fn).parameters or len(idx) == 0:
        return [idx]
    return [idx[b] for b in batch_indices(len(idx), ctx.cfg.batch_size, shuffle=False, drop_last=False)]


def attack_samples(ctx: Context, name: str, eps: float, idx: torch.Tensor, key: str, seed: int) -> dict:
    """Attack the samples `idx` (indices into the test split): per-sample correctness and bound checks."""
    norm, settings, state = ATTACKS[name].norm, ctx.cfg.attacks[name], ctx.partials.path(key, ".aa_state.json")
    correct, norms, in_range, found = [], [torch.zeros(0)], True, []
    start = time.perf_counter()
    for k, part in enumerate(chunks(ctx, name, idx)):
        if len(part) == 0:
            continue
        x, y = ctx.data.batch(part.to(ctx.rt.device)), ctx.data.y[part.to(ctx.rt.device)]
        with ctx.rt.autocast(), library_warnings() as caught:
            x_adv = call_attack(name, ctx.model, x, y, eps, settings, seed + k, state, ctx.cfg.batch_size)
        found += caught
        correct.append((predict(ctx.model, x_adv) == y).cpu())
        norms.append(delta_norms(x_adv.float(), x, norm).cpu())
        in_range &= bool((x_adv >= 0).all() and (x_adv <= 1).all())
    flags = torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)
    recorded = state_robust_flags(state)  # samples AutoAttack broke before a kill (their x_adv is gone)
    if recorded is not None and len(recorded) == len(flags):
        flags &= recorded
    seconds = time.perf_counter() - start
    max_norm = float(torch.cat(norms).max()) if len(idx) else 0.0
    return {"correct": flags.tolist(), "attacked": len(idx), "seconds": round(seconds, 4), "max_norm": max_norm,
            "within_eps": max_norm <= eps * (1 + BOUND_TOLERANCE) + BOUND_TOLERANCE, "in_range": in_range,
            "library_warnings": sorted(set(found))}


def attack_limit(ctx: Context, name: str) -> int:
    return min(ctx.n, ctx.cfg.attacks[name].max_samples)


def cascade_step(ctx: Context, name: str, eps: float, eps_key: str, robust: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Run one attack of an eps's cascade and update `robust` (n,) in place; returns its record and the
    per-sample outcome (m,) bool that its accuracy counts: the attack's own result, or with the cascade
    the result after it and every attack before it."""
    m = attack_limit(ctx, name)
    chained = ctx.cfg.cascade and not ATTACKS[name].standalone
    targets = robust[:m].nonzero().squeeze(1) if chained else torch.arange(m)
    key = f"{name}@{eps_key}"
    unit = ctx.partials.get_or_run(key, partial(attack_samples, ctx, name, eps, targets, key, unit_seed(ctx.seed, key)))
    own = robust[:m].clone() if chained else torch.zeros(m, dtype=torch.bool)
    own[targets] = torch.tensor(unit.pop("correct"), dtype=torch.bool)
    before = int(robust[:m].sum())
    robust[:m] &= own
    record = {**unit, "accuracy": float(own.float().mean()) if m else 0.0, "samples": m, "broken": before - int(robust[:m].sum()),
              "samples_per_s": round(unit["attacked"] / max(unit["seconds"], 1e-9), 1), "norm": ATTACKS[name].norm, "cascade": chained}
    return record, own


def attack_epsilons(ctx: Context, name: str, epsilons: list[float]) -> list[float]:
    """The eps an attack runs at: its own `epsilons` (a subset by label, to save time) or all of its norm's."""
    return ctx.cfg.attacks[name].runs_at(epsilons)


def run_group(ctx: Context, names: list[str], epsilons: list[float], clean: torch.Tensor, outcomes: dict) -> tuple[dict, dict]:
    """Every attack of one norm at every eps (input units): (per-attack records, worst-case records). Fills
    `outcomes` (attack -> eps key -> bits) with the per-sample outcome behind every accuracy."""
    results: dict = {name: {} for name in names}
    worst: dict = {}
    for e in epsilons:
        robust, key = clean.clone(), eps_key(e)
        active = [name for name in names if e in attack_epsilons(ctx, name, epsilons)]
        n_any = min(attack_limit(ctx, name) for name in active)
        for name in active:
            r, own = cascade_step(ctx, name, float(e), key, robust)
            results[name][key] = r
            outcomes.setdefault(name, {})[key] = bits(own)
            r["clean_accuracy"] = float(clean[: r["samples"]].float().mean())
            print(f"evaluate {name} eps {per_255(e):g}: accuracy {r['accuracy']:.4f} ({r['samples_per_s']:.0f} samples/s)", file=sys.stderr)
        worst[key] = {"accuracy": float(robust[:n_any].float().mean()), "samples": n_any, "within_eps": True, "in_range": True,
                      "max_norm": 0.0, "clean_accuracy": float(clean[:n_any].float().mean()), "attacks": active}
        outcomes.setdefault(worst_key_of(names), {})[key] = bits(robust[:n_any])
    return results, worst


def worst_key_of(names: list[str]) -> str:
    """The key of the per-sample worst case over a norm's attacks ("any" or "any_l2")."""
    return next(key for norm, key, _ in GROUPS if ATTACKS[names[0]].norm == norm)


def attack_parameters(ctx: Context, names: list[str]) -> dict:
    classes = num_classes(ctx.model, ctx.data.batch(torch.arange(1, device=ctx.data.y.device)))
    entries = {name: ATTACKS[name] for name in names}
    settings = {name: to_dict(ctx.cfg.attacks[name]) for name in names}  # as the config wrote them
    return {name: {"implementation": a.implementation, "norm": a.norm, "settings": settings[name],
                   **(a.describe(classes, **settings[name]) if a.describe else {})} for name, a in entries.items()}
