"""Stage `decode`: a dataset (embedded, CIFAR, class folders, UCF101, HMDB51) -> uint8 arrays.

Outputs in `--out` (renamed into place when complete; meta.json last):
    {train,test}_x.npy   uint8, images (N,H,W,C) or clips (N,T,H,W,C), memory-mappable
    {train,test}_y.npy   int64 labels (N,)
    meta.json            classes, counts per class, index (source file, clip start frame),
                         skipped files with reasons, decoder per file, library versions, time

Files (videos, folder images) are decoded in `--threads` worker processes, each file once
and front to back; every file owns a fixed block of rows in a pre-allocated output .npy,
which its worker writes directly, so no split is ever held in memory. decord reads a video (audio
off), PyAV takes over for a file decord cannot read; a file that no decoder can read, or
whose worker misses the per-file time limit (the worker is killed, not abandoned), is
skipped and listed, and the stage fails only if the skipped share exceeds
`max_bad_fraction`. Missing roots and split files fail at once, naming the path.

    python -m pipeline.decode --cfg '<json of decode.<name>>' --out results/decode/<name> --threads 2
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import DecodeConfig, from_json
from pipeline.datasets import SOURCE_MODALITY, check_layout, cifar, folders, hmdb51, ucf101
from pipeline.datasets.digits import load_digits_uint8, stratified_split, upsample_rgb
from pipeline.datasets.pool import KillablePool
from pipeline.datasets.resize import resize_in_chunks
from pipeline.environment import environment
from pipeline.errors import TooManyBadFiles
from pipeline.io import read_npy, sha256_file, write_json, write_npy
from pipeline.logs import Progress, stage_cli

SPLITS = ("train", "test")
Items = list[tuple[Path, int]]


@dataclass
class Decoded:
    """One split: arrays (in memory, or memory-mapped from a staged file) and their provenance."""

    x: np.ndarray
    y: np.ndarray
    index: list[tuple[str, int]]  # (source, start frame or -1 for images), one per row
    skipped: list[dict[str, str]] = field(default_factory=list)
    decoders: Counter = field(default_factory=Counter)
    fallbacks: list[dict[str, str]] = field(default_factory=list)  # files PyAV read, with decord's error
    cpu_seconds: float = 0.0  # the workers' CPU time on the decoded files
    worker_seconds: float = 0.0  # the workers' wall time on them (no pool start, no waiting)


@dataclass
class Source:
    """What a reader returns: both splits and the class names (position = label)."""

    splits: dict[str, Decoded]
    classes: list[str]


# ---- in-memory sources --------------------------------------------------------------------
def decode_digits(cfg: DecodeConfig, out: Path, threads: int) -> Source:
    images, labels = load_digits_uint8()
    rgb = upsample_rgb(images, cfg.size)
    train, test = stratified_split(labels, cfg.test_fraction, cfg.split_seed)
    splits = {
        name: Decoded(rgb[idx], labels[idx], [(f"sklearn_digits[{i}]", -1) for i in idx], decoders=Counter({"sklearn": len(idx)}))
        for name, idx in (("train", train), ("test", test))
    }
    return Source(splits, [str(d) for d in range(10)])


def decode_cifar(cfg: DecodeConfig, out: Path, threads: int) -> Source:
    data = cifar.load(Path(cfg.root), cfg.source, cfg.download, cfg.verify_checksums)
    folder = cifar.FOLDERS[cfg.source]
    splits = {}
    for name in SPLITS:
        x, y = data[name]
        index = [(f"{folder}:{name}[{i}]", -1) for i in range(len(y))]
        splits[name] = Decoded(resize_in_chunks(x, cfg.size, cfg.resize), y, index, decoders=Counter({"safe_pickle": len(y)}))
    return Source(splits, data["classes"])


# ---- file sources: listing ----------------------------------------------------------------
def list_ucf101(cfg: DecodeConfig) -> tuple[dict[str, Items], list[str]]:
    root = Path(cfg.root)
    ucf101.require_layout(root, cfg.fold)
    classes = ucf101.read_class_index(root)
    return {split: ucf101.read_split(root, split, cfg.fold) for split in SPLITS}, sorted(classes, key=classes.get)


def list_hmdb51(cfg: DecodeConfig) -> tuple[dict[str, Items], list[str]]:
    listed = {split: hmdb51.read_split(Path(cfg.root), split, cfg.fold) for split in SPLITS}
    return {split: items for split, (items, _) in listed.items()}, listed["train"][1]


def list_image_folder(cfg: DecodeConfig) -> tuple[dict[str, Items], list[str]]:
    return folders.read_splits(Path(cfg.root), folders.list_images, cfg.test_fraction, cfg.split_seed)


def list_video_folder(cfg: DecodeConfig) -> tuple[dict[str, Items], list[str]]:
    return folders.read_splits(Path(cfg.root), folders.list_videos, cfg.test_fraction, cfg.split_seed)


# ---- file sources: decoding ---------------------------------------------------------------
def file_spec(cfg: DecodeConfig) -> Any:
    """The worker-side spec (ClipSpec for videos, ImageSpec for images) from the config."""
    from pipeline.datasets.tasks import ClipSpec, ImageSpec

    if SOURCE_MODALITY[cfg.source] == "video":
        return ClipSpec(cfg.frames, cfg.stride, cfg.clips_per_video, cfg.size, cfg.resize)
    return ImageSpec(cfg.size, cfg.resize)


def row_shape(spec: Any) -> tuple[tuple[int, ...], int]:
    """(shape of one output row, rows per file) for a ClipSpec or ImageSpec."""
    frame = (spec.size, spec.size, 3)
    return ((spec.frames, *frame), spec.clips) if hasattr(spec, "clips") else (frame, 1)


def staged_path(out: Path, name: str) -> Path:
    """Where a split's array is assembled before it is renamed into place."""
    return out / f".{name}.partial.npy"


def decode_files(items: Items, spec: Any, staged: Path, threads: int, timeout_s: float,
                 task: Callable[..., dict] | None = None) -> Decoded:
    """Decode (path, label) items into the memory-mapped `staged` array, `threads` files at a time.

    `task(path, out, slot, spec) -> dict` runs in a worker process (default: the modality's
    reader in `pipeline.datasets.tasks`); it is a parameter so tests can inject a hanging one.
    """
    from pipeline.datasets import tasks as worker

    task = task or (worker.write_video if hasattr(spec, "clips") else worker.write_image)
    shape, per_file = row_shape(spec)
    staged.parent.mkdir(parents=True, exist_ok=True)
    np.lib.format.open_memmap(staged, mode="w+", dtype=np.uint8, shape=(len(items) * per_file, *shape)).flush()
    pool = KillablePool(threads, timeout_s, initializer=worker.worker_init, preload=[worker.__name__])
    results: dict[int, dict] = {}
    errors: dict[int, str] = {}
    with Progress(len(items), f"decode: {staged.name}", "file") as progress:  # the log's progress lines (and ETA)
        for outcome in pool.map(task, [(str(path), str(staged), slot, spec) for slot, (path, _) in enumerate(items)]):
            if outcome.error is None:
                results[outcome.index] = outcome.result
            else:
                errors[outcome.index] = outcome.error
            progress.update()
    return assemble(items, results, errors, staged, per_file)


def assemble(items: Items, results: dict[int, dict], errors: dict[int, str], staged: Path, per_file: int) -> Decoded:
    """Labels, index and skip list in item order; drop the rows of skipped files."""
    good = sorted(results)
    decoded = Decoded(np.empty(0), np.empty(0), [])
    for slot in good:
        path, label = items[slot]
        starts = results[slot].get("starts", [-1])
        decoded.index.extend((str(path), int(s)) for s in starts)
        decoded.decoders[results[slot]["decoder"]] += 1
        if results[slot].get("fallback_reason"):
            decoded.fallbacks.append({"file": str(path), "decoder": results[slot]["decoder"], "reason": results[slot]["fallback_reason"]})
    decoded.y = np.repeat(np.asarray([items[s][1] for s in good], np.int64), per_file)
    decoded.cpu_seconds = sum(results[s].get("cpu_s", 0.0) for s in good)
    decoded.worker_seconds = sum(results[s].get("wall_s", 0.0) for s in good)
    decoded.skipped = [{"file": str(items[s][0]), "reason": errors[s]} for s in sorted(errors)]
    if errors:
        compact(staged, good, per_file)
    decoded.x = read_npy(staged, mmap=True)
    return decoded


def compact(staged: Path, keep: list[int], per_file: int) -> None:
    """Rewrite `staged` with only the row blocks of the kept files (skipped files leave gaps)."""
    src = read_npy(staged, mmap=True)
    tmp = staged.with_name(staged.name.replace(".partial", ".compact"))
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(keep) * per_file, *src.shape[1:]))
    for j, slot in enumerate(keep):
        dst[j * per_file : (j + 1) * per_file] = src[slot * per_file : (slot + 1) * per_file]
    dst.flush()
    del dst, src
    os.replace(tmp, staged)


def decode_listed(lister: Callable[[DecodeConfig], tuple[dict[str, Items], list[str]]]) -> Callable[[DecodeConfig, Path, int], Source]:
    """A reader for a file source: list its splits, then decode each split's files."""

    def read(cfg: DecodeConfig, out: Path, threads: int) -> Source:
        listed, classes = lister(cfg)
        spec = file_spec(cfg)
        splits = {name: decode_files(listed[name], spec, staged_path(out, f"{name}_x"), threads, cfg.timeout_s) for name in SPLITS}
        return Source(splits, classes)

    return read


READERS: dict[str, Callable[[DecodeConfig, Path, int], Source]] = {
    "sklearn_digits": decode_digits,
    "cifar10": decode_cifar,
    "cifar100": decode_cifar,
    "image_folder": decode_listed(list_image_folder),
    "ucf101": decode_listed(list_ucf101),
    "hmdb51": decode_listed(list_hmdb51),
    "video_folder": decode_listed(list_video_folder),
}


# ---- checks, statistics, provenance -------------------------------------------------------
def check_bad_share(splits: dict[str, Decoded], limit: float) -> None:
    skipped = [s for d in splits.values() for s in d.skipped]
    total = len(skipped) + sum(len({src for src, _ in d.index}) for d in splits.values())
    if total and len(skipped) / total > limit:
        listing = "\n".join(f"  {s['file']}: {s['reason']}" for s in skipped[:50])
        more = f"\n  ... and {len(skipped) - 50} more" if len(skipped) > 50 else ""
        raise TooManyBadFiles(f"{len(skipped)} of {total} files unreadable (> max_bad_fraction {limit}):\n{listing}{more}")


def channel_stats(x: np.ndarray, max_samples: int = 5000, max_bytes: int = 2**29) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of a fixed subsample of a uint8 (..., C) array.

    At most `max_samples` samples and `max_bytes` bytes are read, a chunk at a time with
    exact integer sums, so a memory-mapped split of any size costs bounded memory and time.
    """
    if len(x) == 0:
        return [0.5] * 3, [0.25] * 3
    per_sample = x[0].nbytes
    step = max(1, len(x) // max_samples, -(-len(x) * per_sample // max_bytes))
    chunk = max(1, 2**24 // per_sample)
    total, squares, count = np.zeros(x.shape[-1], np.uint64), np.zeros(x.shape[-1], np.uint64), 0
    for start in range(0, len(x), chunk * step):
        values = np.asarray(x[start : start + chunk * step : step]).reshape(-1, x.shape[-1])
        total += values.sum(0, dtype=np.uint64)
        squares += np.square(values, dtype=np.uint32).sum(0, dtype=np.uint64)
        count += len(values)
    mean = total / (255.0 * count)
    std = np.sqrt(np.maximum(squares / (255.0**2 * count) - mean**2, 0.0))
    return mean.round(6).tolist(), np.maximum(std, 1e-3).round(6).tolist()


def library_versions(source: str) -> dict[str, str]:
    """Versions of the libraries that read this source (from package metadata: no imports)."""
    names = ["numpy", "scikit-learn"] if source == "sklearn_digits" else ["numpy", "torch", "torchvision"]
    if SOURCE_MODALITY[source] == "video":
        names += ["decord", "av", "pytorchvideo"]
    elif source == "image_folder":
        names += ["pillow"]
    return {name: importlib.metadata.version(name) for name in names}


def split_meta(d: Decoded) -> dict[str, Any]:
    return {
        "shape": list(d.x.shape),
        "per_class": {int(k): int(v) for k, v in sorted(Counter(d.y.tolist()).items())},
        "index": d.index,
        "skipped": d.skipped,
        "decoders": dict(d.decoders),
        "fallbacks": d.fallbacks,
        "decode_cpu_seconds": round(d.cpu_seconds, 3),
    }


# ---- the stage ----------------------------------------------------------------------------
def commit(x: np.ndarray, final: Path) -> None:
    """Move a staged memory-mapped array into place, or write an in-memory one atomically."""
    staged = getattr(x, "filename", None)
    if staged is not None and Path(staged).name.endswith(".partial.npy"):
        os.replace(staged, final)
    else:
        write_npy(final, x)


def run(cfg: DecodeConfig, out: Path, threads: int) -> dict:
    start = time.perf_counter()
    out = Path(out)
    if cfg.source != "sklearn_digits":
        check_layout(cfg.source, cfg.root, cfg.fold, cfg.download)
    try:
        source = READERS[cfg.source](cfg, out, threads)
        check_bad_share(source.splits, cfg.max_bad_fraction)
        meta = {
            "source": cfg.source,
            "root": cfg.root,
            "modality": SOURCE_MODALITY[cfg.source],
            "num_classes": len(source.classes),
            "classes": source.classes,
            "config": cfg.__dict__,
            "versions": library_versions(cfg.source),
        }
        meta["mean"], meta["std"] = channel_stats(source.splits["train"].x)  # in [0, 1], for the in-model normalisation
        for name, d in source.splits.items():
            commit(d.x, out / f"{name}_x.npy")
            write_npy(out / f"{name}_y.npy", d.y)
            meta[name] = split_meta(d)
    finally:
        for staged in out.glob(".*.partial.npy"):  # a failed run leaves no half-decoded arrays
            staged.unlink()
    meta["sha256"] = {f"{name}_{part}.npy": sha256_file(out / f"{name}_{part}.npy")  # consumers verify these
                      for name in source.splits for part in ("x", "y")}
    meta["skipped_total"] = sum(len(d.skipped) for d in source.splits.values())
    meta["seconds"] = round(time.perf_counter() - start, 3)
    write_json(out / "meta.json", {**meta, "environment": environment()})
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = stage_cli("decode", __doc__, argv, "JSON of one `decode` entry", threads="decoding processes")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    args = parser.parse_args(argv)
    meta = run(from_json(DecodeConfig, args.cfg, "decode"), args.out, args.threads)
    shapes = {s: meta[s]["shape"] for s in SPLITS}
    print(f"decode: {shapes}, skipped {meta['skipped_total']} files, {meta['seconds']} s", file=sys.stderr)

