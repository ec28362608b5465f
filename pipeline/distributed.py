"""Data-parallel building blocks for a stage that runs on several GPUs under `torchrun`.

One job, N processes (ranks), one GPU each; every rank holds a replica of the model and
trains on its slice of the global batch; DistributedDataParallel averages the parameter
gradients. Contrastive losses need every rank's embeddings as negatives, so they are
gathered, and the gather must pass gradients back correctly: a plain `all_gather` returns
tensors without grad (SimCLR forks lose the cross-rank terms), and a gather whose backward
only keeps the local slice is off by a factor 1/world_size once DDP averages (lightly
issues 1528 and 1977). `gather_with_grad` all-reduces the gradient in its backward, so
one DDP step equals one single-process step on the global batch (tests/test_distributed.py).

Single process (no `WORLD_SIZE`, or 1): every helper is the identity, so stage code calls
them unconditionally. torch's own `init_process_group`, `DistributedDataParallel`,
`SyncBatchNorm` and `torch.distributed.run` do the work; what is written here is only the
gather with the corrected gradient (no library exports one) and the batch sharding.

    python -m pipeline.distributed     # self-check: run it inside a multi-GPU job (see README)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.runtime import allocated_gpus


@dataclass(frozen=True)
class Rank:
    """This process's place in the job (torchrun's RANK, WORLD_SIZE, LOCAL_RANK)."""

    rank: int
    world_size: int
    local_rank: int


def from_env() -> Rank:
    """The rank torchrun assigned; rank 0 of 1 for a plain single-process run."""
    return Rank(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def init_from_env(device_type: str | None = None, timeout_s: float = 600.0) -> Rank:
    """Join the process group torchrun describes; a no-op for one process.

    Args:
        device_type: the stage's device type (`runtime.setup(...).device.type`): "cuda" uses
            nccl and makes the rank's GPU the current device, so that `torch.device("cuda")`
            means this rank's GPU from here on; "cpu" uses gloo. None: cuda when available.
    """
    me = from_env()
    if me.world_size == 1 or dist.is_initialized():
        return me
    cuda = torch.cuda.is_available() if device_type is None else device_type == "cuda"
    if cuda:
        torch.cuda.set_device(me.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=me.rank, world_size=me.world_size, timeout=timedelta(seconds=timeout_s))
    return me


def teardown() -> None:
    """Leave the process group (after a barrier, so no rank exits while another still gathers)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def abort() -> None:
    """Leave the process group after an error, without the barrier (the other ranks may never reach it)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """True on the one rank that writes outputs, checkpoints and logs (rank 0)."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@torch.no_grad()
def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of `x` over ranks (a logged loss, a stopping decision every rank must share)."""
    if world_size() == 1:
        return x
    x = x.float().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / world_size()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in the forward; in the backward, the sum over ranks of the gradient, sliced.

    Every rank computes a loss on the gathered tensor. Rank r's slice feeds the losses of
    all ranks, so its gradient is the sum of their gradients (all-reduce), not only the
    local one; DDP's averaging of parameter gradients then gives exactly the gradient of
    the mean of the ranks' losses.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # x: (B, ...) -> (world * B, ...)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd may reuse `grad`
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every rank's `x` (B, ...) stacked in rank order: (world * B, ...), differentiable.

    All ranks must pass the same B (`shard` guarantees it).
    """
    return _GatherWithGrad.apply(x) if world_size() > 1 else x


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's `x` (B, ...) stacked in rank order, without gradient (labels, indices)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def gathered_views(z1: torch.Tensor, z2: torch.Tensor, *per_sample: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The global two-view batch a contrastive loss needs, from this rank's slice.

    Args:
        z1, z2: this rank's projections of the two views. Shape (B, D) each.
        per_sample: tensors indexed like the batch (labels (B,), dataset indices (B,), ...).

    Returns:
        (Z1, Z2, *gathered): Z1, Z2 of shape (world * B, D), differentiable; the rest
        (world * B, ...) without gradient. Sample j of rank r sits at row r * B + j, i.e.
        the order of the global batch that `shard` split, so `nt_xent(Z1, Z2, fn_mask=
        same_label_mask(labels))` on them is the single-process loss of the global batch.
        A false-negative mask must be built from the gathered labels/indices, never the local ones.
    """
    return (gather_with_grad(z1), gather_with_grad(z2), *(gather(t) for t in per_sample))


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of a global index batch (B,) -> (B / world,).

    Every rank draws the same global batch (same seed), takes its slice, and `gathered_views`
    puts the slices back in order.
    """
    world = world_size()
    if batch.shape[0] % world:
        raise ValueError(f"global batch of {batch.shape[0]} does not split over {world} ranks; use a multiple of {world}")
    size = batch.shape[0] // world
    return batch[rank() * size : (rank() + 1) * size]


def rank_seed(seed: int) -> int:
    """A per-rank seed for augmentation draws (ranks must not crop their slices identically)."""
    return seed + 1_000_003 * rank()


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm -> SyncBatchNorm, so that batch statistics cover the global batch (CUDA only).

    torch's SyncBatchNorm has no CPU kernel; a CPU (gloo) run keeps per-rank statistics.
    """
    if world_size() > 1 and torch.cuda.is_available():
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


def wrap(module: nn.Module) -> nn.Module:
    """DistributedDataParallel around `module` (already on its device); the module itself for one process.

    Call the wrapper for the forward pass (DDP hooks its backward there); save
    `module.state_dict()` of the unwrapped module, on the main rank only.
    """
    if world_size() == 1:
        return module
    ids = [torch.cuda.current_device()] if next(module.parameters()).is_cuda else None
    return DistributedDataParallel(module, device_ids=ids)


# ---- launching ------------------------------------------------------------------------------
def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def torchrun_command(module: str, argv: list[str], nproc: int) -> list[str]:
    """The command that runs `python -m module argv` as `nproc` ranks on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", module, *argv]


def relaunch_if_multi_gpu(module: str, argv: list[str]) -> None:
    """Replace this process by torchrun with one rank per allocated GPU, when there are several.

    Stage `main()`s call this first: the rule's shell command stays the same for 1 or N
    GPUs, and the GPU count (a profile resource) never becomes a tracked parameter.
    """
    nproc = allocated_gpus()
    if nproc > 1 and not under_torchrun():
        sys.stdout.flush()
        sys.stderr.flush()
        cmd = torchrun_command(module, argv, nproc)
        os.execv(cmd[0], cmd)


# ---- self-check ---------------------------------------------------------------------------
def self_check(per_rank: int = 8, dim: int = 16, seed: int = 0) -> float:
    """Largest |DDP - single-process| over the loss and gradients of one NT-Xent step.

    Every rank builds the same global batch and model from `seed`, runs the gathered loss on
    its shard under DDP and the plain loss on the whole batch, and compares the gradients.
    """
    from pipeline.losses import nt_xent, same_label_mask

    torch.manual_seed(seed)  # the same batch and weights on every rank
    world, device = world_size(), torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    x1, x2 = torch.randn(2, world * per_rank, dim, device=device)
    labels = torch.randint(0, 3, (world * per_rank,), device=device)
    net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim)).to(device)
    single = nt_xent(net(x1), net(x2), temperature=0.5, fn_mask=same_label_mask(labels))
    want = [g.clone() for g in torch.autograd.grad(single, list(net.parameters()))]
    ddp, idx = wrap(net), shard(torch.arange(world * per_rank, device=device))
    local1, local2 = ddp(torch.cat([x1[idx], x2[idx]])).chunk(2)  # one DDP forward per step
    z1, z2, lab = gathered_views(local1, local2, labels[idx])
    loss = nt_xent(z1, z2, temperature=0.5, fn_mask=same_label_mask(lab))
    loss.backward()
    errors = [(loss - single).detach().abs()] + [(p.grad - g).abs().max() for p, g in zip(net.parameters(), want, strict=True)]
    return float(torch.stack(errors).max())


def main() -> None:
    relaunch_if_multi_gpu("pipeline.distributed", sys.argv[1:])
    me = init_from_env()
    error = self_check()
    line = f"rank {me.rank}/{me.world_size}: |DDP - single process| = {error:.2e} ({'ok' if error < 1e-5 else 'WRONG'})\n"
    sys.stdout.write(line)  # one write: the ranks share the job's stdout, and print's two writes interleave
    sys.stdout.flush()
    teardown()
    sys.exit(0 if error < 1e-5 else 1)


if __name__ == "__main__":
    main()
