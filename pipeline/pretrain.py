"""Stage `pretrain`: one encoder per (dataset, method, seed).

Methods (config `pretrain.methods.<name>.loss`): supervised cross-entropy, SupCon, SimCLR
(NT-Xent) and focal-InfoNCE, every one with the same batched on-device augmentations;
contrastive losses take a false-negative mask from oracle labels or from the mine
stage's file, applied by elimination or attraction.

The data stays on the device as uint8; augmentation is batched and per-sample random.
A checkpoint is written atomically every `checkpoint_every` epochs and a rerun resumes
from it; a non-finite loss stops the stage and keeps the last good checkpoint.

    python -m pipeline.pretrain --cfg '<json>' --seed 0 --data results/decode/digits \
        [--mined results/mine/digits/seed0/false_negatives.npz] \
        --out-encoder .../encoder.pt --out-metrics .../metrics.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import runtime
from pipeline.augment import augment
from pipeline.config import PretrainConfig, from_json
from pipeline.data import Split, batch_indices, embed, load_split
from pipeline.io import load_torch, read_json, save_torch, write_json
from pipeline.knn import knn_accuracy
from pipeline.losses import CONTRASTIVE_LOSSES, neighbour_mask, same_label_mask, supcon
from pipeline.models import Encoder, projection_head
from pipeline.optim import build_optimizer, warmup_cosine


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


class MinedFalseNegatives:
    """The mine stage's output: pseudo-labels (N,) or a neighbour table (N, K), on the device."""

    def __init__(self, path: Path, device: torch.device) -> None:
        with np.load(path, allow_pickle=False) as f:
            self.labels = torch.from_numpy(f["labels"]).to(device) if "labels" in f else None
            self.neighbours = torch.from_numpy(f["neighbours"]).to(device) if "neighbours" in f else None
        if self.labels is None and self.neighbours is None:
            raise ValueError(f"{path}: expected an array 'labels' or 'neighbours'")

    def mask(self, idx: torch.Tensor) -> torch.Tensor:
        """Bool (2B, 2B) false-negative mask for the batch with dataset indices `idx` (B,)."""
        if self.labels is not None:
            return same_label_mask(self.labels[idx])
        return neighbour_mask(self.neighbours[idx], idx)


def build_nets(cfg: PretrainConfig, meta: dict, is_video: bool) -> nn.ModuleDict:
    """Encoder plus the method's head: a linear classifier for CE, an MLP projector otherwise."""
    m = cfg.model
    encoder = Encoder(m.backbone, m.width, m.small_input, meta["mean"], meta["std"])
    if cfg.method.loss == "ce":
        head: nn.Module = nn.Linear(encoder.out_dim, meta["num_classes"])
    else:
        head = projection_head(encoder.out_dim, m.proj_hidden, m.proj_dim)
    return nn.ModuleDict({"encoder": encoder, "head": head})


def fn_mask(cfg: PretrainConfig, y: torch.Tensor, idx: torch.Tensor, mined: MinedFalseNegatives | None) -> torch.Tensor | None:
    if cfg.method.false_negatives == "oracle":
        return same_label_mask(y)
    if cfg.method.false_negatives == "mined":
        assert mined is not None, "false_negatives: mined needs the mine stage's file (--mined)"
        return mined.mask(idx)
    return None


def method_loss(cfg: PretrainConfig, nets: nn.ModuleDict, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                mined: MinedFalseNegatives | None, gen: torch.Generator) -> torch.Tensor:
    """The method's loss on one uint8-decoded float batch x (B,C,[T,]H,W) with labels y (B,)."""
    spec = cfg.model.augment
    if cfg.method.loss == "ce":  # same augmentation pipeline, one view
        return F.cross_entropy(nets["head"](nets["encoder"](augment(x, spec, gen))).float(), y)
    v1, v2 = augment(x, spec, gen), augment(x, spec, gen)
    z = nets["head"](nets["encoder"](torch.cat([v1, v2])))  # one pass: BN sees both views
    z1, z2 = z.chunk(2)
    t = cfg.model.temperature
    if cfg.method.loss == "supcon":
        return supcon(z1, z2, y, temperature=t)
    extra = {"margin": cfg.method.focal_margin} if cfg.method.loss == "focal_infonce" else {}
    return CONTRASTIVE_LOSSES[cfg.method.loss](
        z1, z2, temperature=t, fn_mask=fn_mask(cfg, y, idx, mined), fn_mode=cfg.method.fn_mode, **extra
    )


def config_fingerprint(cfg_json: str, seed: int, data_dir: Path) -> str:
    """Identifies a run: a checkpoint from other settings is never resumed."""
    meta = (data_dir / "meta.json").read_bytes()
    return hashlib.sha256(cfg_json.encode() + str(seed).encode() + meta).hexdigest()[:16]


def save_checkpoint(path: Path, nets, opt, sched, epoch: int, gens, history: list, fingerprint: str) -> None:
    save_torch(path, {
        "nets": nets.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch,
        "gens": [g.get_state() for g in gens], "history": json.dumps(history), "fingerprint": fingerprint,
    })


def try_resume(path: Path, nets, opt, sched, gens, fingerprint: str) -> tuple[int, list]:
    """Load a matching checkpoint; returns (epochs done, history). (0, []) when there is none."""
    if not path.exists():
        return 0, []
    state = load_torch(path)
    if state["fingerprint"] != fingerprint:
        print(f"pretrain: ignoring {path}: it was written with other settings", file=sys.stderr)
        return 0, []
    nets.load_state_dict(state["nets"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    for g, s in zip(gens, state["gens"]):
        g.set_state(s)
    print(f"pretrain: resumed from {path} after epoch {state['epoch']}", file=sys.stderr)
    return state["epoch"], json.loads(state["history"])


def monitor_knn(nets: nn.ModuleDict, train: Split, test: Split, cfg: PretrainConfig, classes: int) -> float:
    bs = 4 * cfg.model.batch_size
    return knn_accuracy(embed(nets["encoder"], train, bs), train.y, embed(nets["encoder"], test, bs), test.y, cfg.model.knn_k, classes)


def train_epoch(cfg, nets, opt, sched, train: Split, rt, mined, gens, epoch: int) -> dict:
    batch_gen, aug_gen = gens
    nets.train()
    losses, seen, start = [], 0, time.perf_counter()
    for idx in batch_indices(len(train), cfg.model.batch_size, shuffle=True, drop_last=True, generator=batch_gen):
        idx = idx.to(rt.device)
        x = rt.to_memory_format(train.batch(idx))
        with rt.autocast():
            loss = method_loss(cfg, nets, x, train.y[idx], idx, mined, aug_gen)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch + 1}; lower pretrain lr or check the data. "
                                "The last good checkpoint is kept; rerunning resumes from it.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.detach())
        seen += len(idx)
    if rt.is_cuda:
        torch.cuda.synchronize(rt.device)
    seconds = time.perf_counter() - start
    return {"epoch": epoch + 1, "loss": float(torch.stack(losses).mean()), "seconds": round(seconds, 4),
            "samples_per_s": round(seen / seconds, 1)}


def run(cfg: PretrainConfig, cfg_json: str, seed: int, data_dir: Path, mined_path: Path | None,
        out_encoder: Path, out_metrics: Path, threads: int = 1, stop_after: int | None = None) -> dict:
    """Train, checkpointing each `checkpoint_every` epochs; `stop_after` simulates a kill (tests)."""
    rt = runtime.setup(cfg.device, cfg.precision, threads)
    runtime.seed_everything(seed)
    meta = read_json(data_dir / "meta.json")
    train, test = load_split(data_dir, "train", rt.device, cfg.budget_mb), load_split(data_dir, "test", rt.device, cfg.budget_mb)
    if len(train) < cfg.model.batch_size:
        raise ValueError(f"pretrain batch_size {cfg.model.batch_size} exceeds the {len(train)} training samples of {data_dir}")
    nets = runtime.prepare_module(build_nets(cfg, meta, train.is_video), rt, train.is_video)
    mined = MinedFalseNegatives(mined_path, rt.device) if cfg.method.false_negatives == "mined" else None
    lr = cfg.model.lr * cfg.model.batch_size / 256  # lr is per 256 samples
    opt = build_optimizer(list(nets.parameters()), cfg.model.optimizer, lr, cfg.model.weight_decay)
    steps_per_epoch = len(train) // cfg.model.batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(cfg.model.epochs * steps_per_epoch, cfg.model.warmup_epochs * steps_per_epoch))
    gens = [torch.Generator().manual_seed(seed), torch.Generator(device=rt.device).manual_seed(seed + 1)]
    ckpt, fingerprint = out_encoder.with_name("checkpoint.pt"), config_fingerprint(cfg_json, seed, data_dir)
    done, history = try_resume(ckpt, nets, opt, sched, gens, fingerprint)
    for epoch in range(done, cfg.model.epochs):
        stats = train_epoch(cfg, nets, opt, sched, train, rt, mined, gens, epoch)
        if cfg.model.knn_every and (epoch + 1) % cfg.model.knn_every == 0:
            stats["knn_acc"] = monitor_knn(nets, train, test, cfg, meta["num_classes"])
        history.append(stats)
        print(f"pretrain epoch {epoch + 1}/{cfg.model.epochs} loss {stats['loss']:.4f} "
              f"{stats['samples_per_s']:.0f} samples/s {stats.get('knn_acc', '')}", file=sys.stderr, flush=True)
        if (epoch + 1) % cfg.model.checkpoint_every == 0 or epoch + 1 == cfg.model.epochs:
            save_checkpoint(ckpt, nets, opt, sched, epoch + 1, gens, history, fingerprint)
        if stop_after is not None and epoch + 1 >= stop_after:
            return {"stopped_after": epoch + 1}
    metrics = {
        "history": history,
        "knn_acc": monitor_knn(nets, train, test, cfg, meta["num_classes"]),
        "train_seconds": round(sum(h["seconds"] for h in history), 3),
        "peak_memory_mb": runtime.peak_memory_mb(rt),
        "runtime": rt.describe(),
        "config": json.loads(cfg_json),
        "seed": seed,
    }
    model_args = {"backbone": cfg.model.backbone, "width": cfg.model.width, "small_input": cfg.model.small_input,
                  "mean": meta["mean"], "std": meta["std"]}
    save_torch(out_encoder, {"encoder": nets["encoder"].state_dict(), "head": nets["head"].state_dict(),
                             "model_args": model_args, "config": cfg_json, "seed": seed, "knn_acc": metrics["knn_acc"]})
    write_json(out_metrics, metrics)
    ckpt.unlink(missing_ok=True)  # the encoder is the finished output; the checkpoint only served resumption
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="JSON: device, precision, budget_mb, model, method")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="decode output folder")
    parser.add_argument("--mined", type=Path, default=None, help="mine output (.npz) for false_negatives: mined")
    parser.add_argument("--out-encoder", type=Path, required=True)
    parser.add_argument("--out-metrics", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    cfg = from_json(PretrainConfig, args.cfg, "pretrain")
    if cfg.method.false_negatives == "mined" and args.mined is None:
        parser.error("false_negatives: mined needs --mined <mine output>")
    metrics = run(cfg, args.cfg, args.seed, args.data, args.mined, args.out_encoder, args.out_metrics, args.threads)
    print(f"pretrain: kNN accuracy {metrics['knn_acc']:.4f} in {metrics['train_seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
