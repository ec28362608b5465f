"""Clean accuracy, corruption accuracy and per-sample sensitivity (minimal PGD radius, logit margin)."""

from __future__ import annotations

import time
from functools import partial

import torch

from pipeline.budget import per_255
from pipeline.corruptions import CORRUPTIONS, applicable
from pipeline.data import Split, batch_indices
from pipeline.evaluate.units import Context, bits, predict, unit_seed
from pipeline.sensitivity import logit_margin, minimal_radius


def corrupt_samples(ctx: Context, name: str, severity: int, m: int, seed: int) -> dict:
    """Accuracy on the first m samples under one corruption at one severity."""
    gen = torch.Generator(device=ctx.rt.device).manual_seed(seed)
    flags, change, start = [], 0.0, time.perf_counter()
    for idx in batch_indices(m, ctx.cfg.batch_size, shuffle=False, drop_last=False):
        idx = idx.to(ctx.rt.device)
        x = ctx.data.batch(idx)
        x_c = CORRUPTIONS[name](x, severity, generator=gen)
        flags.append((predict(ctx.model, x_c) == ctx.data.y[idx]).cpu())
        change += float((x_c - x).abs().mean()) * len(idx)
    correct = torch.cat(flags) if flags else torch.zeros(0, dtype=torch.bool)
    return {"accuracy": int(correct.sum()) / max(1, m), "samples": m, "mean_abs_change": change / max(1, m),
            "seconds": round(time.perf_counter() - start, 4), "outcomes": bits(correct)}  # per sample, for claim C6


def run_corruptions(ctx: Context, clean: torch.Tensor) -> dict:
    """corruption -> severity -> record, plus the mean over everything that ran."""
    spec = ctx.cfg.corruptions
    m = min(ctx.n, spec.max_samples)
    out: dict = {}
    for name in (c for c in spec.names if applicable(c, ctx.data.is_video)):
        for s in spec.severities:
            key = f"corruption:{name}@{s}"
            unit = partial(corrupt_samples, ctx, name, s, m, unit_seed(ctx.seed, key))
            out.setdefault(name, {})[str(s)] = ctx.partials.get_or_run(key, unit)
    accs = [r["accuracy"] for per in out.values() for r in per.values()]
    return {"corruptions": out, "corruption_samples": m, "corruption_clean_accuracy": float(clean[:m].float().mean()) if m else 0.0,
            "corruption_mean_accuracy": sum(accs) / len(accs) if accs else None}


def sensitivity_record(ctx: Context) -> dict:
    """Per-sample minimal PGD radius (1/255) and clean logit margin of the first `radius.max_samples` test samples."""
    r = ctx.cfg.radius
    m = min(r.max_samples, ctx.n)
    if m == 0:
        return {}

    def measure() -> dict:
        radii, margins = [], []
        for idx in batch_indices(m, ctx.cfg.batch_size, shuffle=False, drop_last=False):
            idx = idx.to(ctx.data.y.device)
            x, y = ctx.data.batch(idx), ctx.data.y[idx]
            with torch.no_grad():
                margins.append(logit_margin(ctx.model(x).float(), y).cpu())
            radii.append(minimal_radius(ctx.model, x, y, r.max_eps, r.bisection_steps, r.pgd_steps).cpu() * 255)
        return {"samples": m, "max_eps_255": per_255(r.max_eps), "bisection_steps": r.bisection_steps, "pgd_steps": r.pgd_steps,
                "per_sample": {"radius_255": [round(v, 4) for v in torch.cat(radii).tolist()],
                               "logit_margin": [round(v, 5) for v in torch.cat(margins).tolist()]}}

    return ctx.partials.get_or_run("sensitivity", measure)


def clean_flags(model: torch.nn.Module, data: Split, n: int, batch_size: int) -> torch.Tensor:
    """(n,) bool on the CPU: is each of the first n test samples classified correctly."""
    dev = data.y.device
    return torch.cat([(predict(model, data.batch(i.to(dev))) == data.y[i.to(dev)]).cpu()
                      for i in batch_indices(n, batch_size, shuffle=False, drop_last=False)])
