"""The pretraining loop: epochs of `steps.method_loss`, kNN monitor, checkpoints, metrics; one process or one rank."""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pipeline import distributed, runtime
from pipeline.config import PretrainConfig
from pipeline.data import Split, batch_indices, embed, load_split, prefetched
from pipeline.environment import environment
from pipeline.io import read_json, sealed, sha256_file, write_json
from pipeline.logs import Progress
from pipeline.losses import LOSSES
from pipeline.models.dual_bn import has_dual_bn
from pipeline.optim import build_optimizer, warmup_cosine
from pipeline.pretrain.checkpoint import (
    NonFiniteLoss,
    config_fingerprint,
    encoder_snapshot,
    rerun_note,
    save_checkpoint,
    save_encoder,
    save_snapshots,
    snapshot_steps,
    try_resume,
)
from pipeline.pretrain.context import MinedFalseNegatives, Projector, StepContext, build_nets
from pipeline.pretrain.knn import knn_accuracy
from pipeline.pretrain.steps import method_loss

COMPILE_BACKEND = "inductor"  # tests switch to "eager": inductor needs a C++ toolchain and minutes on CPU


def monitor_knn(nets: nn.ModuleDict, train: Split, test: Split, cfg: PretrainConfig, classes: int) -> float:
    """Weighted kNN test accuracy of the encoder's features (clean BatchNorm, eval mode)."""
    bs = 4 * cfg.model.batch_size
    return knn_accuracy(embed(nets["encoder"], train, bs), train.y, embed(nets["encoder"], test, bs), test.y, cfg.model.knn_k, classes,
                        temperature=cfg.model.knn_temperature)


def fn_stats(counts: torch.Tensor | None) -> dict:
    """Per-epoch false-negative mask quality against the true labels (issue 6's comparison)."""
    if counts is None:
        return {}
    flagged, hits, same, rows = counts.double().tolist()
    return {"fn_per_anchor": round(flagged / rows, 3), "fn_precision": round(hits / flagged, 4) if flagged else None,
            "fn_recall": round(hits / same, 4) if same else None}


def train_step(ctx: StepContext, opt, sched, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One optimiser step; raises NonFiniteLoss before touching the weights."""
    with ctx.rt.autocast():
        loss = method_loss(ctx, x, y, idx)
    reported = distributed.mean_over_ranks(loss.detach())  # every rank takes the same decision below
    if not torch.isfinite(reported):
        raise NonFiniteLoss(f"loss is {reported.item()} at epoch {ctx.epoch + 1}; lower pretrain lr or check the data. "
                            "The last checkpoint with finite weights is kept.")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return reported


def train_epoch(ctx: StepContext, opt, sched, train: Split, batch_gen: torch.Generator,
                on_step: Callable[[int], None] | None = None) -> dict:
    """One pass over the shuffled training split (drop_last); returns the epoch's metrics.

    `batch_gen` is seeded alike on every rank: all ranks draw the same global batches and
    each trains on its shard of them. `on_step(step)` runs after each optimiser step (1-based
    over the whole training: snapshots).
    """
    ctx.nets.train()
    ctx.fn_counts = None
    global_batches = batch_indices(len(train), ctx.cfg.model.batch_size, shuffle=True, drop_last=True, generator=batch_gen)
    batches = [distributed.shard(b) for b in global_batches]
    losses, seen, start = [], 0, time.perf_counter()
    with Progress(len(batches), f"pretrain epoch {ctx.epoch + 1}/{ctx.cfg.model.epochs}", "batch") as progress:
        for i, (idx, x) in enumerate(prefetched(train, batches)):
            losses.append(train_step(ctx, opt, sched, ctx.rt.to_memory_format(x), train.y[idx], idx))
            seen += len(idx) * distributed.world_size()
            progress.update()
            if on_step is not None:
                on_step(ctx.epoch * len(batches) + i + 1)
    if ctx.rt.is_cuda:
        torch.cuda.synchronize(ctx.rt.device)
    seconds = time.perf_counter() - start
    return {"epoch": ctx.epoch + 1, "loss": float(torch.stack(losses).mean()), "seconds": round(seconds, 4),
            "samples_per_s": round(seen / seconds, 1), **fn_stats(ctx.fn_counts)}


def maybe_compile(nets: nn.ModuleDict, enabled: bool) -> None:
    """torch.compile encoder and head in place (`Module.compile` keeps the state-dict names)."""
    if enabled:
        for module in nets.values():
            module.compile(backend=COMPILE_BACKEND)


def run_summary(cfg: PretrainConfig, rt: runtime.Runtime, nets: nn.ModuleDict, train: Split) -> dict:
    """How the run was executed: recorded next to the results (inner-attack settings included)."""
    out = {"runtime": rt.describe(), "world_size": distributed.world_size(), "streamed": train.streamed, "compile": cfg.model.compile,
           "dual_bn": has_dual_bn(nets), "peak_memory_mb": runtime.peak_memory_mb(rt),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if LOSSES[cfg.method.loss].family == "adversarial":
        a = cfg.method.attack
        out["inner_attack"] = {"eps": float(a.eps), "steps": a.steps, "step_size": a.step,
                               "random_start": a.random_start, "bn_mode": a.bn_mode,
                               "precision": str(rt.dtype).replace("torch.", ""), "channels_last": rt.is_cuda}
    return out


def run(cfg: PretrainConfig, cfg_json: str, seed: int, data_dir: Path, mined_path: Path | None,
        out_encoder: Path, out_metrics: Path, threads: int = 1, stop_after: int | None = None) -> dict:
    """Train, checkpointing each `checkpoint_every` epochs; `stop_after` simulates a kill (tests).

    One process, or one rank of a torchrun job (the process group comes from its environment).
    Returns the metrics (on ranks other than 0: only {"rank": r}).
    """
    world = distributed.from_env().world_size
    rt = runtime.setup(cfg.device, cfg.precision, max(1, threads // world))  # the job's CPUs are shared by its ranks
    me = distributed.init_from_env(rt.device.type)
    if me.world_size > 1 and rt.is_cuda:
        rt = dataclasses.replace(rt, device=torch.device("cuda", me.local_rank))
    try:
        nets, metrics = train_and_save(cfg, cfg_json, seed, data_dir, mined_path, out_encoder, out_metrics, rt, stop_after)
    except NonFiniteLoss as error:
        distributed.abort()
        note = rerun_note(out_encoder.with_name("checkpoint.pt"), config_fingerprint(cfg_json, seed, data_dir))
        raise NonFiniteLoss(f"{error} {note}") from None
    except BaseException:
        distributed.abort()  # no barrier: the other ranks may never reach it; torchrun stops them
        raise
    distributed.teardown()
    return metrics


def train_and_save(cfg: PretrainConfig, cfg_json: str, seed: int, data_dir: Path, mined_path: Path | None,
                   out_encoder: Path, out_metrics: Path, rt: runtime.Runtime, stop_after: int | None = None
                   ) -> tuple[nn.ModuleDict, dict]:
    """The training loop of `run` on an initialised runtime (and process group); returns the trained nets and metrics."""
    runtime.seed_everything(seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    meta = read_json(data_dir / "meta.json")
    train, test = load_split(data_dir, "train", rt.device, cfg.budget_mb), load_split(data_dir, "test", rt.device, cfg.budget_mb)
    if len(train) < cfg.model.batch_size:
        raise ValueError(f"pretrain batch_size {cfg.model.batch_size} exceeds the {len(train)} training samples of {data_dir}")
    if cfg.model.batch_size % distributed.world_size():
        raise ValueError(f"pretrain batch_size {cfg.model.batch_size} (the global batch) does not split over "
                         f"{distributed.world_size()} GPUs; use a multiple of {distributed.world_size()}")
    nets = runtime.prepare_module(build_nets(cfg, meta, train.is_video), rt, train.is_video)
    nets = distributed.sync_batchnorm(nets)  # CUDA ranks: batch statistics over the global batch
    mined = MinedFalseNegatives(mined_path, rt.device) if cfg.method.false_negatives == "mined" else None
    lr = cfg.model.lr * cfg.model.batch_size / 256  # lr is per 256 samples (of the global batch)
    opt = build_optimizer(list(nets.parameters()), cfg.model.optimizer, lr, cfg.model.weight_decay)
    steps_per_epoch = len(train) // cfg.model.batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(cfg.model.epochs * steps_per_epoch, cfg.model.warmup_epochs * steps_per_epoch))
    batch_gen, aug_gen = torch.Generator().manual_seed(seed), torch.Generator(device=rt.device)
    ckpt, fingerprint = out_encoder.with_name("checkpoint.pt"), config_fingerprint(cfg_json, seed, data_dir)
    snapshots: list[dict] = []
    done, history = try_resume(ckpt, nets, opt, sched, [batch_gen], fingerprint, snapshots)
    wanted = snapshot_steps(cfg.model.epochs * steps_per_epoch, cfg.method.snapshots)

    def take_snapshot(step: int) -> None:
        if step in wanted and distributed.is_main():
            snapshots.append(encoder_snapshot(nets, step, steps_per_epoch))

    maybe_compile(nets, cfg.model.compile)
    fn_gen = torch.Generator(device=rt.device)  # the simulated miner's own draws: the augmentations stay the baseline's
    ctx = StepContext(cfg, nets, distributed.wrap(Projector(nets)), rt, mined, aug_gen, fn_gen=fn_gen)
    for epoch in range(done, cfg.model.epochs):
        ctx.epoch = epoch
        fn_gen.manual_seed(1_000_003 * (seed + 1) + epoch)  # alike on every rank: the mask is the global batch's
        # Reseeded per epoch and per rank: ranks draw different augmentations, and a resumed
        # run continues with the draws the uninterrupted run would have made.
        aug_gen.manual_seed(distributed.rank_seed(seed + 1) + 7919 * epoch)
        stats = train_epoch(ctx, opt, sched, train, batch_gen, take_snapshot if wanted else None)
        if distributed.is_main():
            if cfg.model.knn_every and (epoch + 1) % cfg.model.knn_every == 0:
                stats["knn_acc"] = monitor_knn(nets, train, test, cfg, meta["num_classes"])
            history.append(stats)
            print(f"pretrain epoch {epoch + 1}/{cfg.model.epochs} loss {stats['loss']:.4f} "
                  f"{stats['samples_per_s']:.0f} samples/s {stats.get('knn_acc', '')}", file=sys.stderr, flush=True)
            if (epoch + 1) % cfg.model.checkpoint_every == 0 or epoch + 1 == cfg.model.epochs:
                save_checkpoint(ckpt, nets, opt, sched, epoch + 1, [batch_gen], history, fingerprint, snapshots)
        if stop_after is not None and epoch + 1 >= stop_after:
            return nets, {"stopped_after": epoch + 1}
    if not distributed.is_main():
        return nets, {"rank": distributed.rank()}
    knn = monitor_knn(nets, train, test, cfg, meta["num_classes"])
    metrics = {"history": history, "knn_acc": knn, "train_seconds": round(sum(h["seconds"] for h in history), 3),
               **run_summary(cfg, rt, nets, train), "config": json.loads(cfg_json), "seed": seed}
    save_encoder(out_encoder, nets, cfg, cfg_json, meta, seed, knn)
    save_snapshots(out_encoder.with_name("snapshots.pt"), snapshots, cfg, meta)
    metrics["snapshots_sha256"] = sha256_file(out_encoder.with_name("snapshots.pt"))  # match verifies it
    metrics["encoder_sha256"] = sha256_file(out_encoder)  # finetune, mine, analyse verify it
    write_json(out_metrics, sealed({**metrics, "environment": environment()}))  # the report and match verify the seal
    ckpt.unlink(missing_ok=True)  # the encoder is the finished output; the checkpoint only served resumption
    return nets, metrics
