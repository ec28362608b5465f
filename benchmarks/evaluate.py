"""Evaluate speed and fidelity (issue 8): this stage's attacks against the libraries called directly.

In one process, on one device, with one model (normalisation inside, eval mode, fp32):

  (1) PGD-10 (Linf 1/255, step eps/4, random start) through this stage's unit
      (`pipeline.evaluate.attack_samples`: uint8 data on the device, batching, prediction,
      bound checks) against `torchattacks.PGD` on ready-made float batches plus a
      prediction pass. Prints images/s of both, their ratio (target >= 1.0) and both robust
      accuracies (different random starts, so close but not identical).
  (2) AutoAttack (Linf 1/255, version standard) through this stage's unit against calling
      `pyautoattack.AutoAttack(...).run_standard_evaluation` directly with the same seed,
      data and batch size. Prints both accuracies (target: equal) and times (target: the
      stage no slower, i.e. ratio stage/direct <= 1.05).

Labels are the model's own clean predictions, so every sample starts correct and every
attack has the full set to work on (a random-weight network is a fine speed proxy).

CPU (reduced): resnet_small width 16 on 32x32 images, PGD on 256 images, AutoAttack on 32
images with 10 APGD/FAB iterations and 100 Square queries (not the published budget; the
same for both sides). CUDA (full): torchvision ResNet-18 (CIFAR stem) on 32x32 images, PGD
on 10,000 images at batch 512, AutoAttack at the standard budget on 1,000 images. Timings
alternate between the two sides and keep the fastest round, which damps the noise of a
shared machine.

    python benchmarks/evaluate.py                # CPU: reduced size
    python benchmarks/evaluate.py --device cuda  # full size
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's `pipeline`

from pipeline import evaluate, runtime  # noqa: E402
from pipeline.attacks.autoattack import build  # noqa: E402
from pipeline.config import EvaluateConfig, from_dict  # noqa: E402
from pipeline.data import Split  # noqa: E402
from pipeline.models import Classifier, build_encoder  # noqa: E402

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
EPS = 1 / 255  # a random-weight network has small margins: at 8/255 PGD alone breaks every sample


def sizes(device: str) -> dict:
    if device == "cuda":
        return {"backbone": "resnet18", "width": 64, "pgd_n": 10_000, "aa_n": 1_000, "batch": 512,
                "aa": {"steps": 100, "square_queries": 5000, "n_target_classes": 9}, "rounds": 2}
    return {"backbone": "resnet_small", "width": 16, "pgd_n": 256, "aa_n": 32, "batch": 128,
            "aa": {"steps": 10, "square_queries": 100, "n_target_classes": 9}, "rounds": 2}


def stage_config(device: str, batch: int, aa: dict) -> EvaluateConfig:
    """An evaluate config with the schema's defaults (filled by the workflow's own validator)."""
    from snakemake.utils import validate

    config = {"evaluate": {"device": device, "batch_size": batch, "epsilons": [EPS * 255],
                           "attacks": {"pgd": {"steps": 10, "step_size": 0.25, "random_start": True}, "autoattack": dict(aa)}}}
    validate(config, str(SCHEMA), set_default=True)
    return from_dict(EvaluateConfig, config["evaluate"], "evaluate")


def make_model_and_data(s: dict, rt: runtime.Runtime, n: int) -> tuple[torch.nn.Module, Split]:
    """A frozen classifier and n random uint8 images labelled with its own predictions."""
    torch.manual_seed(0)
    args = {"backbone": s["backbone"], "width": s["width"], "small_input": True, "mean": [0.5] * 3, "std": [0.25] * 3}
    model = Classifier(build_encoder(args), 10).to(rt.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, device=rt.device)
    split = Split(x=x, y=torch.zeros(n, dtype=torch.long, device=rt.device), device=rt.device)
    with torch.no_grad():
        split.y = torch.cat([model(split.batch(i)).argmax(1) for i in torch.arange(n, device=rt.device).split(s["batch"])])
    return model, split


def timed(fn, rt: runtime.Runtime) -> tuple[float, object]:
    if rt.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if rt.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def stage_unit(ctx: evaluate.Context, name: str, n: int, key: str, seed: int) -> float:
    """Robust accuracy of one attack through the stage's unit, with fresh partial files (no resuming)."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = dataclasses.replace(ctx, partials=evaluate.Partials(Path(tmp) / "robustness.json", "benchmark"))
        r = evaluate.attack_samples(ctx, name, EPS, torch.arange(n), key, seed)
    return sum(r["correct"]) / n


def torchattacks_pgd(model, split: Split, n: int, batch: int) -> float:
    import torchattacks

    attack = torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=True)
    correct = 0
    for idx in torch.arange(n, device=split.device).split(batch):
        x, y = split.batch(idx).contiguous(), split.y[idx]
        x_adv = attack(x, y)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == y).sum())
    return correct / n


def direct_autoattack(model, split: Split, n: int, batch: int, aa: dict, seed: int) -> float:
    """pyautoattack called directly (our `build` only sets its iteration budget the same way on both sides)."""
    x, y = split.batch(torch.arange(n, device=split.device)).contiguous(), split.y[:n]
    attack = build(model, 10, split.device, eps=EPS, version="standard", seed=seed, **aa)
    _, y_adv = attack.run_standard_evaluation(x, y, batch_size=batch)
    return float((y_adv == y).float().mean())


def best_of(rounds: int, rt: runtime.Runtime, **sides) -> dict:
    """Alternate the sides `rounds` times; keep each side's fastest time and its last result."""
    best = {k: (float("inf"), None) for k in sides}
    for _ in range(rounds):
        for k, fn in sides.items():
            t, out = timed(fn, rt)
            best[k] = (min(best[k][0], t), out)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    rt = runtime.setup(args.device, "fp32", args.threads)
    s = sizes(rt.device.type)
    cfg = stage_config(args.device, s["batch"], s["aa"])
    model, split = make_model_and_data(s, rt, max(s["pgd_n"], s["aa_n"]))
    ctx = evaluate.Context(model, split, cfg, rt, 0, len(split), None)  # type: ignore[arg-type]  # partials: per call
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    name = torch.cuda.get_device_name(rt.device) if rt.is_cuda else cpu
    print(f"device: {name}; model: {s['backbone']} width {s['width']}, 32x32, fp32; torch {torch.__version__}")

    pgd = best_of(s["rounds"], rt, stage=lambda: stage_unit(ctx, "pgd", s["pgd_n"], "pgd@1.0", 0),
                  torchattacks=lambda: torchattacks_pgd(model, split, s["pgd_n"], s["batch"]))
    rate = {k: s["pgd_n"] / t for k, (t, _) in pgd.items()}
    print(f"PGD-10 on {s['pgd_n']} images: stage {rate['stage']:.1f} img/s (acc {pgd['stage'][1]:.4f}), "
          f"torchattacks {rate['torchattacks']:.1f} img/s (acc {pgd['torchattacks'][1]:.4f}); "
          f"stage/torchattacks throughput {rate['stage'] / rate['torchattacks']:.2f}")

    seed = evaluate.unit_seed(0, "autoattack@1.0")
    aa = best_of(1 if rt.is_cuda else s["rounds"], rt, stage=lambda: stage_unit(ctx, "autoattack", s["aa_n"], "autoattack@1.0", seed),
                 direct=lambda: direct_autoattack(model, split, s["aa_n"], s["batch"], s["aa"], seed))
    budget = "standard budget" if s["aa"]["steps"] == 100 else f"reduced budget {s['aa']}"
    print(f"AutoAttack ({budget}) on {s['aa_n']} images: stage {aa['stage'][0]:.2f} s (acc {aa['stage'][1]:.4f}), "
          f"pyautoattack direct {aa['direct'][0]:.2f} s (acc {aa['direct'][1]:.4f}); "
          f"time stage/direct {aa['stage'][0] / aa['direct'][0]:.2f}; same accuracy: {aa['stage'][1] == aa['direct'][1]}")


if __name__ == "__main__":
    main()
