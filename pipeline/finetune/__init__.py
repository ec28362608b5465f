"""Stage `finetune`: a classifier on top of a pretrained encoder, under one protocol.

Protocols (config `finetune.protocols`; a protocol's name is `slf`, or `alf`/`aff`
optionally followed by `_<suffix>`, e.g. `aff_trades`):

- slf (standard linear fine-tuning, the linear-evaluation protocol): the encoder is frozen,
  its features of the un-augmented training split are computed once, and only a linear
  head is trained on them (Adam).
- alf (adversarial linear fine-tuning): the encoder is frozen (eval mode, no gradients) and
  only the head is trained adversarially; the inner attack goes through encoder and head,
  so features cannot be precomputed.
- aff (adversarial full fine-tuning): encoder and head are trained adversarially.

The adversarial methods (pgd_at, trades, fgsm_rs, spat, dynamic) live in
`pipeline/finetune/adversarial/`. For slf and alf the encoder's weights (BatchNorm statistics
included) are hashed before and after, and the stage fails if they changed (a "linear
eval" that is not frozen is a known trap).

Dual-BN encoders (CLAE, ACL) are fine-tuned through the BN branch `dual_bn_branch` (default
`adv`, as ACL's reference code, Jiang et al. 2020); the classifier then holds that branch,
and metrics.json and the checkpoint record it as `bn_branch` (None without dual BN).

    python -m pipeline.finetune --cfg '<json of finetune>' --protocol slf --seed 0 \
        --data results/decode/digits --encoder .../encoder.pt --out-model .../classifier.pt \
        --out-metrics .../metrics.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline import runtime
from pipeline.config import AdversarialConfig, FinetuneConfig, from_json, to_dict
from pipeline.data import Split, batch_indices, embed, load_split
from pipeline.environment import environment
from pipeline.finetune.adversarial import TRAINING
from pipeline.finetune.adversarial.inner import to_layout
from pipeline.finetune.adversarial.loop import Holdout, adversarial_train, split_holdout
from pipeline.health import Diverged, at_chance_despite_features, require_finite
from pipeline.io import read_json, save_torch, sealed, sha256_file, write_json
from pipeline.logs import stage_cli
from pipeline.models import Classifier, Encoder
from pipeline.models.classifier import CosineClassifier, encoder_bn_branch, load_encoder

KINDS = ("slf", "alf", "aff")


def protocol_kind(name: str) -> str:
    """`aff_trades` -> `aff`; the schema allows slf, alf, aff and alf_*/aff_* names."""
    kind = name.split("_")[0]
    if kind not in KINDS:
        raise ValueError(f"protocol {name!r}: the name must start with one of {KINDS}")
    return kind


def weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


DIVERGED_LOSS_FACTOR = 2.0  # final / untrained training loss above which the SLF head diverged


def train_linear_head(feats: torch.Tensor, labels: torch.Tensor, classes: int, cfg: FinetuneConfig, seed: int) -> torch.nn.Linear:
    """Adam (or SGD with momentum 0.9, `finetune.optimizer`) on precomputed features (N, D); returns the trained head.

    Raises Diverged if training ends with a non-finite full-pass training loss, or one more than
    DIVERGED_LOSS_FACTOR times the untrained head's (about ln(classes)): the optimiser blew up. A
    diverged head (lr 1e6) ends orders of magnitude above; a short, noisy run (one epoch on tiny
    data) may end a little above, and the chance-level check judges that one.
    """
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(feats.shape[1], classes).to(feats.device)
    start_loss = full_pass_loss(head, feats, labels)
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    else:
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
    end_loss = full_pass_loss(head, feats, labels)
    if not end_loss < DIVERGED_LOSS_FACTOR * start_loss:  # NaN compares False too
        raise Diverged(f"the linear head's training loss went from {start_loss:.4g} (untrained) to {end_loss:.4g}: "
                       f"the training diverged; lower finetune.lr (now {cfg.lr})")
    return head


def full_pass_loss(head: torch.nn.Linear, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy of `head` over all features (N, D): one matmul, no gradients."""
    with torch.no_grad():
        return float(F.cross_entropy(head(feats), labels))


def freeze(module: torch.nn.Module) -> str:
    """No gradients, eval mode; returns the weights' digest to check afterwards."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    return weights_digest(module)


def check_frozen(module: torch.nn.Module, before: str, protocol: str) -> None:
    if weights_digest(module) != before:
        raise RuntimeError(f"the frozen encoder changed during {protocol} fine-tuning")


def split_accuracy(model: torch.nn.Module, split: Split, batch_size: int) -> float:
    """Clean accuracy over a whole split, model in eval mode."""
    return float((embed(model, split, batch_size).argmax(1) == split.y).float().mean())


def fit_slf(encoder: Encoder, cfg: FinetuneConfig, name: str, seed: int, train: Split, test: Split,
            classes: int) -> tuple[Classifier, dict[str, float]]:
    """A linear head on the frozen encoder's features; returns the classifier and its train/test accuracy."""
    before = freeze(encoder)
    bs = max(cfg.batch_size, 256)
    train_feats, test_feats = embed(encoder, train, bs), embed(encoder, test, bs)
    head = train_linear_head(train_feats, train.y, classes, cfg, seed)
    check_frozen(encoder, before, name)
    model = Classifier(encoder, classes)
    model.head.load_state_dict(head.state_dict())
    with torch.no_grad():
        acc = {split: float((head(f).argmax(1) == s.y).float().mean())
               for split, f, s in (("train", train_feats, train), ("test", test_feats, test))}
    return model, acc


def run_slf(cfg: FinetuneConfig, name: str, seed: int, data_dir: Path, encoder_path: Path, rt) -> tuple[Classifier, dict]:
    encoder, state = load_encoder(encoder_path, rt.device, cfg.dual_bn_branch)
    train, test = load_split(data_dir, "train", rt.device), load_split(data_dir, "test", rt.device)
    classes = read_json(data_dir / "meta.json")["num_classes"]
    model, acc = fit_slf(encoder, cfg, name, seed, train, test, classes)
    return model, {"train_acc": acc["train"], "test_acc": acc["test"], "encoder_frozen": True, "model_args": state["model_args"],
                   "bn_branch": encoder_bn_branch(state, cfg.dual_bn_branch), "encoder_knn_acc": state.get("knn_acc")}


def build_classifier(encoder: Encoder, classes: int, adv: AdversarialConfig) -> Classifier:
    if TRAINING[adv.training].cosine_head:
        return CosineClassifier(encoder, classes, adv.spat.scale)
    return Classifier(encoder, classes)


def clean_start(model: Classifier, train: Split, train_idx: torch.Tensor, cfg: FinetuneConfig, seed: int) -> None:
    """Load the SLF head (trained on the non-held-out samples' features) into `model`: the clean start."""
    feats = embed(model.encoder, train, max(cfg.batch_size, 256))[train_idx.to(train.y.device)]
    head = train_linear_head(feats, train.y[train_idx.to(train.y.device)], model.head.out_features, cfg, seed)
    model.head.load_state_dict(head.state_dict())


def run_adversarial(cfg: FinetuneConfig, name: str, seed: int, data_dir: Path, encoder_path: Path, rt) -> tuple[Classifier, dict]:
    """ALF (frozen encoder) or AFF (everything trained) with the entry's adversarial method."""
    kind, adv = protocol_kind(name), cfg.protocols[name]
    encoder, state = load_encoder(encoder_path, rt.device, cfg.dual_bn_branch)
    before = freeze(encoder) if kind == "alf" else None
    train, test = load_split(data_dir, "train", rt.device), load_split(data_dir, "test", rt.device)
    model = build_classifier(encoder, read_json(data_dir / "meta.json")["num_classes"], adv).to(rt.device)
    train_idx, hold_idx = split_holdout(len(train), adv.holdout, seed)
    if TRAINING[adv.training].regulated:
        clean_start(model, train, train_idx, cfg, seed)
    model = runtime.prepare_module(model, rt, encoder.is_video)
    hold = Holdout(x=to_layout(train.batch(hold_idx.to(rt.device)), rt), y=train.y[hold_idx.to(rt.device)])
    frozen = (model.encoder,) if kind == "alf" else ()
    history = adversarial_train(model, train, train_idx, hold, adv, rt, frozen, seed)
    if before is not None:
        check_frozen(model.encoder, before, name)
    bs = max(adv.batch_size, 256)
    return model, {"train_acc": split_accuracy(model, train, bs), "test_acc": split_accuracy(model, test, bs),
                   "encoder_frozen": kind == "alf", "model_args": state["model_args"], "training": adv.training,
                   "bn_branch": encoder_bn_branch(state, cfg.dual_bn_branch),
                   "encoder_knn_acc": state.get("knn_acc"),
                   "attack_bn": "eval" if kind == "alf" else adv.attack_bn, "holdout_samples": len(hold_idx),
                   "train_samples": len(train_idx), **history}


PROTOCOLS = {"slf": run_slf, "alf": run_adversarial, "aff": run_adversarial}


def checkpoint(model: Classifier, metrics: dict, protocol: str) -> dict:
    """What evaluate's `load_classifier` reads back (plus the head kind for a cosine classifier)."""
    state = {"model": model.state_dict(), "model_args": metrics["model_args"], "num_classes": model.head.out_features,
             "protocol": protocol, "head": "linear", "bn_branch": metrics["bn_branch"]}
    if isinstance(model, CosineClassifier):
        state.update(head="cosine", cosine_scale=model.scale)
    return state


def check_not_diverged(model: Classifier, metrics: dict, data_dir: Path, protocol: str) -> None:
    """Raise Diverged for non-finite weights, or an SLF head at chance on a good encoder.

    The chance rule is `health.at_chance_despite_features`: test accuracy within 3 binomial SDs
    of 1/classes while the encoder's kNN test accuracy (from pretraining) is > 10 SDs above.
    It is an error for SLF only: a clean linear head on features that good has no excuse. ALF/AFF
    trade clean accuracy for robustness and the cheap study budgets (1 epoch, PGD-2) can leave
    them near chance legitimately, so there it is a warning, kept in the metrics (`warnings`).
    """
    kind = protocol_kind(protocol)
    lr_keys = "finetune.lr" if kind == "slf" else f"finetune.protocols.{protocol}.lr / encoder_lr"
    try:
        require_finite(model, f"finetune {protocol}")
    except Diverged as error:
        raise Diverged(f"{error}: the training diverged; lower {lr_keys}") from None
    meta = read_json(data_dir / "meta.json")
    why = at_chance_despite_features(metrics["test_acc"], metrics.get("encoder_knn_acc"), meta["num_classes"],
                                     meta["test"]["shape"][0])
    if why and kind == "slf":
        raise Diverged(f"finetune {protocol}: {why}: the head learned nothing usable. If it diverged, lower "
                       "finetune.lr; if it is undertrained, raise finetune.epochs (or finetune.lr)")
    if why:
        metrics.setdefault("warnings", []).append(why)
        print(f"finetune {protocol}: WARNING: {why}", file=sys.stderr)


def run(cfg: FinetuneConfig, protocol: str, seed: int, data_dir: Path, encoder_path: Path, out_model: Path,
        out_metrics: Path, threads: int = 1) -> dict:
    kind = protocol_kind(protocol)
    if kind != "slf" and protocol not in cfg.protocols:
        raise ValueError(f"protocol {protocol!r} has no entry under finetune.protocols (have {sorted(cfg.protocols)})")
    rt = runtime.setup(cfg.device, "fp32" if kind == "slf" else cfg.precision, threads)
    runtime.seed_everything(seed)
    start = time.perf_counter()
    model, metrics = PROTOCOLS[kind](cfg, protocol, seed, data_dir, encoder_path, rt)
    check_not_diverged(model, metrics, data_dir, protocol)  # before anything is written
    metrics.update(protocol=protocol, kind=kind, seed=seed, seconds=round(time.perf_counter() - start, 3),
                   runtime=rt.describe(), peak_memory_mb=round(runtime.peak_memory_mb(rt), 1),
                   config=to_dict(dataclasses.replace(cfg, protocols={k: v for k, v in cfg.protocols.items() if k == protocol})))
    save_torch(out_model, checkpoint(model, metrics, protocol))
    metrics["model_sha256"] = sha256_file(out_model)  # evaluate verifies it
    write_json(out_metrics, sealed({**metrics, "environment": environment()}))  # evaluate and the report verify the seal
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = stage_cli("finetune", __doc__, argv, "JSON of the `finetune` section (protocols: this job's entry)", gpu=True)
    parser.add_argument("--protocol", required=True, help="slf, alf[_suffix] or aff[_suffix]")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, required=True)
    parser.add_argument("--out-model", type=Path, required=True)
    parser.add_argument("--out-metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        m = run(from_json(FinetuneConfig, args.cfg, "finetune"), args.protocol, args.seed, args.data, args.encoder,
                args.out_model, args.out_metrics, args.threads)
    except Diverged as error:
        sys.exit(f"finetune: {error}. No classifier or metrics were written.")
    print(f"finetune {args.protocol}: train {m['train_acc']:.4f} test {m['test_acc']:.4f} ({m['seconds']:.1f} s)", file=sys.stderr)

