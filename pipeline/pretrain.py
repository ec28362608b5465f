"""Stage `pretrain`: one encoder per (dataset, method, seed).

Methods (config `pretrain.methods.<name>.loss`): supervised cross-entropy, SupCon, SimCLR
(NT-Xent), focal-InfoNCE, and adversarial CSL: CLAE (an FGSM/PGD view that raises NT-Xent,
adversarial BatchNorm), RoCL (instance-wise PGD view as an extra positive) and ACL (clean
pair + PGD pair, adversarial BatchNorm). Every method uses the same batched on-device
augmentations; every contrastive loss takes a false-negative mask from oracle labels, the
mine stage's file or the online similarity threshold, applied by elimination or attraction.

The data stays on the device as uint8 when it fits `budget_mb`, else it streams from the
memory-mapped arrays with prefetch. A checkpoint is written atomically every
`checkpoint_every` epochs and a rerun resumes from it; a non-finite loss stops the stage
and keeps the last good checkpoint.

Several GPUs (a SLURM job with `gpu: N`): the stage relaunches itself under torchrun, one
rank per GPU (`pipeline/distributed.py`). Every rank draws the same global batch and trains
on its shard under DistributedDataParallel (SyncBatchNorm on CUDA); the projections, labels
and indices of all ranks are gathered before the loss, so the loss and the false-negative
masks see the global batch exactly as one process would. Inner attacks (CLAE, RoCL, ACL)
run on each rank's shard, as multi-GPU implementations of these methods do. Rank 0 alone
writes checkpoints, outputs and logs.

    python -m pipeline.pretrain --cfg '<json>' --seed 0 --data results/decode/digits \
        [--mined results/mine/digits/seed0/false_negatives.npz] \
        --out-encoder .../encoder.pt --out-metrics .../metrics.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import distributed, runtime
from pipeline.augment import augment
from pipeline.config import PretrainConfig, from_json
from pipeline.data import Split, batch_indices, embed, load_split, prefetched
from pipeline.health import Diverged, non_finite_entries, require_finite
from pipeline.io import load_torch, read_json, save_torch, sha256_file, write_json
from pipeline.knn import knn_accuracy
from pipeline.logs import Progress, log_header
from pipeline.losses import (
    ADVERSARIAL_LOSSES,
    CONTRASTIVE_LOSSES,
    DUAL_BN_LOSSES,
    linf_pgd,
    neighbour_mask,
    nt_xent,
    same_label_mask,
    similarity_threshold_mask,
    supcon,
)
from pipeline.models import Encoder, projection_head
from pipeline.models.dual_bn import adversarial_bn, branch_state_dict, convert_dual_bn, has_dual_bn
from pipeline.optim import build_optimizer, warmup_cosine

COMPILE_BACKEND = "inductor"  # tests switch to "eager": inductor needs a C++ toolchain and minutes on CPU


class NonFiniteLoss(RuntimeError):
    """The loss, a weight or a BatchNorm statistic became NaN or inf; the last good checkpoint is kept."""


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
    """Encoder plus the method's head: a linear classifier for CE, an MLP projector otherwise.

    CLAE and ACL get dual BatchNorm everywhere (encoder and projector): adversarial inputs
    are normalised with their own statistics.
    """
    m = cfg.model
    encoder = Encoder(m.backbone, m.width, m.small_input, meta["mean"], meta["std"])
    if cfg.method.loss == "ce":
        head: nn.Module = nn.Linear(encoder.out_dim, meta["num_classes"])
    else:
        head = projection_head(encoder.out_dim, m.proj_hidden, m.proj_dim)
    nets = nn.ModuleDict({"encoder": encoder, "head": head})
    return convert_dual_bn(nets) if cfg.method.loss in DUAL_BN_LOSSES else nets


# ---- one training step per method -------------------------------------------------------
@dataclass
class StepContext:
    """What a method's loss needs besides the batch."""

    cfg: PretrainConfig
    nets: nn.ModuleDict  # the plain modules: inner attacks, kNN monitor, checkpoints
    model: nn.Module  # `Projector(nets)`, inside DistributedDataParallel on several ranks: the trained forward passes
    rt: runtime.Runtime
    mined: MinedFalseNegatives | None
    gen: torch.Generator  # on the device: augmentations and attack random starts
    epoch: int = 0
    fn_counts: torch.Tensor | None = None  # (flagged, flagged and same class, same class, rows)

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmented views of x (B,C,[T,]H,W), each in the device's fast memory format."""
        spec = self.cfg.model.augment
        return self.rt.to_memory_format(augment(x, spec, self.gen)), self.rt.to_memory_format(augment(x, spec, self.gen))

    def mask(self, y: torch.Tensor, idx: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
             record: bool = False) -> torch.Tensor | None:
        """The method's false-negative mask (2B, 2B) or None; `record` adds it to the epoch's counts."""
        found = FN_SOURCES[self.cfg.method.false_negatives](self, y, idx, z1, z2)
        if record and found is not None:
            same = same_label_mask(y)
            rows = torch.full((), len(found), device=y.device)  # no host-to-device copy, no sync
            counts = torch.stack([found.sum(), (found & same).sum(), same.sum(), rows])
            self.fn_counts = counts if self.fn_counts is None else self.fn_counts + counts
        return found

    def loss_kwargs(self) -> dict:
        return {"temperature": self.cfg.model.temperature, "fn_mode": self.cfg.method.fn_mode}


def online_mask(ctx: StepContext, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor | None:
    """Issue 6's online variant: after the warm-up, in-batch pairs above the similarity threshold."""
    if ctx.epoch < ctx.cfg.method.online_warmup_epochs:
        return None
    return similarity_threshold_mask(z1, z2, ctx.cfg.method.online_threshold)


def _mined_mask(ctx: StepContext, idx: torch.Tensor) -> torch.Tensor:
    assert ctx.mined is not None, "false_negatives: mined needs the mine stage's file (--mined)"
    return ctx.mined.mask(idx)


FN_SOURCES: dict[str, Callable[..., torch.Tensor | None]] = {
    "none": lambda ctx, y, idx, z1, z2: None,
    "oracle": lambda ctx, y, idx, z1, z2: same_label_mask(y),
    "mined": lambda ctx, y, idx, z1, z2: _mined_mask(ctx, idx),
    "online": lambda ctx, y, idx, z1, z2: online_mask(ctx, z1, z2),
}


def project(nets: nn.ModuleDict, x: torch.Tensor, adversarial: bool = False) -> torch.Tensor:
    """Projections (B, D) of x; `adversarial` routes dual-BN layers to their adversarial branch."""
    with adversarial_bn(nets, adversarial):
        return nets["head"](nets["encoder"](x))


class Projector(nn.Module):
    """Encoder then head as one module: DistributedDataParallel wraps a module and hooks its forward."""

    def __init__(self, nets: nn.ModuleDict) -> None:
        super().__init__()
        self.nets = nets

    def forward(self, x: torch.Tensor, adversarial: bool = False) -> torch.Tensor:
        return project(self.nets, x, adversarial)


def gather_batch(projections: tuple[torch.Tensor, ...], y: torch.Tensor, idx: torch.Tensor
                 ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
    """The global batch from every rank's shard: projections (differentiable), labels, indices.

    Row r * B + j holds sample j of rank r, the order `distributed.shard` split the batch in,
    so a loss and a false-negative mask built on the result are those of one process on the
    global batch. One process: the inputs unchanged.
    """
    if distributed.world_size() == 1:
        return projections, y, idx
    return tuple(distributed.gather_with_grad(z) for z in projections), distributed.gather(y), distributed.gather(idx)


@contextlib.contextmanager
def attack_mode(ctx: StepContext) -> Iterator[None]:
    """The BatchNorm mode of the inner attack (config `attack.bn_mode`), restored afterwards."""
    was_training = ctx.nets.training
    ctx.nets.train(ctx.cfg.method.attack.bn_mode == "train")
    try:
        yield
    finally:
        ctx.nets.train(was_training)


def inner_attack(ctx: StepContext, objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x_adv maximising `objective` within the configured Linf ball (runs in the caller's autocast)."""
    a = ctx.cfg.method.attack
    return linf_pgd(objective, x, eps=a.eps / 255, steps=a.steps, step_size=a.step_size,
                    random_start=a.random_start, generator=ctx.gen)


def ce_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Supervised cross-entropy on one view from the same augmentation pipeline.

    Per-sample, so nothing is gathered: DDP's average of the ranks' shard means (equal
    shards) is the global mean.
    """
    v = ctx.rt.to_memory_format(augment(x, ctx.cfg.model.augment, ctx.gen))
    return F.cross_entropy(ctx.model(v).float(), y)


def supcon_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    z1, z2 = ctx.model(torch.cat(ctx.views(x))).chunk(2)  # one pass: BN sees both views
    (z1, z2), y, _ = gather_batch((z1, z2), y, idx)
    return supcon(z1, z2, y, temperature=ctx.cfg.model.temperature)


def contrastive_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """NT-Xent or focal-InfoNCE on two views, with the method's false-negative mask."""
    z1, z2 = ctx.model(torch.cat(ctx.views(x))).chunk(2)
    (z1, z2), y, idx = gather_batch((z1, z2), y, idx)
    extra = {"margin": ctx.cfg.method.focal_margin} if ctx.cfg.method.loss == "focal_infonce" else {}
    mask = ctx.mask(y, idx, z1, z2, record=True)
    return CONTRASTIVE_LOSSES[ctx.cfg.method.loss](z1, z2, fn_mask=mask, **ctx.loss_kwargs(), **extra)


def clae_view(ctx: StepContext, v1: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """CLAE's adversarial view: v1 perturbed to raise NT-Xent(v1, x_adv), both through the adversarial BN.

    Starts at v1 itself, as CLAE does (FGSM: steps 1, step_size 1, random_start false).
    """
    with attack_mode(ctx):
        with torch.no_grad():
            anchor = project(ctx.nets, v1, adversarial=True)
        objective = lambda xa: nt_xent(anchor, project(ctx.nets, xa, True), fn_mask=mask, **ctx.loss_kwargs())  # noqa: E731
        return inner_attack(ctx, objective, v1)


def rocl_view(ctx: StepContext, v1: torch.Tensor, v2: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """RoCL's instance-wise attack: v1 perturbed to raise NT-Xent(x_adv, v2) (no labels used)."""
    with attack_mode(ctx):
        with torch.no_grad():
            target = project(ctx.nets, v2)

        def objective(xa: torch.Tensor) -> torch.Tensor:
            za = project(ctx.nets, xa)
            return nt_xent(za, target, fn_mask=ctx.mask(y, idx, za, target), **ctx.loss_kwargs())

        return inner_attack(ctx, objective, v1)


def acl_views(ctx: StepContext, v: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """ACL's joint attack on both stacked views v (2B, ...): raise NT-Xent of the pair, adversarial BN."""

    def objective(xa: torch.Tensor) -> torch.Tensor:
        a1, a2 = project(ctx.nets, xa, True).chunk(2)
        return nt_xent(a1, a2, fn_mask=ctx.mask(y, idx, a1, a2), **ctx.loss_kwargs())

    with attack_mode(ctx):
        return inner_attack(ctx, objective, v)


def clae_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """CLAE: NT-Xent(v1, v2) + alpha NT-Xent(v1, x_adv); x_adv through the adversarial BN."""
    v1, v2 = ctx.views(x)
    z1, z2 = ctx.model(torch.cat([v1, v2])).chunk(2)
    shard_mask = ctx.mask(y, idx, z1, z2)  # the inner attack sees this rank's shard
    z_adv = ctx.model(clae_view(ctx, v1, shard_mask), adversarial=True)
    (z1, z2, z_adv), y, idx = gather_batch((z1, z2, z_adv), y, idx)
    mask = ctx.mask(y, idx, z1, z2, record=True)
    return ADVERSARIAL_LOSSES["clae"](z1, z2, z_adv, alpha=ctx.cfg.method.adv_weight, fn_mask=mask, **ctx.loss_kwargs())


def rocl_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """RoCL: 3-view NT-Xent over (v1, v2, x_adv) in one BatchNorm pass, as RoCL does."""
    v1, v2 = ctx.views(x)
    x_adv = rocl_view(ctx, v1, v2, y, idx)
    z1, z2, z_adv = ctx.model(torch.cat([v1, v2, x_adv])).chunk(3)
    (z1, z2, z_adv), y, idx = gather_batch((z1, z2, z_adv), y, idx)
    mask = ctx.mask(y, idx, z1, z2, record=True)
    return ADVERSARIAL_LOSSES["rocl"](z1, z2, z_adv, fn_mask=mask, **ctx.loss_kwargs())


def acl_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """ACL dual stream: clean pair through the clean BN, attacked pair through the adversarial BN."""
    v = torch.cat(ctx.views(x))
    z1, z2 = ctx.model(v).chunk(2)
    a1, a2 = ctx.model(acl_views(ctx, v, y, idx), adversarial=True).chunk(2)
    (z1, z2, a1, a2), y, idx = gather_batch((z1, z2, a1, a2), y, idx)
    mask = ctx.mask(y, idx, z1, z2, record=True)
    return ADVERSARIAL_LOSSES["acl"](z1, z2, a1, a2, weight=ctx.cfg.method.adv_weight, fn_mask=mask, **ctx.loss_kwargs())


# Keys equal the schema's `loss` enum (checked in tests/test_pretrain.py).
STEPS: dict[str, Callable[[StepContext, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": ce_step, "supcon": supcon_step, "nt_xent": contrastive_step, "focal_infonce": contrastive_step,
    "clae": clae_step, "rocl": rocl_step, "acl": acl_step,
}


def method_loss(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The method's loss on one float batch x (B,C,[T,]H,W) in [0, 1] with labels y (B,), indices idx (B,)."""
    return STEPS[ctx.cfg.method.loss](ctx, x, y, idx)


def config_fingerprint(cfg_json: str, seed: int, data_dir: Path) -> str:
    """Identifies a run: a checkpoint from other settings is never resumed."""
    meta = (data_dir / "meta.json").read_bytes()
    return hashlib.sha256(cfg_json.encode() + str(seed).encode() + meta).hexdigest()[:16]


def require_finite_nets(nets: nn.ModuleDict, epoch: int) -> None:
    """Raise NonFiniteLoss if any parameter or buffer is NaN/inf: such a state is never checkpointed."""
    try:
        require_finite(nets, f"after epoch {epoch}")
    except Diverged as error:
        raise NonFiniteLoss(f"{error}; lower the pretrain lr or check the data.") from None


def rerun_note(ckpt: Path, fingerprint: str) -> str:
    """What a rerun with the same settings will do, given the checkpoint left at `ckpt`."""
    state = load_torch(ckpt) if ckpt.exists() else None
    if state is not None and state["fingerprint"] == fingerprint:
        start = f"resumes from {ckpt} (finite weights, after epoch {state['epoch']})"
    else:
        start = "starts from scratch (no finite checkpoint was written)"
    return (f"A rerun with the same settings {start} and, training being deterministic, will most likely diverge "
            "again at the same step; change a setting (e.g. lower pretrain lr), which also makes the rerun start "
            "from scratch (a checkpoint from other settings is ignored).")


def save_checkpoint(path: Path, nets, opt, sched, epoch: int, gens, history: list, fingerprint: str) -> None:
    """Write the resumable state atomically; refuses (NonFiniteLoss) a state with non-finite weights."""
    require_finite_nets(nets, epoch)
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
    if non_finite_entries(state["nets"]):  # written before checkpoints were checked: not a good state
        print(f"pretrain: ignoring {path}: it holds non-finite weights", file=sys.stderr)
        return 0, []
    nets.load_state_dict(state["nets"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    for g, s in zip(gens, state["gens"], strict=False):  # an older checkpoint may hold more generators
        g.set_state(s)
    print(f"pretrain: resumed from {path} after epoch {state['epoch']}", file=sys.stderr)
    return state["epoch"], json.loads(state["history"])


def monitor_knn(nets: nn.ModuleDict, train: Split, test: Split, cfg: PretrainConfig, classes: int) -> float:
    """Weighted kNN test accuracy of the encoder's features (clean BatchNorm, eval mode)."""
    bs = 4 * cfg.model.batch_size
    return knn_accuracy(embed(nets["encoder"], train, bs), train.y, embed(nets["encoder"], test, bs), test.y, cfg.model.knn_k, classes)


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


def train_epoch(ctx: StepContext, opt, sched, train: Split, batch_gen: torch.Generator) -> dict:
    """One pass over the shuffled training split (drop_last); returns the epoch's metrics.

    `batch_gen` is seeded alike on every rank: all ranks draw the same global batches and
    each trains on its shard of them.
    """
    ctx.nets.train()
    ctx.fn_counts = None
    global_batches = batch_indices(len(train), ctx.cfg.model.batch_size, shuffle=True, drop_last=True, generator=batch_gen)
    batches = [distributed.shard(b) for b in global_batches]
    losses, seen, start = [], 0, time.perf_counter()
    with Progress(len(batches), f"pretrain epoch {ctx.epoch + 1}/{ctx.cfg.model.epochs}", "batch") as progress:
        for idx, x in prefetched(train, batches):
            losses.append(train_step(ctx, opt, sched, ctx.rt.to_memory_format(x), train.y[idx], idx))
            seen += len(idx) * distributed.world_size()
            progress.update()
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
    if cfg.method.loss in ADVERSARIAL_LOSSES:
        a = cfg.method.attack
        out["inner_attack"] = {"eps": a.eps / 255, "steps": a.steps, "step_size": a.step_size * a.eps / 255,
                               "random_start": a.random_start, "bn_mode": a.bn_mode,
                               "precision": str(rt.dtype).replace("torch.", ""), "channels_last": rt.is_cuda}
    return out


def save_encoder(path: Path, nets: nn.ModuleDict, cfg: PretrainConfig, cfg_json: str, meta: dict, seed: int, knn: float) -> None:
    """The finished encoder, loadable into the plain `Encoder`: dual-BN models keep their clean BN
    under the standard names; the adversarial BN branch is kept aside as `encoder_adv_bn`."""
    model_args = {"backbone": cfg.model.backbone, "width": cfg.model.width, "small_input": cfg.model.small_input,
                  "mean": meta["mean"], "std": meta["std"]}
    state = {"encoder": branch_state_dict(nets["encoder"]), "head": branch_state_dict(nets["head"]),
             "model_args": model_args, "config": cfg_json, "seed": seed, "knn_acc": knn}
    if has_dual_bn(nets):
        state["encoder_adv_bn"] = branch_state_dict(nets["encoder"], "adv")
    require_finite_nets(nets, cfg.model.epochs)
    save_torch(path, state)


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
    done, history = try_resume(ckpt, nets, opt, sched, [batch_gen], fingerprint)
    maybe_compile(nets, cfg.model.compile)
    ctx = StepContext(cfg, nets, distributed.wrap(Projector(nets)), rt, mined, aug_gen)
    for epoch in range(done, cfg.model.epochs):
        ctx.epoch = epoch
        # Reseeded per epoch and per rank: ranks draw different augmentations, and a resumed
        # run continues with the draws the uninterrupted run would have made.
        aug_gen.manual_seed(distributed.rank_seed(seed + 1) + 7919 * epoch)
        stats = train_epoch(ctx, opt, sched, train, batch_gen)
        if distributed.is_main():
            if cfg.model.knn_every and (epoch + 1) % cfg.model.knn_every == 0:
                stats["knn_acc"] = monitor_knn(nets, train, test, cfg, meta["num_classes"])
            history.append(stats)
            print(f"pretrain epoch {epoch + 1}/{cfg.model.epochs} loss {stats['loss']:.4f} "
                  f"{stats['samples_per_s']:.0f} samples/s {stats.get('knn_acc', '')}", file=sys.stderr, flush=True)
            if (epoch + 1) % cfg.model.checkpoint_every == 0 or epoch + 1 == cfg.model.epochs:
                save_checkpoint(ckpt, nets, opt, sched, epoch + 1, [batch_gen], history, fingerprint)
        if stop_after is not None and epoch + 1 >= stop_after:
            return nets, {"stopped_after": epoch + 1}
    if not distributed.is_main():
        return nets, {"rank": distributed.rank()}
    knn = monitor_knn(nets, train, test, cfg, meta["num_classes"])
    metrics = {"history": history, "knn_acc": knn, "train_seconds": round(sum(h["seconds"] for h in history), 3),
               **run_summary(cfg, rt, nets, train), "config": json.loads(cfg_json), "seed": seed}
    save_encoder(out_encoder, nets, cfg, cfg_json, meta, seed, knn)
    metrics["encoder_sha256"] = sha256_file(out_encoder)  # finetune, mine, analyse verify it
    write_json(out_metrics, metrics)
    ckpt.unlink(missing_ok=True)  # the encoder is the finished output; the checkpoint only served resumption
    return nets, metrics


def main(argv: list[str] | None = None) -> None:
    log_header("pretrain", argv)  # the log starts with the command and a timestamp
    distributed.relaunch_if_multi_gpu("pipeline.pretrain", sys.argv[1:] if argv is None else argv)
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
    if "knn_acc" in metrics:  # rank 0
        print(f"pretrain: kNN accuracy {metrics['knn_acc']:.4f} in {metrics['train_seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
