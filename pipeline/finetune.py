"""Stage `finetune`: a classifier on top of a pretrained encoder.

Protocol `slf` (standard linear fine-tuning, the linear-evaluation protocol): the encoder
is frozen, its features of the un-augmented training split are computed once, and only a
linear head is trained on them (Adam). The encoder's weights are hashed before and after
and the stage fails if they changed (a "linear eval" that is not frozen is a known trap).

    python -m pipeline.finetune --cfg '<json of finetune>' --protocol slf --seed 0 \
        --data results/decode/digits --encoder .../encoder.pt --out-model .../classifier.pt \
        --out-metrics .../metrics.json
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline import runtime
from pipeline.classifier import load_encoder
from pipeline.config import FinetuneConfig, from_json
from pipeline.data import batch_indices, embed, load_split
from pipeline.io import read_json, save_torch, write_json
from pipeline.models import Classifier


def weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_linear_head(feats: torch.Tensor, labels: torch.Tensor, classes: int, cfg: FinetuneConfig, seed: int) -> torch.nn.Linear:
    """Adam on precomputed features (N, D); returns the trained head."""
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(feats.shape[1], classes).to(feats.device)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    for _ in range(cfg.epochs):
        for idx in batch_indices(len(labels), cfg.batch_size, shuffle=True, drop_last=False, generator=gen):
            idx = idx.to(feats.device)
            loss = F.cross_entropy(head(feats[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return head


def run_slf(cfg: FinetuneConfig, seed: int, data_dir: Path, encoder_path: Path, rt) -> tuple[Classifier, dict]:
    encoder, state = load_encoder(encoder_path, rt.device)
    for p in encoder.parameters():
        p.requires_grad_(False)
    before = weights_digest(encoder)
    train, test = load_split(data_dir, "train", rt.device), load_split(data_dir, "test", rt.device)
    classes = read_json(data_dir / "meta.json")["num_classes"]
    bs = max(cfg.batch_size, 256)
    train_feats, test_feats = embed(encoder, train, bs), embed(encoder, test, bs)
    head = train_linear_head(train_feats, train.y, classes, cfg, seed)
    if weights_digest(encoder) != before:
        raise RuntimeError("the frozen encoder changed during linear fine-tuning")
    model = Classifier(encoder, classes)
    model.head.load_state_dict(head.state_dict())
    with torch.no_grad():
        acc = {name: float((head(f).argmax(1) == s.y).float().mean()) for name, f, s in (("train", train_feats, train), ("test", test_feats, test))}
    return model, {"train_acc": acc["train"], "test_acc": acc["test"], "encoder_frozen": True, "model_args": state["model_args"]}


PROTOCOLS = {"slf": run_slf}


def run(cfg: FinetuneConfig, protocol: str, seed: int, data_dir: Path, encoder_path: Path, out_model: Path,
        out_metrics: Path, threads: int = 1) -> dict:
    rt = runtime.setup(cfg.device, "fp32", threads)
    runtime.seed_everything(seed)
    start = time.perf_counter()
    model, metrics = PROTOCOLS[protocol](cfg, seed, data_dir, encoder_path, rt)
    metrics.update(protocol=protocol, seed=seed, seconds=round(time.perf_counter() - start, 3), runtime=rt.describe(), config=cfg.__dict__)
    save_torch(out_model, {"model": model.state_dict(), "model_args": metrics["model_args"],
                           "num_classes": model.head.out_features, "protocol": protocol})
    write_json(out_metrics, metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="JSON of the `finetune` section")
    parser.add_argument("--protocol", required=True, choices=sorted(PROTOCOLS))
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, required=True)
    parser.add_argument("--out-model", type=Path, required=True)
    parser.add_argument("--out-metrics", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    m = run(from_json(FinetuneConfig, args.cfg, "finetune"), args.protocol, args.seed, args.data, args.encoder,
            args.out_model, args.out_metrics, args.threads)
    print(f"finetune {args.protocol}: train {m['train_acc']:.4f} test {m['test_acc']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
