"""Stage `evaluate`: clean, adversarial and corruption accuracy of one classifier on the test split.

Attacks (registry `pipeline.attacks`) run on inputs in [0, 1] with normalisation inside the
model, model in eval mode, float32 unless `precision: bf16` (recorded). Linf attacks run at
`epsilons` (written in units of 1/255; `pipeline.config` hands them over as `Eps` in pixel
units, and results are keyed by the 1/255 value as written), L2 attacks at `epsilons_l2`
(input units). Protocol, as in
AutoAttack: for every epsilon the attacks of one norm form a cascade in registry order
(cheap and white-box first); with `cascade: true` each attack runs only on the samples
still robust, and its `accuracy` is the robust accuracy after it and every attack before it
("robust accuracy after X" in AutoAttack's log); with `cascade: false` each attack runs on
every sample and its accuracy is its own. `autoattack` is a cascade itself and always runs
on every clean-correct sample, so its number is AutoAttack's. "any" (Linf) and "any_l2"
hold the per-sample worst case over all attacks of the norm, on the first samples that
every attack covered (an attack's `max_samples` limits it to the first N samples).

Sanity checks, recorded in `warnings` (the report lists them): ||delta|| <= eps and x_adv in
[0, 1]; robust <= clean; robust accuracy non-increasing in eps (within one sample); PGD
with `pgd_steps_check.factor` times more steps is not more than `tolerance` less
successful; the black-box Square attack breaking samples the white-box attacks before it
could not (gradient masking); plus the warnings of pyautoattack's own checks.

Per-sample outcomes, for paired comparisons across methods (every classifier of a dataset is
evaluated on the same first `samples` test samples): `outcomes.clean` and `outcomes.attacks.<attack>.<eps>`
are strings of 0/1, character i saying whether test sample i counts as correct in that number (for
an attack in the cascade: still correct after it and every attack before it; for "any": after all).

The classifier's BN branch (dual-BN encoders: the one finetune used, config
`finetune.dual_bn_branch`) is read from its checkpoint and recorded as `bn_branch`.

Corruptions (`pipeline.corruptions`) run at each severity on the first
`corruptions.max_samples` samples; their mean accuracy is `corruption_mean_accuracy`.

Everything lands in ONE file, `robustness.json` (attacks under `attacks`, corruptions under
`corruptions`), which keeps the DAG at one job per classifier. A killed run resumes: every
(attack, eps) and (corruption, severity) unit writes its per-sample result to
`.<out name>.partial/` next to the output (AutoAttack also its `state_path` there), and
each unit is seeded from (seed, unit) alone, so a resumed run gives the same numbers as an
uninterrupted one. The folder is removed once the output is written; a changed config,
model, dataset or code invalidates it.

    python -m pipeline.evaluate --cfg '<json of evaluate>' --seed 0 --data results/decode/digits \
        --model .../classifier.pt --out .../robustness.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import shutil
import sys
import time
import warnings as pywarnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from pipeline import runtime
from pipeline.attacks import ATTACKS
from pipeline.attacks.adapters import num_classes
from pipeline.attacks.autoattack import state_robust_flags
from pipeline.classifier import classifier_from_state, load_classifier_state
from pipeline.config import EvaluateConfig, from_json, per_255
from pipeline.corruptions import CORRUPTIONS, applicable
from pipeline.data import Split, batch_indices, load_split
from pipeline.environment import environment
from pipeline.io import read_json, sealed, write_json
from pipeline.logs import stage_cli
from pipeline.provenance import source_hash
from pipeline.sensitivity import logit_margin, minimal_radius

BOUND_TOLERANCE = 1e-6  # float32 rounding of x + delta (relative for L2)
STAGE_KEYS = {"max_samples", "epsilons"}  # attack settings the stage consumes; the rest go to the attack
GROUPS = (("Linf", "any", "epsilons"), ("L2", "any_l2", "epsilons_l2"))  # norm, worst-case key, EvaluateConfig field


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


# ---- resumable units ----------------------------------------------------------------------
class Partials:
    """Per-unit result files in `.<out name>.partial/` next to the output, valid for one fingerprint."""

    def __init__(self, out: Path, fingerprint: str) -> None:
        self.folder = out.parent / f".{out.name}.partial"
        stamp = self.folder / "fingerprint.txt"
        if self.folder.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
            shutil.rmtree(self.folder)  # left by a run with another config, model or code
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint)
        self.resumed = 0

    def path(self, key: str, suffix: str = ".json") -> Path:
        return self.folder / (key.replace("@", "_eps").replace(":", "_") + suffix)

    def get_or_run(self, key: str, fn: Callable[[], dict]) -> dict:
        """The stored record of unit `key`, or run `fn()` and store its record."""
        if self.path(key).exists():
            self.resumed += 1
            return read_json(self.path(key))
        record = fn()
        write_json(self.path(key), record)
        return record

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def fingerprint(cfg: EvaluateConfig, seed: int, data_dir: Path, model_path: Path) -> str:
    """Hash of everything a unit's result depends on."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    digest.update(f"{seed}|{source_hash('pipeline.evaluate')}".encode())
    digest.update((Path(data_dir) / "meta.json").read_bytes())
    digest.update(Path(model_path).read_bytes())
    return digest.hexdigest()


def unit_seed(seed: int, key: str) -> int:
    """A unit's seed depends only on the run's seed and the unit, not on what ran before."""
    return zlib.crc32(f"{seed}:{key}".encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def library_warnings() -> Iterator[list[str]]:
    """Collect what attack libraries warn about (pyautoattack logs its checks to 'auto-attack')."""
    found: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: found.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("auto-attack")
    logger.addHandler(handler)
    with pywarnings.catch_warnings(record=True) as caught:
        pywarnings.simplefilter("always")
        try:
            yield found
        finally:
            logger.removeHandler(handler)
            found += [str(w.message) for w in caught if "autoattack" in w.filename]


# ---- one attack at one eps ------------------------------------------------------------------
@dataclass
class Context:
    """What every unit of one evaluation needs."""

    model: torch.nn.Module
    data: Split
    cfg: EvaluateConfig
    rt: runtime.Runtime
    seed: int
    n: int
    partials: Partials


def call_attack(name: str, model, x, y, eps: float, settings: dict, seed: int, state_path: Path, batch_size: int) -> torch.Tensor:
    """Registry call, filling the optional arguments an attack declares (see pipeline.attacks)."""
    fn = ATTACKS[name].fn
    params = inspect.signature(fn).parameters
    offered = {"generator": lambda: torch.Generator(device=x.device).manual_seed(seed), "seed": lambda: seed,
               "state_path": lambda: state_path, "batch_size": lambda: batch_size}
    extra = {k: make() for k, make in offered.items() if k in params}
    torch.manual_seed(seed)  # libraries that draw from the global RNG
    return fn(model, x, y, eps=eps, **{k: v for k, v in settings.items() if k not in STAGE_KEYS}, **extra)


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
    return min(ctx.n, ctx.cfg.attacks[name].get("max_samples", ctx.n))


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
    own = ctx.cfg.attacks[name].get("epsilons") or []
    return [e for e in epsilons if per_255(e) in own] if own else list(epsilons)


def result_key(eps: float) -> str:
    """Result key of a budget: its value as the config wrote it ("8.0" for 8/255, "0.5" for L2 0.5)."""
    return str(float(per_255(eps)))


def bits(flags: torch.Tensor) -> str:
    """Per-sample outcomes (m,) bool as a string of 0/1, sample i of the test split at position i."""
    return "".join("1" if f else "0" for f in flags.tolist())


def run_group(ctx: Context, names: list[str], epsilons: list[float], clean: torch.Tensor, outcomes: dict) -> tuple[dict, dict]:
    """Every attack of one norm at every eps (input units): (per-attack records, worst-case records). Fills
    `outcomes` (attack -> eps key -> bits) with the per-sample outcome behind every accuracy."""
    results: dict = {name: {} for name in names}
    worst: dict = {}
    for e in epsilons:
        robust, key = clean.clone(), result_key(e)
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


# ---- sanity checks --------------------------------------------------------------------------
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
        accs = [per_eps[str(float(e))]["accuracy"] for e in epsilons.get(name, []) if str(float(e)) in per_eps]
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
        records[f"{float(record['eps'])}"] = record
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
    settings = dict(ctx.cfg.attacks[name])
    accs = {}
    for steps in (settings.get("steps", 10), settings.get("steps", 10) * check.factor):
        key = f"{name}_steps{steps}@{float(label)}"
        run = dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, attacks={**ctx.cfg.attacks, name: {**settings, "steps": steps}}))
        seed = unit_seed(ctx.seed, f"{name}_steps_check@{label}")  # the same random start for both
        r = ctx.partials.get_or_run(key, partial(attack_samples, run, name, float(eps), torch.arange(m), key, seed))
        accs[steps] = sum(r["correct"]) / max(1, m)
    (few, a_few), (many, a_many) = sorted(accs.items())
    return {"attack": name, "eps": label, "samples": m, "steps": [few, many], "accuracy": [a_few, a_many], "tolerance": check.tolerance}


# ---- corruptions ----------------------------------------------------------------------------
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


# ---- the stage ------------------------------------------------------------------------------
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


def attack_parameters(ctx: Context, names: list[str]) -> dict:
    classes = num_classes(ctx.model, ctx.data.batch(torch.arange(1, device=ctx.data.y.device)))
    entries = {name: ATTACKS[name] for name in names}
    return {name: {"implementation": a.implementation, "norm": a.norm, "settings": ctx.cfg.attacks[name],
                   **(a.describe(classes, **ctx.cfg.attacks[name]) if a.describe else {})} for name, a in entries.items()}


def worst_key_of(names: list[str]) -> str:
    """The key of the per-sample worst case over a norm's attacks ("any" or "any_l2")."""
    return next(key for norm, key, _ in GROUPS if ATTACKS[names[0]].norm == norm)


def run_attacks(ctx: Context, clean: torch.Tensor, outcomes: dict) -> tuple[dict, list[str], dict]:
    """All configured attacks of both norms: (attacks results, warnings, eps lists per attack)."""
    results, eps_of = {}, {}
    for norm, any_key, field in GROUPS:
        names = [a for a in ATTACKS if a in ctx.cfg.attacks and ATTACKS[a].norm == norm]
        epsilons = getattr(ctx.cfg, field)
        if names and epsilons:
            per_attack, worst = run_group(ctx, names, epsilons, clean, outcomes)
            results.update(per_attack)
            results[any_key] = worst
            labels = lambda es: [per_255(e) for e in es]  # noqa: E731  # `sanity` reads results by label
            eps_of.update({a: labels(attack_epsilons(ctx, a, epsilons)) for a in names} | {any_key: labels(epsilons)})
    warnings = sanity(results, eps_of) + black_box_warnings(results, ctx.cfg.cascade, outcomes)
    return results, warnings, eps_of


def run(cfg: EvaluateConfig, seed: int, data_dir: Path, model_path: Path, out: Path, threads: int = 1) -> dict:
    rt = runtime.setup(cfg.device, cfg.precision, threads)
    runtime.seed_everything(seed)
    state = load_classifier_state(model_path)  # verified against finetune's recorded sha256
    model = classifier_from_state(state, rt.device)  # a dual-BN encoder's branch is the one it was fine-tuned with
    for p in model.parameters():
        p.requires_grad_(False)  # gradients w.r.t. the input only
    test = load_split(data_dir, "test", rt.device)
    n = min(cfg.max_samples, len(test))
    ctx = Context(model, test, cfg, rt, seed, n, Partials(Path(out), fingerprint(cfg, seed, data_dir, model_path)))
    clean = clean_flags(model, test, n, cfg.batch_size)
    start = time.perf_counter()
    outcomes: dict = {}
    results, warnings, _ = run_attacks(ctx, clean, outcomes)
    steps_record, steps_warnings = steps_check(ctx)
    sensitivity = sensitivity_record(ctx)
    report = {"clean_accuracy": float(clean.float().mean()), "samples": n,
              "epsilons_255": [per_255(e) for e in cfg.epsilons], "epsilons_l2": cfg.epsilons_l2,
              "cascade": cfg.cascade, "cascade_order": [a for a in ATTACKS if a in cfg.attacks], "attacks": results,
              "attack_settings": cfg.attacks, "attack_parameters": attack_parameters(ctx, [a for a in ATTACKS if a in cfg.attacks]),
              **run_corruptions(ctx, clean), "checks": {"pgd_steps": steps_record}, "sensitivity": sensitivity,
              "warnings": warnings + steps_warnings,
              "runtime": rt.describe(), "seconds": round(time.perf_counter() - start, 3), "resumed_units": ctx.partials.resumed,
              "seed": seed, "model": str(model_path), "bn_branch": state.get("bn_branch"),
              # paired designs: which of the first `samples` test samples each number counts as correct
              "outcomes": {"clean": bits(clean), "attacks": outcomes}}
    write_json(out, sealed({**report, "environment": environment()}))  # the report verifies the seal
    ctx.partials.remove()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = stage_cli("evaluate", __doc__, argv, "JSON of the `evaluate` section", gpu=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="finetune classifier checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="output JSON")
    args = parser.parse_args(argv)
    r = run(from_json(EvaluateConfig, args.cfg, "evaluate"), args.seed, args.data, args.model, args.out, args.threads)
    print(f"evaluate: clean {r['clean_accuracy']:.4f}, {len(r['warnings'])} warnings", file=sys.stderr)


if __name__ == "__main__":
    main()
