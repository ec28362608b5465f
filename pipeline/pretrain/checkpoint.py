"""Pretrain I/O: the run fingerprint, the resumable per-epoch checkpoint and the finished encoder file."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from torch import nn

from pipeline.config import PretrainConfig
from pipeline.errors import NonFiniteLoss
from pipeline.health import Diverged, non_finite_entries, require_finite
from pipeline.io import load_torch, save_torch
from pipeline.models.dual_bn import branch_state_dict, has_dual_bn


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


def config_fingerprint(cfg_json: str, seed: int, data_dir: Path) -> str:
    """Identifies a run: a checkpoint from other settings is never resumed."""
    meta = (data_dir / "meta.json").read_bytes()
    return hashlib.sha256(cfg_json.encode() + str(seed).encode() + meta).hexdigest()[:16]


def save_checkpoint(path: Path, nets, opt, sched, epoch: int, gens, history: list, fingerprint: str,
                    snapshots: list[dict] | None = None) -> None:
    """Write the resumable state atomically; refuses (NonFiniteLoss) a state with non-finite weights."""
    require_finite_nets(nets, epoch)
    save_torch(path, {
        "nets": nets.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch,
        "gens": [g.get_state() for g in gens], "history": json.dumps(history), "fingerprint": fingerprint,
        "snapshots": snapshots or [],
    })


def try_resume(path: Path, nets, opt, sched, gens, fingerprint: str, snapshots: list[dict] | None = None) -> tuple[int, list]:
    """Load a matching checkpoint; returns (epochs done, history). (0, []) when there is none.
    The encoder snapshots taken so far are put back into `snapshots`."""
    if not path.exists():
        return 0, []
    state = load_torch(path)
    if state["fingerprint"] != fingerprint:
        print(f"pretrain: ignoring {path}: it was written with other settings", file=sys.stderr)
        return 0, []
    if non_finite_entries(state["nets"]):  # written before checkpoints were checked: not a good state
        print(f"pretrain: ignoring {path}: it holds non-finite weights", file=sys.stderr)
        return 0, []
    if snapshots is not None:
        snapshots[:] = state.get("snapshots", [])
    nets.load_state_dict(state["nets"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    for g, s in zip(gens, state["gens"], strict=False):  # an older checkpoint may hold more generators
        g.set_state(s)
    print(f"pretrain: resumed from {path} after epoch {state['epoch']}", file=sys.stderr)
    return state["epoch"], json.loads(state["history"])


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


def snapshot_steps(total_steps: int, count: int) -> set[int]:
    """`count` optimiser steps (1-based) evenly spaced over training, the last one included."""
    if count <= 0 or total_steps <= 0:
        return set()
    return {max(1, round(total_steps * (k + 1) / count)) for k in range(count)}


def encoder_snapshot(nets: nn.ModuleDict, step: int, steps_per_epoch: int) -> dict:
    """The encoder's weights after `step` (CPU copies; clean BN for dual-BN models, as `save_encoder`)."""
    return {"step": step, "epoch": step / steps_per_epoch,
            "encoder": {k: v.detach().cpu().clone() for k, v in branch_state_dict(nets["encoder"]).items()}}


def save_snapshots(path: Path, snapshots: list[dict], cfg: PretrainConfig, meta: dict) -> None:
    """snapshots.pt: the encoder at evenly spaced steps of training (empty for methods without snapshots)."""
    model_args = {"backbone": cfg.model.backbone, "width": cfg.model.width, "small_input": cfg.model.small_input,
                  "mean": meta["mean"], "std": meta["std"]}
    save_torch(path, {"model_args": model_args, "snapshots": snapshots})
