"""Stage `decode`: a dataset (embedded, folder) -> uint8 arrays, labels and meta.json.

Outputs in `--out` (all written atomically; meta.json last):
    {train,test}_x.npy   uint8, images (N,H,W,C) or clips (N,T,H,W,C), memory-mappable
    {train,test}_y.npy   int64 labels (N,)
    meta.json            counts per class, index (source file, clip start), skipped files
                         with reasons, decoders used, library versions, elapsed time

Videos are decoded in parallel processes (one per rule thread), each file once; decord
reads it (audio off), PyAV takes over for a file decord cannot read; a file neither can
read, or that exceeds the time limit, is skipped and listed, and the stage fails only if
the skipped share exceeds `max_bad_fraction`.

    python -m pipeline.decode --cfg '<json of decode.<name>>' --out results/decode/<name> --threads 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import DecodeConfig, from_json
from pipeline.datasets import SOURCE_MODALITY, ucf101
from pipeline.datasets.digits import load_digits_uint8, stratified_split, upsample_rgb
from pipeline.datasets.video_io import (
    clip_starts,
    count_frames_decord,
    read_all_frames_pyav,
    read_frames_decord,
    resize_short_side_crop,
)
from pipeline.io import write_json, write_npy


class TooManyBadFiles(RuntimeError):
    """More than `max_bad_fraction` of the files could not be decoded."""


@dataclass
class Decoded:
    """One split: arrays plus where every sample came from."""

    x: np.ndarray
    y: np.ndarray
    index: list[tuple[str, int]]  # (source, start frame or -1 for images)
    skipped: list[dict[str, str]]
    decoders: Counter


def decode_digits(cfg: DecodeConfig) -> dict[str, Decoded]:
    images, labels = load_digits_uint8()
    rgb = upsample_rgb(images, cfg.size)
    train, test = stratified_split(labels, cfg.test_fraction, cfg.split_seed)
    return {
        name: Decoded(rgb[idx], labels[idx], [(f"sklearn_digits[{i}]", -1) for i in idx], [], Counter({"sklearn": len(idx)}))
        for name, idx in (("train", train), ("test", test))
    }


def decode_video_file(path: str, frames: int, stride: int, clips: int, size: int) -> tuple[np.ndarray, list[int], str]:
    """All clips of one file as uint8 (K, T, H, W, 3), their start frames and the decoder used."""
    span = (frames - 1) * stride + 1
    try:
        n = count_frames_decord(path)
        starts = clip_starts(n, span, clips)
        if not starts:
            raise ValueError(f"video has {n} frames, a clip needs {span}")
        idx = np.concatenate([s + stride * np.arange(frames) for s in starts])
        data, decoder = read_frames_decord(path, idx), "decord"
    except Exception as decord_error:  # decord cannot read some valid files: fall back to PyAV
        try:
            every = read_all_frames_pyav(path)
        except Exception as pyav_error:
            raise ValueError(f"decord: {decord_error}; pyav: {pyav_error}") from pyav_error
        starts = clip_starts(len(every), span, clips)
        if not starts:
            raise ValueError(f"video has {len(every)} frames, a clip needs {span}") from decord_error
        idx = np.concatenate([s + stride * np.arange(frames) for s in starts])
        data, decoder = every[idx], "pyav"
    data = resize_short_side_crop(data, size)
    return data.reshape(len(starts), frames, *data.shape[1:]), starts, decoder


def decode_videos(items: list[tuple[Path, int]], cfg: DecodeConfig, threads: int) -> Decoded:
    """Decode (path, label) items in `threads` processes with a per-file time limit."""
    xs, ys, index, skipped, decoders = [], [], [], [], Counter()
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold decoder state
    with cf.ProcessPoolExecutor(max_workers=max(1, threads), mp_context=ctx) as pool:
        futures = [pool.submit(decode_video_file, str(p), cfg.frames, cfg.stride, cfg.clips_per_video, cfg.size) for p, _ in items]
        for (path, label), future in zip(items, futures):
            try:
                clips, starts, decoder = future.result(timeout=cfg.timeout_s)
            except cf.TimeoutError:
                skipped.append({"file": str(path), "reason": f"timed out after {cfg.timeout_s} s"})
                continue
            except Exception as error:
                skipped.append({"file": str(path), "reason": str(error)})
                continue
            xs.append(clips)
            ys.extend([label] * len(starts))
            index.extend((str(path), s) for s in starts)
            decoders[decoder] += 1
        for future in futures:
            future.cancel()
    shape = (0, cfg.frames, cfg.size, cfg.size, 3)
    x = np.concatenate(xs) if xs else np.zeros(shape, np.uint8)
    return Decoded(x, np.asarray(ys, np.int64), index, skipped, decoders)


def decode_ucf101(cfg: DecodeConfig, threads: int) -> dict[str, Decoded]:
    root = Path(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"decode.root {root} does not exist: it must hold UCF-101/<Class>/*.avi and ucfTrainTestlist/")
    return {split: decode_videos(ucf101.read_split(root, split, cfg.fold), cfg, threads) for split in ("train", "test")}


def check_bad_share(splits: dict[str, Decoded], limit: float) -> None:
    skipped = [s for d in splits.values() for s in d.skipped]
    total = len(skipped) + sum(len({src for src, _ in d.index}) for d in splits.values())
    if total and len(skipped) / total > limit:
        listing = "\n".join(f"  {s['file']}: {s['reason']}" for s in skipped[:50])
        raise TooManyBadFiles(f"{len(skipped)} of {total} files unreadable (> max_bad_fraction {limit}):\n{listing}")


def channel_stats(x: np.ndarray, max_samples: int = 5000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of (a fixed subsample of) a uint8 (..., C) array."""
    if len(x) == 0:
        return [0.5] * 3, [0.25] * 3
    step = max(1, len(x) // max_samples)
    sample = x[::step].reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    return sample.mean(0).round(6).tolist(), np.maximum(sample.std(0), 1e-3).round(6).tolist()


def library_versions() -> dict[str, str]:
    import av
    import decord
    import sklearn

    return {"numpy": np.__version__, "av": av.__version__, "decord": decord.__version__, "sklearn": sklearn.__version__}


def run(cfg: DecodeConfig, out: Path, threads: int) -> dict:
    start = time.perf_counter()
    readers = {"sklearn_digits": lambda: decode_digits(cfg), "ucf101": lambda: decode_ucf101(cfg, threads)}
    splits = readers[cfg.source]()
    check_bad_share(splits, cfg.max_bad_fraction)
    all_labels = np.concatenate([d.y for d in splits.values()])
    mean, std = channel_stats(splits["train"].x)
    meta = {
        "source": cfg.source,
        "root": cfg.root,
        "modality": SOURCE_MODALITY[cfg.source],
        "num_classes": int(all_labels.max()) + 1,
        "mean": mean,  # per-channel statistics in [0, 1], used by the in-model normalisation
        "std": std,
        "config": cfg.__dict__,
        "versions": library_versions(),
    }
    for name, d in splits.items():
        write_npy(out / f"{name}_x.npy", d.x)
        write_npy(out / f"{name}_y.npy", d.y)
        meta[name] = {
            "shape": list(d.x.shape),
            "per_class": {int(k): int(v) for k, v in sorted(Counter(d.y.tolist()).items())},
            "index": d.index,
            "skipped": d.skipped,
            "decoders": dict(d.decoders),
        }
    meta["skipped_total"] = sum(len(d.skipped) for d in splits.values())
    meta["seconds"] = round(time.perf_counter() - start, 3)
    write_json(out / "meta.json", meta)
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="JSON of one `decode` entry")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="decoding processes")
    args = parser.parse_args(argv)
    meta = run(from_json(DecodeConfig, args.cfg, "decode"), args.out, args.threads)
    shapes = {s: meta[s]["shape"] for s in ("train", "test")}
    print(f"decode: {shapes}, skipped {meta['skipped_total']} files, {meta['seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
