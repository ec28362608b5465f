"""Stage `analyse`: representation statistics of every encoder of one dataset.

For each encoder, on train and test features (L2-normalised, no augmentation):
uniformity (Wang and Isola, t = 2), mean intra- and inter-class cosine distance, the
nearest-other-class centroid margin distribution (leave-one-out own centroid) and the
class-pair distance matrix; on the test split also alignment between two augmented views
(the encoder's own pretraining augmentation). Uniformity, within-class uniformity and
margins are measured in three spaces (`spaces`):

  backbone    the backbone output, normalised (after the final ReLU: a narrow cone);
  centred     the backbone output minus the split's mean, normalised: the geometry a linear head
              with a bias sees (it is blind to the common offset). The primary space of claim C2;
  projection  the pretraining head's output, normalised: the space the contrastive loss shapes
              (MLP heads only; none for CE).

On the test split also the feature sensitivity (`pipeline.sensitivity`), per sample, in the
centred space: the displacement under a feature-space PGD and under a random sign perturbation
of Linf radius `sensitivity_eps`, divided by the mean distance between class means.
Writes `representation.json` (the report draws its class-pair distance heat-maps).

Dual-BN encoders (CLAE, ACL) are analysed through the BN branch the classifiers are
fine-tuned and evaluated with (`--bn-branch`, which the rule takes from
`finetune.dual_bn_branch`), so the geometry described is that of the network attacked;
each encoder's `bn_branch` is recorded (None without dual BN).

    python -m pipeline.analyse --cfg '<json of analyse>' --data results/decode/digits \
        --encoder simclr:0:results/pretrain/digits/simclr/seed0/encoder.pt [...] \
        --bn-branch adv --out-json .../representation.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from pipeline import runtime
from pipeline.analyse.representation import (
    alignment,
    between_class_distance,
    centred,
    centroid_margins,
    class_distance_matrix,
    intra_inter,
    uniformity,
    uniformity_per_sample,
    within_class_uniformity,
)
from pipeline.augment import augment
from pipeline.budget import per_255
from pipeline.config import AnalyseConfig, ModelConfig, from_dict, from_json
from pipeline.data import Split, embed, load_split
from pipeline.environment import environment
from pipeline.io import read_json, sealed, write_json
from pipeline.logs import stage_cli
from pipeline.mine.embeddings import projection_from_state
from pipeline.models.classifier import BN_BRANCHES, classifier_from_state, encoder_bn_branch, load_classifier_state, load_encoder
from pipeline.sensitivity import feature_displacement

PRIMARY_SPACE = "centred"  # claim C2's space: the one the linear head (with bias) and the attacks act through


def subset_indices(size: int, n: int) -> list[int]:
    """Indices of n evenly spaced samples out of `size` (all of them when n >= size)."""
    if n >= size:
        return list(range(size))
    return torch.linspace(0, size - 1, n).round().long().tolist()


def subset(split: Split, n: int) -> Split:
    """n evenly spaced samples, in order.

    Evenly spaced, not the first n: video splits are decoded class by class (UCF101 lists
    are sorted by class), so a prefix would hold only the first classes. Sorted indices
    keep memory-mapped reads sequential.
    """
    if n >= len(split):
        return split
    idx = torch.tensor(subset_indices(len(split), n))
    x = split.x[idx.to(split.x.device)] if isinstance(split.x, torch.Tensor) else split.x[idx.numpy()]
    return Split(x=x, y=split.y[idx.to(split.y.device)], device=split.device)


def rounded(values: torch.Tensor) -> list[float | None]:
    return [None if v != v else round(v, 6) for v in values.tolist()]  # NaN (no own centroid) -> null


def space_stats(f: torch.Tensor, y: torch.Tensor, classes: int, t: float) -> dict:
    """Uniformity, within-class uniformity and margins of unit features f (N, D), with their per-sample values."""
    margins = centroid_margins(f, y, classes)
    finite = margins[torch.isfinite(margins)]  # a sample alone in its class has no leave-one-out centroid
    if len(finite) == 0:
        finite = torch.full((1,), float("nan"), device=f.device)
    q = torch.nanquantile(finite, torch.tensor([0.1, 0.5, 0.9], device=f.device, dtype=finite.dtype)).tolist()
    return {"uniformity": uniformity(f, t), "within_class_uniformity": within_class_uniformity(f, y, t),
            "margin": {"mean": float(finite.mean()), "p10": q[0], "median": q[1], "p90": q[2],
                       "negative_share": float((finite < 0).float().mean())},
            # per sample (the same samples for every encoder of a dataset), for paired comparisons
            "per_sample": {"margin": rounded(margins), "uniformity": rounded(uniformity_per_sample(f, t))}}


def split_stats(raw: torch.Tensor, y: torch.Tensor, classes: int, t: float, projected: torch.Tensor | None) -> dict:
    """Statistics of one split's raw backbone features (N, D) and, if any, projection outputs (N, P)."""
    f = torch.nn.functional.normalize(raw, dim=1)
    intra, inter = intra_inter(f, y)
    spaces = {"backbone": space_stats(f, y, classes, t), "centred": space_stats(centred(raw), y, classes, t)}
    if projected is not None:
        spaces["projection"] = space_stats(torch.nn.functional.normalize(projected, dim=1), y, classes, t)
    return {**spaces[PRIMARY_SPACE], "space": PRIMARY_SPACE, "spaces": spaces,
            "intra_class_distance": intra, "inter_class_distance": inter,
            "class_distances": class_distance_matrix(f, y, classes).tolist()}


def head_of(state: dict, device: torch.device) -> torch.nn.Module | None:
    """The pretraining MLP projection head, or None (CE's classifier, a dual-BN head)."""
    try:
        return projection_from_state(state, device)
    except (ValueError, RuntimeError):
        return None


def sensitivity_stats(encoder, test: Split, raw: torch.Tensor, classes: int, cfg: AnalyseConfig, device: torch.device) -> dict:
    """Per-sample feature displacement (worst case and random sign) in the centred space, relative to the class spread.

    raw: the test subset's backbone features (N, D), already computed: their mean centres the space.
    """
    n = min(cfg.sensitivity_samples, len(test))
    if n == 0:
        return {}
    mean = raw.mean(0, keepdim=True)
    scale = between_class_distance(centred(raw, mean), test.y, classes)
    feats = lambda v: centred(encoder(v), mean)  # noqa: E731
    gen = torch.Generator(device=device).manual_seed(0)
    worst, random = [], []
    for idx in torch.arange(n, device=device).split(cfg.batch_size):
        w, r = feature_displacement(feats, test.batch(idx), cfg.sensitivity_eps, cfg.sensitivity_steps, gen)
        worst.append(w / scale)
        random.append(r / scale)
    return {"eps_255": per_255(cfg.sensitivity_eps), "steps": cfg.sensitivity_steps, "samples": n, "space": "centred",
            "between_class_distance": scale,
            "per_sample": {"displacement": rounded(torch.cat(worst)), "random_displacement": rounded(torch.cat(random))}}


def load_any_encoder(path: Path, device: torch.device, bn_branch: str) -> tuple[torch.nn.Module, dict | None]:
    """A pretrain encoder and its checkpoint, or the encoder of a match-stage classifier (the matched
    supervised snapshot) and None: it has no pretraining head or augmentation of its own."""
    if path.name == "classifier.pt":
        return classifier_from_state(load_classifier_state(path), device).encoder, None
    return load_encoder(path, device, bn_branch)


def encoder_stats(path: Path, train: Split, test: Split, classes: int, cfg: AnalyseConfig, rt, bn_branch: str) -> dict:
    encoder, state = load_any_encoder(path, rt.device, bn_branch)
    head = head_of(state, rt.device) if state is not None else None

    def features(s: Split) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone features (N, D) and, with an MLP head, its outputs (N, P)."""
        with torch.no_grad():
            raw = embed(encoder, s, cfg.batch_size)
            projected = None if head is None else torch.cat([head(raw[i : i + cfg.batch_size]) for i in range(0, len(raw), cfg.batch_size)])
        return raw, projected

    (train_raw, train_proj), (test_raw, test_proj) = features(train), features(test)
    out = {"train": split_stats(train_raw, train.y, classes, cfg.uniformity_t, train_proj),
           "test": split_stats(test_raw, test.y, classes, cfg.uniformity_t, test_proj)}
    out["test"]["alignment"] = None
    if state is not None:  # alignment under the encoder's own pretraining augmentation
        spec = from_dict(ModelConfig, json.loads(state["config"])["model"], "pretrain.model").augment
        gen = torch.Generator(device=rt.device).manual_seed(0)
        with torch.no_grad():
            x = test.batch(torch.arange(len(test), device=rt.device))
            f1 = torch.nn.functional.normalize(encoder(augment(x, spec, gen)), dim=1)
            f2 = torch.nn.functional.normalize(encoder(augment(x, spec, gen)), dim=1)
        out["test"]["alignment"] = alignment(f1, f2)
    out["test"]["sensitivity"] = sensitivity_stats(encoder, test, test_raw, classes, cfg, rt.device)
    out["bn_branch"] = encoder_bn_branch(state, bn_branch) if state is not None else None
    return out


def run(cfg: AnalyseConfig, data_dir: Path, encoders: list[tuple[str, int, Path]], out_json: Path, threads: int = 1,
        bn_branch: str = "adv") -> dict:
    """Statistics of every encoder; `bn_branch`: finetune.dual_bn_branch (its schema default here), for dual-BN encoders."""
    rt = runtime.setup(cfg.device, "fp32", threads)
    classes = read_json(data_dir / "meta.json")["num_classes"]
    full = {name: load_split(data_dir, name, rt.device) for name in ("train", "test")}
    indices = {name: subset_indices(len(split), cfg.max_samples) for name, split in full.items()}
    train, test = (subset(full[name], cfg.max_samples) for name in ("train", "test"))
    stats = {f"{method}:{seed}": encoder_stats(path, train, test, classes, cfg, rt, bn_branch) for method, seed, path in encoders}
    write_json(out_json, sealed({"encoders": stats, "config": cfg.__dict__, "sample_indices": indices,
                                 "environment": environment()}))  # the report verifies the seal
    return stats


def parse_encoder(text: str) -> tuple[str, int, Path]:
    method, seed, path = text.split(":", 2)
    return method, int(seed), Path(path)


def main(argv: list[str] | None = None) -> None:
    parser = stage_cli("analyse", __doc__, argv, "JSON of the `analyse` section", gpu=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--encoder", type=parse_encoder, action="append", required=True, help="method:seed:path")
    parser.add_argument("--bn-branch", choices=BN_BRANCHES, default="adv",
                        help="finetune.dual_bn_branch: BN branch of dual-BN encoders (the rule passes the study's; default adv)")
    parser.add_argument("--out-json", type=Path, required=True)
    args = parser.parse_args(argv)
    stats = run(from_json(AnalyseConfig, args.cfg, "analyse"), args.data, args.encoder, args.out_json, args.threads, args.bn_branch)
    print(f"analyse: {len(stats)} encoders", file=sys.stderr)

