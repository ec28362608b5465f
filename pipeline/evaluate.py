"""Stage `evaluate`: clean and adversarial accuracy of one classifier on the test split.

Every attack of the registry named in the config runs at every epsilon (Linf, units of
1/255) on inputs in [0, 1], model in eval mode, in float32 unless `precision: bf16`. The
result records per attack and epsilon the accuracy, the sample count, the time and the
throughput, plus the per-sample worst case over all attacks ("any"), and sanity checks:
||x_adv - x||_inf <= eps and x_adv in [0, 1], robust <= clean, robust accuracy
non-increasing in epsilon.

    python -m pipeline.evaluate --cfg '<json of evaluate>' --seed 0 --data results/decode/digits \
        --model .../classifier.pt --out .../robustness.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from pipeline import runtime
from pipeline.attacks import ATTACKS
from pipeline.classifier import load_classifier
from pipeline.config import EvaluateConfig, from_json
from pipeline.data import Split, batch_indices, load_split
from pipeline.io import write_json

BOUND_TOLERANCE = 1e-6  # float32 rounding of x + delta


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


def attack_split(model, split: Split, n: int, cfg: EvaluateConfig, rt, name: str, eps: float, gen) -> dict:
    """Run one attack at one eps over the first n samples; per-sample correctness and bound checks."""
    correct, max_delta, in_range = [], 0.0, True
    start = time.perf_counter()
    settings = cfg.attacks[name]
    for idx in batch_indices(n, cfg.batch_size, shuffle=False, drop_last=False):
        idx = idx.to(rt.device)
        x, y = split.batch(idx), split.y[idx]
        extra = {"generator": gen} if name == "pgd" else {}
        with rt.autocast():
            x_adv = ATTACKS[name](model, x, y, eps=eps, **settings, **extra)
        max_delta = max(max_delta, float((x_adv - x).abs().max()))
        in_range &= bool((x_adv >= 0).all() and (x_adv <= 1).all())
        correct.append(predict(model, x_adv) == y)
    seconds = time.perf_counter() - start
    flags = torch.cat(correct)
    return {"correct": flags, "accuracy": float(flags.float().mean()), "seconds": round(seconds, 4),
            "samples_per_s": round(n / seconds, 1), "max_linf": max_delta,
            "within_eps": max_delta <= eps + BOUND_TOLERANCE, "in_range": in_range}


def sanity(results: dict, clean: float, epsilons: list[float]) -> list[str]:
    """Warnings the report shows in its checks section (empty when all is well)."""
    warnings = []
    for name, per_eps in results.items():
        accs = [per_eps[str(e)]["accuracy"] for e in epsilons]
        for e, r in per_eps.items():
            if not (r["within_eps"] and r["in_range"]):
                warnings.append(f"{name} eps {e}: perturbation outside the eps-ball or [0,1] (max {r['max_linf']:.6f})")
            if r["accuracy"] > clean + 1e-9:
                warnings.append(f"{name} eps {e}: robust accuracy {r['accuracy']:.4f} above clean {clean:.4f}")
        if any(b > a + 1e-9 for a, b in zip(accs, accs[1:])):
            warnings.append(f"{name}: robust accuracy increases with eps {accs} (gradient masking or too few steps?)")
    return warnings


def run(cfg: EvaluateConfig, seed: int, data_dir: Path, model_path: Path, out: Path, threads: int = 1) -> dict:
    rt = runtime.setup(cfg.device, cfg.precision, threads)
    runtime.seed_everything(seed)
    gen = torch.Generator(device=rt.device).manual_seed(seed)
    model = load_classifier(model_path, rt.device)
    for p in model.parameters():
        p.requires_grad_(False)  # gradients w.r.t. the input only
    test = load_split(data_dir, "test", rt.device)
    n = min(cfg.max_samples, len(test))
    clean_flags = torch.cat([predict(model, test.batch(i.to(rt.device))) == test.y[i.to(rt.device)]
                             for i in batch_indices(n, cfg.batch_size, shuffle=False, drop_last=False)])
    clean = float(clean_flags.float().mean())
    results, worst = {}, {}
    for name in cfg.attacks:
        results[name] = {}
        for eps in cfg.epsilons:
            r = attack_split(model, test, n, cfg, rt, name, eps / 255, gen)
            worst[eps] = worst.get(eps, clean_flags) & r.pop("correct")
            results[name][str(eps)] = r
            print(f"evaluate {name} eps {eps}/255: accuracy {r['accuracy']:.4f} ({r['samples_per_s']:.0f} samples/s)", file=sys.stderr)
    results["any"] = {str(e): {"accuracy": float(w.float().mean()), "within_eps": True, "in_range": True, "max_linf": 0.0}
                      for e, w in worst.items()}
    report = {"clean_accuracy": clean, "samples": n, "epsilons_255": cfg.epsilons, "attacks": results,
              "attack_settings": cfg.attacks, "warnings": sanity(results, clean, cfg.epsilons),
              "runtime": rt.describe(), "seed": seed, "model": str(model_path)}
    write_json(out, report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="JSON of the `evaluate` section")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="finetune classifier checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="output JSON")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    r = run(from_json(EvaluateConfig, args.cfg, "evaluate"), args.seed, args.data, args.model, args.out, args.threads)
    print(f"evaluate: clean {r['clean_accuracy']:.4f}, {len(r['warnings'])} warnings", file=sys.stderr)


if __name__ == "__main__":
    main()
