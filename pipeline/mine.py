"""Stage `mine`: false-negative candidates from a warm-up CSL encoder, with their quality.

The training split is embedded without augmentation (batched on the device) and pairs
are flagged by one of:
  kmeans     same cluster (spherical k-means on the device); with several cluster counts
             a pair is flagged only if it shares a cluster in every clustering, which is
             expressed as one combined pseudo-label;
  knn        mutual-or-one-way top-k cosine neighbours;
  threshold  cosine similarity above `threshold` (at most 256 neighbours per anchor).
Output `false_negatives.npz` holds `labels` (N,) or `neighbours` (N, K, -1 padded) for
the pretrain stage; `quality.json` holds pair precision/recall against the true labels,
cluster purity and NMI, and how many pairs each anchor loses.

    python -m pipeline.mine --cfg '<json of mine>' --data results/decode/digits \
        --encoder results/pretrain/digits/simclr/seed0/encoder.pt --out results/mine/digits/seed0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import runtime
from pipeline.classifier import load_encoder
from pipeline.config import MineConfig, from_json
from pipeline.data import embed, load_split
from pipeline.io import atomic_path, write_json
from pipeline.logs import log_header

MAX_THRESHOLD_NEIGHBOURS = 256


def spherical_kmeans(z: torch.Tensor, k: int, iterations: int, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """k-means on unit vectors z (N, D) with k-means++ seeding. Returns labels (N,) and inertia."""
    n = z.shape[0]
    centres = z[torch.randint(n, (1,), generator=gen, device=z.device)]
    for _ in range(1, k):  # k-means++: sample proportional to squared distance to the nearest centre
        d2 = (2 - 2 * z @ centres.T).clamp(min=0).min(1).values
        pick = torch.multinomial(d2 + 1e-12, 1, generator=gen)
        centres = torch.cat([centres, z[pick]])
    for _ in range(iterations):
        labels = (z @ centres.T).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, labels, z)
        empty = sums.norm(dim=1) == 0
        sums[empty] = centres[empty]  # keep an empty cluster's centre where it was
        centres = torch.nn.functional.normalize(sums, dim=1)
    labels = (z @ centres.T).argmax(1)
    inertia = float((2 - 2 * (z * centres[labels]).sum(1)).sum())
    return labels, inertia


def kmeans_labels(z: torch.Tensor, cfg: MineConfig, seed: int) -> np.ndarray:
    """Combined pseudo-labels over all cluster counts (best-inertia restart of each)."""
    gen = torch.Generator(device=z.device).manual_seed(seed)
    columns = []
    for k in cfg.clusters:
        runs = [spherical_kmeans(z, k, cfg.iterations, gen) for _ in range(cfg.restarts)]
        columns.append(min(runs, key=lambda r: r[1])[0].cpu().numpy())
    _, combined = np.unique(np.stack(columns, 1), axis=0, return_inverse=True)
    return combined.reshape(-1).astype(np.int64)


def neighbour_table(z: torch.Tensor, cfg: MineConfig, chunk: int = 1024) -> np.ndarray:
    """(N, K) neighbour indices (-1 padded) by top-k or by similarity threshold."""
    k = cfg.knn_k if cfg.algorithm == "knn" else MAX_THRESHOLD_NEIGHBOURS
    k = min(k, z.shape[0] - 1)
    rows = []
    for start in range(0, z.shape[0], chunk):
        sim = z[start : start + chunk] @ z.T
        sim[torch.arange(sim.shape[0]), torch.arange(start, start + sim.shape[0])] = -2  # never oneself
        top_sim, top_idx = sim.topk(k, dim=1)
        if cfg.algorithm == "threshold":
            top_idx = torch.where(top_sim > cfg.threshold, top_idx, -1)
        rows.append(top_idx)
    return torch.cat(rows).cpu().numpy().astype(np.int64)


def label_pair_quality(pseudo: np.ndarray, truth: np.ndarray) -> dict:
    """Pair precision/recall of "same pseudo-label" against "same true label", purity and NMI."""
    from sklearn.metrics import normalized_mutual_info_score

    table = np.zeros((pseudo.max() + 1, truth.max() + 1), np.int64)
    np.add.at(table, (pseudo, truth), 1)
    pairs = lambda c: (c * (c - 1) // 2).sum()  # noqa: E731 - number of unordered pairs per cell
    tp, flagged, true_pairs = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    lost = table.sum(1)[pseudo] - 1  # other samples flagged for each anchor
    return {
        "pair_precision": float(tp / max(flagged, 1)), "pair_recall": float(tp / max(true_pairs, 1)),
        "flagged_pairs": int(flagged), "true_pairs": int(true_pairs),
        "purity": float(table.max(1).sum() / len(pseudo)),
        "nmi": float(normalized_mutual_info_score(truth, pseudo)),
        "clusters": int((table.sum(1) > 0).sum()),
        "pairs_lost_per_anchor": {"mean": float(lost.mean()), "median": float(np.median(lost)), "max": int(lost.max())},
    }


def neighbour_pair_quality(neighbours: np.ndarray, truth: np.ndarray) -> dict:
    """Pair precision/recall of the (symmetrised) neighbour graph against the true labels."""
    n = len(truth)
    rows = np.repeat(np.arange(n), neighbours.shape[1])
    cols = neighbours.reshape(-1)
    keep = cols >= 0
    pairs = {(min(a, b), max(a, b)) for a, b in zip(rows[keep], cols[keep], strict=True)}
    a, b = (np.array(v, dtype=np.int64) for v in zip(*pairs, strict=True)) if pairs else (np.zeros(0, np.int64),) * 2
    tp = int((truth[a] == truth[b]).sum())
    counts = np.bincount(truth)
    true_pairs = int((counts * (counts - 1) // 2).sum())
    lost = np.bincount(np.concatenate([a, b]), minlength=n)
    return {
        "pair_precision": tp / max(len(pairs), 1), "pair_recall": tp / max(true_pairs, 1),
        "flagged_pairs": len(pairs), "true_pairs": true_pairs, "purity": None, "nmi": None, "clusters": None,
        "pairs_lost_per_anchor": {"mean": float(lost.mean()), "median": float(np.median(lost)), "max": int(lost.max())},
    }


def run(cfg: MineConfig, seed: int, data_dir: Path, encoder_path: Path, out: Path, threads: int = 1) -> dict:
    rt = runtime.setup(cfg.device, "fp32", threads)
    start = time.perf_counter()
    train = load_split(data_dir, "train", rt.device)
    encoder, _ = load_encoder(encoder_path, rt.device)
    z = torch.nn.functional.normalize(embed(encoder, train, cfg.batch_size), dim=1)
    truth = train.y.cpu().numpy()
    if cfg.algorithm == "kmeans":
        labels = kmeans_labels(z, cfg, seed)
        arrays, quality = {"labels": labels}, label_pair_quality(labels, truth)
    else:
        table = neighbour_table(z, cfg)
        arrays, quality = {"neighbours": table}, neighbour_pair_quality(table, truth)
    quality.update(algorithm=cfg.algorithm, seconds=round(time.perf_counter() - start, 3), samples=len(truth),
                   encoder=str(encoder_path), config=cfg.__dict__)
    with atomic_path(out / "false_negatives.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    write_json(out / "quality.json", quality)
    return quality


def main(argv: list[str] | None = None) -> None:
    log_header("mine", argv)  # the log starts with the command and a timestamp
    runtime.warn_if_gpus_idle("mine")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="JSON of the `mine` section")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, required=True, help="warm-up encoder checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    q = run(from_json(MineConfig, args.cfg, "mine"), args.seed, args.data, args.encoder, args.out, args.threads)
    print(f"mine: pair precision {q['pair_precision']:.3f} recall {q['pair_recall']:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
