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

import sys
import time
from pathlib import Path

import torch

from pipeline import runtime
from pipeline.attacks import ATTACKS
from pipeline.budget import per_255
from pipeline.config import EvaluateConfig, from_json, to_dict
from pipeline.data import load_split
from pipeline.environment import environment
from pipeline.evaluate.attacking import GROUPS, attack_epsilons, attack_parameters, attack_samples, run_group
from pipeline.evaluate.checks import black_box_warnings, sanity, steps_check
from pipeline.evaluate.measures import clean_flags, run_corruptions, sensitivity_record
from pipeline.evaluate.units import Context, Partials, bits, fingerprint, unit_seed
from pipeline.io import sealed, write_json
from pipeline.logs import stage_cli
from pipeline.models.classifier import classifier_from_state, load_classifier_state

__all__ = ["Context", "Partials", "attack_samples", "black_box_warnings", "main", "run", "sanity", "unit_seed"]


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
    order = [a for a in ATTACKS if a in cfg.attacks]  # the registry's, the cascade's
    report = {"clean_accuracy": float(clean.float().mean()), "samples": n,
              "epsilons_255": [per_255(e) for e in cfg.epsilons], "epsilons_l2": cfg.epsilons_l2,
              "cascade": cfg.cascade, "cascade_order": order, "attacks": results,
              "attack_settings": to_dict(cfg.attacks), "attack_parameters": attack_parameters(ctx, order),
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

