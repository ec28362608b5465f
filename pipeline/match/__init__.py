"""Stage `match`: the supervised encoder at the CSL model's clean accuracy, for the paper's matched comparison.

A learner with lower clean accuracy has fewer samples an attack can flip, so comparing robust
accuracy across learners of different clean accuracy mixes two things. The paper compares CSL
and supervised learning at equal clean accuracy; this stage makes that comparison cacheable:

- the supervised pretraining writes `snapshots.pt`: its encoder at evenly spaced steps of its
  training (`pretrain.methods.<supervised>.snapshots`);
- for every snapshot this stage fits the SLF head (finetune's `slf` settings, frozen encoder) and
  measures its clean accuracy on the test split, as finetune measures the CSL model's (`test_acc`
  in its SLF metrics.json, the target; reading finetune's number rather than evaluate's keeps the
  match independent of the evaluate settings);
- it keeps the snapshot whose clean accuracy is closest to the target (the earliest on a tie) and
  writes it as a finetune-style classifier, which evaluate attacks as the pseudo-method
  `<supervised>_matched`.

Matching uses the test samples' clean accuracy by design (that is the quantity being equalised;
robust accuracy, the measured outcome, plays no part in the choice). `metrics.json` lists every
snapshot's accuracy and says whether the match is within `match.tolerance`; the claims section
prints both clean accuracies next to claim C1c.

    python -m pipeline.match --cfg '<json: {finetune: ..., match: ...}>' --seed 0 --data results/decode/digits \
        --snapshots results/pretrain/digits/supervised/seed0/snapshots.pt \
        --target results/finetune/digits/simclr/seed0/slf/metrics.json \
        --out-model results/match/digits/seed0/classifier.pt --out-metrics results/match/digits/seed0/metrics.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pipeline import runtime
from pipeline.config import FinetuneConfig, MatchConfig, from_dict
from pipeline.data import load_split
from pipeline.environment import environment
from pipeline.finetune import checkpoint, fit_slf
from pipeline.io import load_torch, read_json, save_torch, sealed, sha256_file, verify_sibling, write_json
from pipeline.logs import stage_cli
from pipeline.models import build_encoder


def closest(accuracies: list[float], target: float) -> int:
    """Index of the accuracy closest to `target`, the earliest on a tie."""
    return min(range(len(accuracies)), key=lambda i: (abs(accuracies[i] - target), i))


def run(finetune: FinetuneConfig, cfg: MatchConfig, seed: int, data_dir: Path, snapshots: Path, target: Path,
        out_model: Path, out_metrics: Path, threads: int = 1) -> dict:
    rt = runtime.setup(finetune.device, "fp32", threads)
    runtime.seed_everything(seed)
    start = time.perf_counter()
    goal = read_json(target)
    train, test = load_split(data_dir, "train", rt.device), load_split(data_dir, "test", rt.device)
    classes = read_json(data_dir / "meta.json")["num_classes"]
    verify_sibling(snapshots, "metrics.json", "snapshots_sha256", "pretrain")
    saved = load_torch(snapshots)
    if not saved["snapshots"]:
        raise ValueError(f"{snapshots} holds no snapshot: set pretrain.methods.<supervised>.snapshots > 0 to run the match stage")
    candidates, models = [], []
    for snap in saved["snapshots"]:
        encoder = build_encoder(saved["model_args"])
        encoder.load_state_dict(snap["encoder"])
        model, acc = fit_slf(encoder.to(rt.device), finetune, "match", seed, train, test, classes)
        candidates.append({"step": snap["step"], "epoch": snap["epoch"], "clean_accuracy": acc["test"], "train_acc": acc["train"]})
        models.append(model)
        print(f"match: step {snap['step']} (epoch {snap['epoch']:.2f}) clean accuracy {acc['test']:.4f}", file=sys.stderr)
    chosen = closest([c["clean_accuracy"] for c in candidates], goal["test_acc"])
    difference = candidates[chosen]["clean_accuracy"] - goal["test_acc"]
    metrics = {"target_clean_accuracy": goal["test_acc"], "target": str(target), "samples": len(test),
               "candidates": candidates, "chosen": chosen, "chosen_step": candidates[chosen]["step"],
               "clean_accuracy": candidates[chosen]["clean_accuracy"], "difference": difference,
               "within_tolerance": abs(difference) <= cfg.tolerance, "tolerance": cfg.tolerance,
               "model_args": saved["model_args"], "bn_branch": None, "seed": seed,
               "seconds": round(time.perf_counter() - start, 3), "runtime": rt.describe()}
    if not metrics["within_tolerance"]:
        print(f"match: warning: closest snapshot is {100 * difference:+.1f} points from the target (tolerance "
              f"{100 * cfg.tolerance:.1f}); more snapshots (pretrain.methods.<supervised>.snapshots) match closer", file=sys.stderr)
    save_torch(out_model, checkpoint(models[chosen], metrics, "slf"))
    metrics["model_sha256"] = sha256_file(out_model)  # evaluate verifies it
    write_json(out_metrics, sealed({**metrics, "environment": environment()}))  # evaluate and the report verify the seal
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = stage_cli("match", __doc__, argv, "JSON {finetune: the finetune section (its slf settings), match: the match section}",
                       gpu=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--snapshots", type=Path, required=True, help="the supervised pretraining's snapshots.pt")
    parser.add_argument("--target", type=Path, required=True, help="the CSL model's SLF metrics.json (its test_acc)")
    parser.add_argument("--out-model", type=Path, required=True)
    parser.add_argument("--out-metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    cfg = json.loads(args.cfg)
    m = run(from_dict(FinetuneConfig, cfg["finetune"], "finetune"), from_dict(MatchConfig, cfg["match"], "match"), args.seed,
            args.data, args.snapshots, args.target, args.out_model, args.out_metrics, args.threads)
    print(f"match: step {m['chosen_step']} clean {m['clean_accuracy']:.4f} vs target {m['target_clean_accuracy']:.4f}", file=sys.stderr)

