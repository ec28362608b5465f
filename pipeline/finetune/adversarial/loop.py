"""The ALF/AFF training loop: batches on the device, one method's loss, Adam or SGD with a
per-step cosine schedule, per-epoch held-out monitoring, the fast-FGSM collapse guard and the
dynamic adversary."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import AdversarialConfig
from pipeline.data import Split, batch_indices
from pipeline.errors import NonFiniteLoss
from pipeline.finetune.adversarial import TRAINING, AdversarialContext, CollapseGuard, DynamicAdversary, TrainingEntry
from pipeline.finetune.adversarial.inner import Attack, perturb, to_layout
from pipeline.logs import Progress
from pipeline.models.modes import module_mode
from pipeline.optim import warmup_cosine
from pipeline.runtime import Runtime


@dataclass
class Holdout:
    """Training samples kept out of training to monitor it: x (H,C,...) in [0, 1], y (H,)."""

    x: torch.Tensor
    y: torch.Tensor


def split_holdout(n: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices) of range(n); the held-out part is at most a quarter of n."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(10_000 + seed))  # not the batch-order stream
    k = min(holdout, n // 4)
    return order[k:], order[:k]


def make_optimizer(model: nn.Module, cfg: AdversarialConfig) -> torch.optim.Optimizer:
    """Adam or SGD (momentum 0.9): the head at `lr`, the encoder (when trainable) at `encoder_lr`."""
    head = [p for n, p in model.named_parameters() if not n.startswith("encoder.") and p.requires_grad]
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.") and p.requires_grad]
    groups = [{"params": head, "lr": cfg.lr}] + ([{"params": encoder, "lr": cfg.encoder_lr}] if encoder else [])
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be adam or sgd; got {cfg.optimizer!r}")


@torch.no_grad()
def count_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, rt: Runtime) -> int:
    """Correct predictions on x (N,C,...) in batches; the caller sets the model's mode."""
    correct = 0
    for i in range(0, len(y), batch_size):
        with rt.autocast():
            correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct


def robust_accuracy(model: nn.Module, hold: Holdout, attack: Attack, batch_size: int, rt: Runtime, gen: torch.Generator) -> float:
    """Accuracy under PGD (CE objective) with `attack`; the caller sets the model's mode."""
    correct = 0
    for i in range(0, len(hold.y), batch_size):
        x, y = hold.x[i : i + batch_size], hold.y[i : i + batch_size]
        x_adv = perturb(lambda xa: F.cross_entropy(model(xa).float(), y), x, attack, rt, gen)  # noqa: B023
        correct += count_correct(model, x_adv, y, batch_size, rt)
    return correct / max(1, len(hold.y))


def monitor(model: nn.Module, hold: Holdout, ctx: AdversarialContext, gen: torch.Generator) -> dict[str, float]:
    """Held-out clean and PGD-`monitor_steps` accuracy at the full eps, model in eval mode."""
    cfg = ctx.cfg
    eps = cfg.eps  # pixel units (config: 1/255, converted by pipeline.config)
    attack = Attack(eps=eps, steps=cfg.monitor_steps, step_fraction=cfg.step_size, init="uniform")
    with module_mode(model, False):
        return {"holdout_clean": count_correct(model, hold.x, hold.y, cfg.batch_size, ctx.rt) / max(1, len(hold.y)),
                "holdout_pgd": robust_accuracy(model, hold, attack, cfg.batch_size, ctx.rt, gen)}


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: AdversarialContext, method: TrainingEntry,
               opt: torch.optim.Optimizer) -> torch.Tensor:
    """One optimiser step on the method's loss, model in train mode (frozen parts in eval)."""
    with module_mode(model, True, ctx.frozen):
        loss = method.fn(model, x, y, ctx)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def held_out_clean(model: nn.Module, hold: Holdout, ctx: AdversarialContext) -> float:
    """Held-out clean accuracy, model in eval mode (what the dynamic adversary reads)."""
    with module_mode(model, False):
        return count_correct(model, hold.x, hold.y, ctx.cfg.batch_size, ctx.rt) / max(1, len(hold.y))


def run_epoch(model: nn.Module, data: Split, train_idx: torch.Tensor, ctx: AdversarialContext, method: TrainingEntry,
              opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator,
              adversary: DynamicAdversary | None, hold: Holdout, step: int) -> tuple[dict, int]:
    """One pass over the training indices (last partial batch dropped: BatchNorm needs > 1 sample)."""
    losses, seen, start = [], 0, time.perf_counter()
    bs = min(ctx.cfg.batch_size, len(train_idx))
    batches = list(batch_indices(len(train_idx), bs, shuffle=True, drop_last=True, generator=gen))
    with Progress(len(batches), f"{ctx.cfg.training} epoch", "batch") as progress:
        for b in batches:
            idx = train_idx[b].to(ctx.rt.device)
            x = to_layout(data.batch(idx), ctx.rt)
            losses.append(train_step(model, x, data.y[idx], ctx, method, opt))
            sched.step()
            step, seen = step + 1, seen + len(idx)
            if adversary is not None and step % ctx.cfg.dynamic.check_every == 0:
                ctx.attack = adversary.update(step, held_out_clean(model, hold, ctx))
            progress.update()
    loss = float(torch.stack(losses).mean())  # one device sync per epoch, not per step
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"{ctx.cfg.training}: non-finite training loss {loss} at step {step}")
    seconds = time.perf_counter() - start
    return {"loss": loss, "seconds": round(seconds, 3), "images_per_s": round(seen / seconds, 1),
            "eps_255": round(255 * ctx.attack.eps, 4), "attack_steps": ctx.attack.steps}, step


def adversarial_train(model: nn.Module, data: Split, train_idx: torch.Tensor, hold: Holdout, cfg: AdversarialConfig,
                      rt: Runtime, frozen: tuple[nn.Module, ...], seed: int) -> dict:
    """Train `model`'s trainable parameters with `cfg.training`; returns the training history.

    Args:
        model: Classifier (CosineClassifier for spat) on the device; frozen parts have requires_grad False.
        data: the training split; train_idx (M,) the indices trained on (the held-out ones excluded).
        hold: the held-out batch monitored every epoch.
        frozen: modules kept in eval mode (ALF's encoder).
    """
    method = TRAINING[cfg.training]
    ctx = AdversarialContext(rt, method.attack(cfg), cfg.attack_bn == "train", frozen,
                      torch.Generator(device=rt.device).manual_seed(seed), cfg)
    opt, gen = make_optimizer(model, cfg), torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(train_idx) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.epochs * steps_per_epoch, 0))
    guard = CollapseGuard(cfg.fgsm_rs.guard_drop, cfg.fgsm_rs.guard) if method.guarded else None
    adversary = DynamicAdversary(cfg.dynamic, ctx.attack, held_out_clean(model, hold, ctx)) if method.regulated else None
    if adversary is not None:
        ctx.attack = adversary.attack
    epochs: list[dict] = []
    step = 0
    for epoch in range(cfg.epochs):
        record, step = run_epoch(model, data, train_idx, ctx, method, opt, sched, gen, adversary, hold, step)
        epochs.append({"epoch": epoch, **record, **monitor(model, hold, ctx, ctx.generator)})
        if guard is not None and guard_stops(guard, epochs[-1], model, opt):
            break
    return {"epochs": epochs, "guard_events": guard.events if guard else [],
            "dynamic": {"reference_clean": adversary.reference, "checks": adversary.history} if adversary else {}}


def guard_stops(guard: CollapseGuard, record: dict, model: nn.Module, opt: torch.optim.Optimizer) -> bool:
    """Apply the guard after an epoch; True when training must end."""
    action = guard.update(record["epoch"], record["holdout_pgd"], model, opt)
    if action != "continue":
        guard.restore(model, opt)
        record["guard"] = action
    return action == "stop"
