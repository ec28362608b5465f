"""What one pretraining step works with: the nets, the step context and the false-negative masks.

`StepContext` carries the config, the nets, the runtime, the mined false negatives and the
device RNG; `FN_SOURCES` turns `method.false_negatives` into a (2B, 2B) mask; `project` and
`Projector` run encoder then head (dual BatchNorm: clean or adversarial branch);
`gather_batch` assembles the global batch from every rank's shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import distributed, runtime
from pipeline.augment import augment
from pipeline.config import PretrainConfig
from pipeline.io import verify_sibling
from pipeline.losses import LOSSES, neighbour_mask, same_label_mask, similarity_threshold_mask, simulated_miner_mask
from pipeline.models import Encoder, projection_head
from pipeline.models.dual_bn import adversarial_bn, convert_dual_bn


class MinedFalseNegatives:
    """The mine stage's output: pseudo-labels (N,) or a neighbour table (N, K), on the device."""

    def __init__(self, path: Path, device: torch.device) -> None:
        verify_sibling(path, "quality.json", "false_negatives_sha256", "mine")  # the file mine wrote, whole
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
    return convert_dual_bn(nets) if LOSSES[cfg.method.loss].dual_bn else nets


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
    fn_gen: torch.Generator | None = None  # the simulated miner's draws (same on every rank: the mask is global)
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


def oracle_mask(ctx: StepContext, y: torch.Tensor) -> torch.Tensor | None:
    """The true false negatives, or a simulated miner cut to `fn_recall` and diluted to `fn_precision`.

    recall 0 at precision 1 removes nothing: the baseline's loss, bit for bit (the dose f = 0).
    """
    m = ctx.cfg.method
    if m.fn_recall == 0.0 and m.fn_precision == 1.0:
        return None
    truth = same_label_mask(y)
    if m.fn_recall == 1.0 and m.fn_precision == 1.0:
        return truth
    assert ctx.fn_gen is not None, "a simulated miner needs StepContext.fn_gen"
    return simulated_miner_mask(truth, m.fn_recall, m.fn_precision, ctx.fn_gen)


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
    "oracle": lambda ctx, y, idx, z1, z2: oracle_mask(ctx, y),
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
