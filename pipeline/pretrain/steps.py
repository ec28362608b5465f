"""One training step per method: what CE, SupCon, SimCLR, focal-InfoNCE, CLAE, RoCL and ACL do with a batch.

Each step maps (ctx, x (B,C,[T,]H,W) float in [0, 1], labels y (B,), dataset indices idx (B,))
to the scalar loss; `STEPS` is the registry (keys: the schema's `loss` enum). The
adversarial methods first build their adversarial views with `inner_attack`, Linf PGD on
a contrastive loss (`pipeline.linf_pgd.pgd_linf`, the package's one PGD core).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pipeline.augment import augment
from pipeline.linf_pgd import pgd_linf
from pipeline.losses import LOSSES, acl, clae, nt_xent, rocl, supcon
from pipeline.models.modes import module_mode
from pipeline.pretrain.context import StepContext, gather_batch, project


def attack_mode(ctx: StepContext) -> contextlib.AbstractContextManager[None]:
    """The BatchNorm mode of the inner attack (config `attack.bn_mode`), restored afterwards."""
    return module_mode(ctx.nets, ctx.cfg.method.attack.bn_mode == "train")


def inner_attack(ctx: StepContext, objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x_adv maximising `objective` within the configured Linf ball (runs in the caller's autocast)."""
    a = ctx.cfg.method.attack
    return pgd_linf(objective, x.detach(), eps=a.eps, steps=a.steps, step_size=a.step,
                    start="uniform_like" if a.random_start else None, generator=ctx.gen)


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
    return LOSSES[ctx.cfg.method.loss].fn(z1, z2, fn_mask=mask, **ctx.loss_kwargs(), **extra)


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
    return clae(z1, z2, z_adv, alpha=ctx.cfg.method.adv_weight, fn_mask=mask, **ctx.loss_kwargs())


def rocl_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """RoCL: 3-view NT-Xent over (v1, v2, x_adv) in one BatchNorm pass, as RoCL does."""
    v1, v2 = ctx.views(x)
    x_adv = rocl_view(ctx, v1, v2, y, idx)
    z1, z2, z_adv = ctx.model(torch.cat([v1, v2, x_adv])).chunk(3)
    (z1, z2, z_adv), y, idx = gather_batch((z1, z2, z_adv), y, idx)
    mask = ctx.mask(y, idx, z1, z2, record=True)
    return rocl(z1, z2, z_adv, fn_mask=mask, **ctx.loss_kwargs())


def acl_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """ACL dual stream: clean pair through the clean BN, attacked pair through the adversarial BN."""
    v = torch.cat(ctx.views(x))
    z1, z2 = ctx.model(v).chunk(2)
    a1, a2 = ctx.model(acl_views(ctx, v, y, idx), adversarial=True).chunk(2)
    (z1, z2, a1, a2), y, idx = gather_batch((z1, z2, a1, a2), y, idx)
    mask = ctx.mask(y, idx, z1, z2, record=True)
    return acl(z1, z2, a1, a2, weight=ctx.cfg.method.adv_weight, fn_mask=mask, **ctx.loss_kwargs())


# Keys equal the schema's `loss` enum (checked in tests/test_pretrain.py).
STEPS: dict[str, Callable[[StepContext, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": ce_step, "supcon": supcon_step, "nt_xent": contrastive_step, "focal_infonce": contrastive_step,
    "clae": clae_step, "rocl": rocl_step, "acl": acl_step,
}


def method_loss(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The method's loss on one float batch x (B,C,[T,]H,W) in [0, 1] with labels y (B,), indices idx (B,)."""
    return STEPS[ctx.cfg.method.loss](ctx, x, y, idx)
