"""The evaluate stage's cost of its steps check, at `report.primary_eps` only against at every eps its attack runs at.

The default study checks APGD-CE's convergence (20 against 40 steps on 100 samples) at each
dataset's primary eps (`evaluate.pgd_steps_check.epsilons: primary`), where the claims are read.
Before, it ran at each eps APGD-CE runs at (8/255 and 16/255). This script measures what that
choice saves, in one run: it calls the evaluate stage in-process (`pipeline.evaluate.run`, one
thread, CPU) on a finished study's own classifiers, with both settings alternately, each into a
fresh folder (nothing resumed), and prints the CPU seconds per job of each setting and their ratio.

Needs a finished study (its decoded data and SLF classifiers):

    snakemake --cores all && python benchmarks/steps_check.py results
    python benchmarks/steps_check.py results --seeds 0 1 --methods simclr supervised

Defaults: seed 0 of every method of `config/config.yaml`, both datasets. A shared host moves the
seconds but hardly the ratio: the two settings alternate job by job.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's `pipeline`

from pipeline import evaluate  # noqa: E402
from pipeline.config import EvaluateConfig, from_dict  # noqa: E402
from pipeline.grid import evaluate_slice  # noqa: E402


def settings(config: dict, dataset: str) -> dict[str, EvaluateConfig]:
    """The evaluate config a dataset's job receives (check at the primary eps) and the variant checking every eps."""
    primary = evaluate_slice(config, dataset)
    every = copy.deepcopy(primary)
    check = every["pgd_steps_check"]
    own = every["attacks"][check["attack"]].get("epsilons") or every["epsilons"]
    check["epsilons"] = list(own)
    return {"primary": from_dict(EvaluateConfig, {**primary, "device": "cpu"}, "evaluate"),
            "every": from_dict(EvaluateConfig, {**every, "device": "cpu"}, "evaluate")}


def cpu_seconds(cfg: EvaluateConfig, data: Path, model: Path) -> float:
    """CPU seconds of one evaluate job (one thread, so also its wall time), written to a fresh folder."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        evaluate.run(cfg, 0, data, model, Path(tmp) / "robustness.json", threads=1)
        return time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a finished study's results folder")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml", help="the study file it ran")
    parser.add_argument("--methods", nargs="*", help="default: every method of the study")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    args = parser.parse_args(argv)
    from snakemake.utils import validate

    config = yaml.safe_load(args.config.read_text())
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"), set_default=True)
    methods = args.methods or list(config["pretrain"]["methods"])
    torch.set_num_threads(1)
    print(f"host: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, CPU")
    totals = {"primary": 0.0, "every": 0.0}
    for dataset in config["datasets"]:
        variants = settings(config, dataset)
        labels = {k: v.pgd_steps_check.epsilons or "largest" for k, v in variants.items()}
        print(f"{dataset}: steps check at {labels['primary']} (primary) against {labels['every']} (every eps)")
        for method in methods:
            for seed in args.seeds:
                model = args.results / "finetune" / dataset / method / f"seed{seed}" / "slf" / "classifier.pt"
                if not model.exists():
                    sys.exit(f"{model}: missing; run the study first (snakemake --cores all)")
                seconds = {k: cpu_seconds(cfg, args.results / "decode" / dataset, model) for k, cfg in variants.items()}
                for k, s in seconds.items():
                    totals[k] += s
                print(f"  {method} seed {seed}: {seconds['primary']:.1f} s primary, {seconds['every']:.1f} s every eps "
                      f"({seconds['primary'] / seconds['every']:.2f}x)", flush=True)
    print(f"total: {totals['primary']:.1f} CPU-s primary, {totals['every']:.1f} CPU-s every eps; "
          f"ratio {totals['primary'] / totals['every']:.3f} (saving {1 - totals['primary'] / totals['every']:.1%} of evaluate's CPU)")


if __name__ == "__main__":
    main()
