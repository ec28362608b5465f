"""The pretrain stage's command line (`python -m pipeline.pretrain --help`)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import distributed
from pipeline.config import PretrainConfig, from_json
from pipeline.logs import stage_cli
from pipeline.pretrain.loop import run


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run the stage; a job with several GPUs first relaunches itself under torchrun."""
    stage_doc = sys.modules[__package__].__doc__  # the package's docstring describes the stage
    parser = stage_cli("pretrain", stage_doc, argv, "JSON: device, precision, budget_mb, model, method")
    distributed.relaunch_if_multi_gpu("pipeline.pretrain", sys.argv[1:] if argv is None else argv)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="decode output folder")
    parser.add_argument("--mined", type=Path, default=None, help="mine output (.npz) for false_negatives: mined")
    parser.add_argument("--out-encoder", type=Path, required=True)
    parser.add_argument("--out-metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    cfg = from_json(PretrainConfig, args.cfg, "pretrain")
    if cfg.method.false_negatives == "mined" and args.mined is None:
        parser.error("false_negatives: mined needs --mined <mine output>")
    metrics = run(cfg, args.cfg, args.seed, args.data, args.mined, args.out_encoder, args.out_metrics, args.threads)
    if "knn_acc" in metrics:  # rank 0
        print(f"pretrain: kNN accuracy {metrics['knn_acc']:.4f} in {metrics['train_seconds']} s", file=sys.stderr)
