"""Stage `mine`: false-negative candidates from a warm-up CSL encoder, with their quality.

The training split is embedded by the warm-up encoder without augmentation (backbone features by
default; clips as the mean of their windows of the warm-up's clip length, see
pipeline/mine/embeddings.py) and pairs are flagged by `algorithm`:
  kmeans     same cluster (spherical k-means); several cluster counts intersect;
  knn        top-`knn_k` cosine neighbours;
  threshold  cosine similarity above `threshold` (at most 256 neighbours per anchor);
  fnc        top-`knn_k` by support-view similarity: each sample is seen through its base embedding
             and `support_views` augmented views, and a pair's similarity is the max (or mean) over
             all view pairs (FNC, Huynh et al. 2022).
Output `false_negatives.npz` holds `labels` (N,) or `neighbours` (N, K, -1 padded) for the pretrain
stage. `quality.json` holds the chosen algorithm's pair precision / recall against the true labels
(and x chance, purity, NMI, pairs lost per anchor) and, with `compare`, the same numbers for all four
algorithms on the same embeddings (`candidates`), for the report's mining table.

    python -m pipeline.mine --cfg '<json of mine>' --data results/decode/digits \
        --encoder results/pretrain/digits/simclr/seed0/encoder.pt --out results/mine/digits/seed0
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import runtime
from pipeline.augment import AugmentSpec
from pipeline.config import MineConfig, from_dict, from_json
from pipeline.data import load_split
from pipeline.environment import environment
from pipeline.io import atomic_path, sealed, sha256_file, write_json
from pipeline.logs import stage_cli
from pipeline.mine.algorithms import fnc_table, kmeans_labels, knn_table, select_k, threshold_table
from pipeline.mine.embeddings import base_embeddings, feature_fn, support_spec, support_views
from pipeline.mine.quality import chance_precision, label_pair_quality, neighbour_pair_quality
from pipeline.models.classifier import encoder_bn_branch, load_encoder

ALGORITHMS = ("kmeans", "knn", "threshold", "fnc")


def warmup_augment(state: dict, encoder_path: Path) -> AugmentSpec:
    """The augmentation the warm-up encoder was trained with (from its checkpoint's config)."""
    try:
        return from_dict(AugmentSpec, json.loads(state["config"])["model"]["augment"], f"{encoder_path}: model.augment")
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{encoder_path}: no pretrain config with model.augment in the checkpoint ({e!r})") from e


def mine_candidates(algorithm: str, z: torch.Tensor, views: torch.Tensor | None, cfg: MineConfig, seed: int) -> dict:
    """One algorithm's output arrays: {"labels": (N,)} or {"neighbours": (N, K)}.

    z: unit base embeddings (N, D); views: unit views (V, N, D), base first (fnc only).
    """
    if algorithm == "kmeans":
        return {"labels": kmeans_labels(z, cfg.clusters, cfg.restarts, cfg.iterations, seed)}
    if algorithm == "knn":
        return {"neighbours": knn_table(z, cfg.knn_k)}
    if algorithm == "threshold":
        return {"neighbours": threshold_table(z, cfg.threshold)}
    if algorithm == "fnc":
        assert views is not None, "fnc needs support views"
        return {"neighbours": fnc_table(views, cfg.knn_k, cfg.support_aggregate)}
    raise ValueError(f"mine.algorithm: unknown {algorithm!r}; choose one of {ALGORITHMS}")


def quality_of(arrays: dict, truth: np.ndarray) -> dict:
    """Pair quality of one algorithm's output against the true labels (N,)."""
    if "labels" in arrays:
        return label_pair_quality(arrays["labels"], truth)
    return neighbour_pair_quality(arrays["neighbours"], truth)


def settings_of(algorithm: str, cfg: MineConfig) -> dict:
    """The settings that define one algorithm's candidates (for the comparison table)."""
    return {"kmeans": {"clusters": cfg.clusters, "restarts": cfg.restarts},
            "knn": {"k": cfg.knn_k},
            "threshold": {"threshold": cfg.threshold},
            "fnc": {"k": cfg.knn_k, "support_views": cfg.support_views, "aggregate": cfg.support_aggregate,
                    "crop_scale_min": cfg.support_crop_scale_min}}[algorithm]


def summary(q: dict, algorithm: str, cfg: MineConfig) -> dict:
    keys = ("pair_precision", "pair_recall", "x_chance", "flagged_pairs")
    return {**{k: q[k] for k in keys}, "settings": settings_of(algorithm, cfg)}


def run(cfg: MineConfig, seed: int, data_dir: Path, encoder_path: Path, out: Path, threads: int = 1) -> dict:
    """Mine, write `false_negatives.npz` and `quality.json` under `out`; returns the quality dict."""
    if cfg.algorithm not in ALGORITHMS:
        raise ValueError(f"mine.algorithm: unknown {cfg.algorithm!r}; choose one of {ALGORITHMS}")
    rt = runtime.setup(cfg.device, "fp32", threads)
    start = time.perf_counter()
    train = load_split(data_dir, "train", rt.device)
    # the clean BN branch of a dual-BN warm-up encoder: mining serves clean pretraining pairs
    encoder, state = load_encoder(encoder_path, rt.device, "clean")
    spec = warmup_augment(state, encoder_path)
    fn = feature_fn(encoder, state, cfg.features, rt.device)
    window = spec.temporal_crop if cfg.temporal_windows and train.is_video else 0
    z = base_embeddings(fn, train, cfg.batch_size, window)
    algorithms = ALGORITHMS if cfg.compare else (cfg.algorithm,)
    views = None
    selecting = bool(cfg.select_k) and cfg.algorithm in ("knn", "fnc")
    if "fnc" in algorithms or selecting:
        gen = torch.Generator(device=rt.device).manual_seed(seed)
        extra = support_views(fn, train, cfg.batch_size, support_spec(spec, cfg.support_crop_scale_min), cfg.support_views, gen)
        views = torch.cat([z[None], extra])  # the base embedding is view 0
    selection = None
    if selecting:  # before any label is read: the choice cannot depend on them
        assert views is not None
        chosen, agreement = select_k(views, cfg.select_k, cfg.support_aggregate, cfg.stability_tolerance)
        selection = {"criterion": "chance-corrected split-half agreement of support-view neighbours (labels not read)",
                     "chosen_k": chosen, "agreement": {str(k): round(a, 4) for k, a in agreement.items()},
                     "tolerance": cfg.stability_tolerance}
        cfg = dataclasses.replace(cfg, knn_k=chosen)
    truth = train.y.cpu().numpy()
    outputs = {name: mine_candidates(name, z, views, cfg, seed) for name in algorithms}
    quality = quality_of(outputs[cfg.algorithm], truth)
    if cfg.compare:
        quality["candidates"] = {name: summary(quality_of(arrays, truth), name, cfg) for name, arrays in outputs.items()}
    if selection is not None:  # labels score each candidate k afterwards, for the report only
        for k in selection["agreement"]:
            q = quality_of({"neighbours": (fnc_table(views, int(k), cfg.support_aggregate) if cfg.algorithm == "fnc"
                                           else knn_table(z, int(k)))}, truth)
            selection.setdefault("quality", {})[k] = {"pair_precision": q["pair_precision"], "pair_recall": q["pair_recall"]}
        quality["selection"] = selection
    quality.update(algorithm=cfg.algorithm, chance=chance_precision(truth), windows=window, features=cfg.features,
                   seconds=round(time.perf_counter() - start, 3), samples=len(truth), encoder=str(encoder_path),
                   bn_branch=encoder_bn_branch(state, "clean"), config=cfg.__dict__)
    with atomic_path(out / "false_negatives.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **outputs[cfg.algorithm])
    quality["false_negatives_sha256"] = sha256_file(out / "false_negatives.npz")  # pretrain verifies it
    write_json(out / "quality.json", sealed({**quality, "environment": environment()}))  # pretrain and the report verify it
    return quality


def main(argv: list[str] | None = None) -> None:
    parser = stage_cli("mine", __doc__, argv, "JSON of the `mine` section", gpu=True)
    parser.add_argument("--seed", type=int, default=0, help="k-means and support-view seed")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, required=True, help="warm-up encoder checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args(argv)
    q = run(from_json(MineConfig, args.cfg, "mine"), args.seed, args.data, args.encoder, args.out, args.threads)
    times = lambda x: "n/a" if x is None else format(x, ".2f")  # noqa: E731
    print(f"mine: {q['algorithm']} pair precision {q['pair_precision']:.3f} recall {q['pair_recall']:.3f} "
          f"({times(q['x_chance'])} x chance {q['chance']:.3f}) in {q['seconds']:.1f} s", file=sys.stderr)
    if "selection" in q:
        print(f"  k = {q['selection']['chosen_k']} chosen without labels; agreement {q['selection']['agreement']}", file=sys.stderr)
    for name, c in q.get("candidates", {}).items():
        print(f"  {name:9s} precision {c['pair_precision']:.3f} recall {c['pair_recall']:.3f} x chance {times(c['x_chance'])} "
              f"{c['settings']}", file=sys.stderr)

