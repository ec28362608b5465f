"""Decode speed (issue 4): this stage vs pytorchvideo vs plain decord, 1 process and all cores.

Generates N H.264 videos (320x240, 25 fps, textured panning background plus a moving disc,
x264 crf 23) in a temporary folder and decodes all of them with:

  (a) plain decord, every frame, front to back, no resize (the library floor): the faster
      of `next()` per frame and `get_batch` on 16-frame runs, one decoding thread;
  (b) this stage: `pipeline.decode.decode_files` (the code `run` calls for each split), in
      the "dense" setting (16-frame clips, stride 1, clips tiling each video, so every frame
      is delivered), resized to 112x112 (short side + centre crop) and written into the
      memory-mapped cache, in `threads` worker processes;
  (c) pytorchvideo's `LabeledVideoDataset` with a uniform clip sampler of 16-frame clips
      tiling each video, decode_audio=False, with its default PyAV backend and with its
      decord backend (both return float32 frames at 320x240: no resize, no write);

each for 1 process and for all cores (the stage's `threads`, a process pool for (a), a
DataLoader's workers for (c)), and prints frames/s and the ratios to the issue's goals.

Per process: (a) and (c) with one process run here; the stage's figure is its one worker's
own time on the files (wall from opening a file to its last write, and the CPU time of all
the worker's threads), without the pool's start. Whole runs include everything. Also timed:
a sparse setting (4 clips of 16 frames at stride 2 per video: input-video frames/s), and the
cached epoch: reading the stage's .npy back, whole and through `pipeline.data`'s streamed
batches.

Every measurement runs `--repeats` times in alternating rounds and keeps the fastest, so
other processes on a shared machine disturb the ratios as little as possible. The workers'
one-time start-up (a forkserver importing torch) is timed once, apart.

    python benchmarks/decode.py                       # 8 videos x 320 frames, ~2 minutes on 2 cores
    python benchmarks/decode.py --videos 32 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's `pipeline`

from pipeline.datasets.tasks import ClipSpec, write_video  # noqa: E402
from pipeline.datasets.video_io import DecordFrames, write_h264  # noqa: E402
from pipeline.decode import decode_files  # noqa: E402

FPS, CLIP = 25, 16


# ---- inputs ---------------------------------------------------------------------------------
def textured_video(seed: int, frames: int, h: int = 240, w: int = 320) -> np.ndarray:
    """uint8 (T, H, W, 3): a blurred-noise texture panning under a moving disc (real motion vectors)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (h + 64, w + 256, 3)).astype(np.float32)
    kernel = np.ones(5) / 5
    for axis in (0, 1):
        texture = np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), axis, texture)
    texture = texture.astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    video = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        x0, y0 = int(t * 0.7) % 256, int(16 + 16 * np.sin(t / 20))
        video[t] = texture[y0 : y0 + h, x0 : x0 + w]
        cy, cx = 120 + 60 * np.sin(t / 15 + seed), 160 + 100 * np.cos(t / 23 + seed)
        video[t][(yy - cy) ** 2 + (xx - cx) ** 2 < 900] = (200, 60 + 20 * seed % 180, 40)
    return video


def make_videos(folder: Path, count: int, frames: int) -> list[Path]:
    paths = []
    for i in range(count):
        paths.append(folder / f"video{i}.mp4")
        write_h264(paths[-1], textured_video(i, frames), fps=FPS, crf=23)
    return paths


# ---- the contenders -------------------------------------------------------------------------
def decord_every_frame(path: Path, how: str) -> int:
    """Every frame of one file, front to back, one decoding thread; returns the frame count.

    next_numpy: `next().asnumpy()` (a copy); next_torch: `next()` through decord's torch
    bridge (no copy); batches: `get_batch` on 16-frame runs through the bridge.
    """
    import decord
    from decord.bridge import use_torch

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    with use_torch():
        if how == "batches":
            for start in range(0, len(reader), CLIP):
                reader.get_batch(list(range(start, min(len(reader), start + CLIP)))).numpy()
        else:
            for _ in range(len(reader)):
                frame = reader.next()
                frame.clone() if how == "next_numpy" else frame.numpy()  # clone: the copy asnumpy makes
    return len(reader)


def floor_next_numpy(path: Path) -> int:
    return decord_every_frame(path, "next_numpy")


def floor_next_torch(path: Path) -> int:
    return decord_every_frame(path, "next_torch")


def floor_batches(path: Path) -> int:
    return decord_every_frame(path, "batches")


FLOORS = {"next_numpy": floor_next_numpy, "next_torch": floor_next_torch, "batches": floor_batches}


def over_files(fn: Callable[[Path], int], paths: list[Path], processes: int) -> int:
    """Frames decoded by `fn` over all files, in this process or a pool of `processes`."""
    if processes == 1:
        return sum(fn(p) for p in paths)
    with multiprocessing.get_context("forkserver").Pool(processes) as pool:
        return sum(pool.map(fn, paths, chunksize=1))


WORKER_CPU: dict[int, float] = {}  # stage workers -> best frames per worker-CPU-second
WORKER_WALL: dict[int, float] = {}  # stage workers -> best frames per worker-wall-second, per worker


def stage(paths: list[Path], spec: ClipSpec, threads: int, scratch: Path) -> int:
    """Frames the stage writes into its cache (`run`'s per-split code); notes the workers' own rates.

    The workers' rates count only their time on the files (CPU: all a worker's threads; wall:
    from opening a file to its last write), not the pool's start or the parent's bookkeeping.
    """
    staged = scratch / ".bench_x.partial.npy"
    with contextlib.redirect_stderr(io.StringIO()):  # the stage's progress lines
        decoded = decode_files([(p, 0) for p in paths], spec, staged, threads, timeout_s=600)
    if decoded.skipped:
        raise RuntimeError(f"stage skipped files: {decoded.skipped}")
    frames = int(np.prod(decoded.x.shape[:2]))
    if spec.stride == 1:
        WORKER_CPU[threads] = max(WORKER_CPU.get(threads, 0.0), frames / decoded.cpu_seconds)
        WORKER_WALL[threads] = max(WORKER_WALL.get(threads, 0.0), frames / decoded.worker_seconds)
    return frames


def pytorchvideo(paths: list[Path], decoder: str, workers: int) -> int:
    """Frames delivered by pytorchvideo's LabeledVideoDataset (uniform 16-frame clips)."""
    import torch
    from pytorchvideo.data import LabeledVideoDataset, make_clip_sampler
    from pytorchvideo.data.labeled_video_paths import LabeledVideoPaths

    dataset = LabeledVideoDataset(LabeledVideoPaths([(str(p), {"label": 0}) for p in paths]),
                                  make_clip_sampler("uniform", CLIP / FPS), video_sampler=torch.utils.data.SequentialSampler,
                                  decode_audio=False, decoder=decoder)
    if workers == 1:
        return sum(item["video"].shape[1] for item in dataset)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    return sum(item["video"].shape[1] for item in loader)


def in_process_worker(paths: list[Path], spec: ClipSpec, scratch: Path) -> int:
    """The stage's per-file path (`tasks.write_video`) run here: writes the cache the cached-epoch read uses."""
    out = scratch / "inproc.npy"
    np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(len(paths) * spec.clips, spec.frames, spec.size, spec.size, 3))
    for slot, path in enumerate(paths):
        write_video(str(path), str(out), slot, spec)
    return len(paths) * spec.clips * spec.frames


def reader_only(paths: list[Path]) -> int:
    """Every frame through the stage's decord reader (`DecordFrames.read`), nothing else."""
    frames = 0
    for path in paths:
        source = DecordFrames(path)
        frames += sum(len(numbers) for numbers, _ in source.read(np.arange(source.count)))
        source.close()
    return frames


# ---- cached epoch ---------------------------------------------------------------------------
def read_whole(path: Path) -> int:
    """Frames in one sequential pass over the memory-mapped .npy (what a resident load costs)."""
    x = np.load(path, mmap_mode="r")
    checksum = 0
    for start in range(0, len(x), 64):
        checksum += int(np.asarray(x[start : start + 64]).sum(dtype=np.uint64) & 1)
    return int(np.prod(x.shape[:2]))


def read_batches(folder: Path) -> int:
    """Frames through `pipeline.data`'s streamed split: random batches of 32 clips as float."""
    import torch

    from pipeline.data import batch_indices, load_split

    split = load_split(folder, "bench", torch.device("cpu"), budget_mb=0)
    frames = 0
    for idx in batch_indices(len(split), 32, shuffle=True, drop_last=False, generator=torch.Generator().manual_seed(0)):
        frames += split.batch(idx).shape[0] * split.x.shape[1]
    return frames


# ---- the resize alone -----------------------------------------------------------------------
def resize_ms_per_frame(repeats: int) -> dict[str, float]:
    """CPU ms per frame of 16 decoded-size frames (240x320) -> 112x112, centre crop, one thread:
    torch's antialiased uint8 kernel in one call (the peer) and the stage's `resize_frames`."""
    import torch
    import torch.nn.functional as F

    from pipeline.datasets.resize import centre_square, resize_frames

    frames = torch.from_numpy(textured_video(0, 16))
    jobs = {"one_call": lambda: F.interpolate(centre_square(frames).permute(0, 3, 1, 2), size=(112, 112), mode="bilinear",
                                              antialias=True).permute(0, 2, 3, 1).contiguous(),
            "stage": lambda: resize_frames(frames, 112, "short_side_crop")}
    best = {name: float("inf") for name in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            start = time.process_time()
            for _ in range(50):
                job()
            best[name] = min(best[name], (time.process_time() - start) / (50 * 16) * 1e3)
    return best


# ---- timing and report ----------------------------------------------------------------------
def best_rate(jobs: dict[str, Callable[[], int]], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Frames per wall second and per CPU second of this process (all its threads) of each job.

    Alternating rounds, the fastest kept. CPU seconds count only this process: they are
    meaningful for jobs that run here, and barely move with other processes' load.
    """
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for _ in range(repeats):
        for name, job in jobs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            frames = job()
            wall[name] = max(wall.get(name, 0.0), frames / (time.perf_counter() - start))
            cpu[name] = max(cpu.get(name, 0.0), frames / max(time.process_time() - start_cpu, 1e-9))
    return wall, cpu


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def versions() -> str:
    import importlib.metadata as md

    return ", ".join(f"{n} {md.version(n)}" for n in ("decord", "av", "torch", "pytorchvideo"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8, help="generated videos")
    parser.add_argument("--frames", type=int, default=320, help="frames per video (a multiple of 16)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; the fastest is kept")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="processes for the all-cores runs")
    args = parser.parse_args(argv)
    import pytorchvideo.data  # noqa: F401  (imported before any timing)
    import torch

    torch.set_num_threads(1)  # one core per process, as the stage's workers
    with tempfile.TemporaryDirectory() as tmp:
        report(Path(tmp), args)


def report(scratch: Path, args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    paths = make_videos(scratch, args.videos, args.frames)
    print(f"generated {args.videos} videos x {args.frames} frames (320x240 H.264) in {time.perf_counter() - t0:.1f} s", flush=True)
    dense = ClipSpec(frames=CLIP, stride=1, clips=args.frames // CLIP, size=112, resize="short_side_crop")
    sparse = ClipSpec(frames=CLIP, stride=2, clips=4, size=112, resize="short_side_crop")
    start = time.perf_counter()
    stage(paths[:1], dense, 1, scratch)  # starts the forkserver: the one-time import of torch and the decoders
    startup = time.perf_counter() - start
    n, load0 = args.cores, os.getloadavg()
    wall, cpu = best_rate({
        **{f"floor_{name}_1": (lambda fn=fn: over_files(fn, paths, 1)) for name, fn in FLOORS.items()},
        "reader_here": lambda: reader_only(paths),
        "stage_1": lambda: stage(paths, dense, 1, scratch),
        "pv_decord_1": lambda: pytorchvideo(paths, "decord", 1),
        "pv_pyav_1": lambda: pytorchvideo(paths, "pyav", 1),
        **{f"floor_{name}_n": (lambda fn=fn: over_files(fn, paths, n)) for name, fn in FLOORS.items()},
        "stage_n": lambda: stage(paths, dense, n, scratch),
        "pv_decord_n": lambda: pytorchvideo(paths, "decord", n),
        "stage_sparse_1": lambda: stage(paths, sparse, 1, scratch) * args.frames // (sparse.clips * CLIP),
        "stage_sparse_n": lambda: stage(paths, sparse, n, scratch) * args.frames // (sparse.clips * CLIP),
    }, args.repeats)
    wall_pyav, cpu_pyav = best_rate({"pv_pyav_n": lambda: pytorchvideo(paths, "pyav", n)}, max(1, args.repeats - 1))
    wall.update(wall_pyav)
    cpu.update(cpu_pyav)
    staged = scratch / "bench_x.npy"
    in_process_worker(paths, dense, scratch)
    os.replace(scratch / "inproc.npy", staged)
    np.save(scratch / "bench_y.npy", np.zeros(len(np.load(staged, mmap_mode="r")), np.int64))
    cached, _ = best_rate({"whole": lambda: read_whole(staged), "batches": lambda: read_batches(scratch)}, args.repeats)
    resize = resize_ms_per_frame(args.repeats)
    print_table(args, wall, cpu, cached, startup, load0, time.perf_counter() - t0)
    print(f"resize 240x320 -> 112x112 (16-frame batches, one thread): torch's kernel in one call {resize['one_call']:.4f} ms/frame,"
          f" the stage's rows-first resize {resize['stage']:.4f} ms/frame ({resize['one_call'] / resize['stage']:.2f}x)")


def print_table(args: argparse.Namespace, wall: dict, cpu: dict, cached: dict, startup: float, load0: tuple, seconds: float) -> None:
    for rates in (wall, cpu):
        for k in ("1", "n"):  # the floor: the fastest plain way
            rates[f"floor_{k}"] = max(rates[f"floor_{name}_{k}"] for name in FLOORS)
    print(f"\nmachine: {machine()}\nlibraries: {versions()}")
    print(f"load average before / after: {load0[0]:.1f} / {os.getloadavg()[0]:.1f}; {args.videos} videos x {args.frames} frames;"
          f" best of {args.repeats}; total {seconds:.0f} s\n")
    wall["worker_1"], cpu["worker_1"] = WORKER_WALL[1], WORKER_CPU[1]
    print("| per process: one process decoding | frames/s | frames per CPU-second"
          " | stage / this, frames/s | stage / this, per CPU-second |")
    print("|---|---:|---:|---:|---:|")
    for label, key in (("plain decord, every frame (floor)", "floor_1"), ("pytorchvideo, PyAV (default)", "pv_pyav_1"),
                       ("pytorchvideo, decord", "pv_decord_1"),
                       ("this stage's worker: decode + resize 112 + write", "worker_1"),
                       ("its decord reader alone (every frame, no resize, no write)", "reader_here")):
        print(f"| {label} | {wall[key]:,.0f} | {cpu[key]:,.0f} | {wall['worker_1'] / wall[key]:.2f} | {cpu['worker_1'] / cpu[key]:.2f} |")
    print(f"\n| wall clock, whole runs: frames/s | 1 process | {args.cores} processes | scaling |\n|---|---:|---:|---:|")
    for label, key in (("plain decord, every frame (floor)", "floor"), ("this stage (`decode_files`, pool start included)", "stage"),
                       ("pytorchvideo LabeledVideoDataset, PyAV (default)", "pv_pyav"),
                       ("pytorchvideo LabeledVideoDataset, decord", "pv_decord"),
                       ("this stage, sparse clips (4 x 16 at stride 2): input frames/s", "stage_sparse")):
        print(f"| {label} | {wall[key + '_1']:,.0f} | {wall[key + '_n']:,.0f} | {wall[key + '_n'] / wall[key + '_1']:.2f}x |")
    print(f"\n| ratio | per process, frames/s | per CPU-second | whole run, 1 process | whole run, {args.cores} processes | goal |")
    print("|---|---:|---:|---:|---:|---|")
    for label, other, goal in (("stage / plain decord", "floor", ">= 0.9"), ("stage / pytorchvideo PyAV", "pv_pyav", ">= 3"),
                               ("stage / pytorchvideo decord", "pv_decord", ">= 1")):
        print(f"| {label} | {wall['worker_1'] / wall[other + '_1']:.2f} | {cpu['worker_1'] / cpu[other + '_1']:.2f} |"
              f" {wall['stage_1'] / wall[other + '_1']:.2f} | {wall['stage_n'] / wall[other + '_n']:.2f} | {goal} |")
    print(f"\nthis stage's workers: frames per worker-CPU-second {WORKER_CPU[1]:,.0f} with 1 worker, {WORKER_CPU[args.cores]:,.0f}"
          f" with {args.cores} ({WORKER_CPU[args.cores] / WORKER_CPU[1]:.2f}: the scaling the workers allow when the cores are free);"
          f" frames per worker-second {WORKER_WALL[1]:,.0f} with 1 worker, {WORKER_WALL[args.cores]:,.0f} per worker with {args.cores}")
    print(f"workers' one-time start-up (forkserver importing torch, decord, PyAV): {startup:.1f} s")
    mb = 112 * 112 * 3 / 2**20
    print(f"cached epoch (the .npy in the page cache): whole-array read {cached['whole']:,.0f} frames/s ({cached['whole'] * mb:,.0f} MB/s);"
          f" pipeline.data streamed batches of 32 clips as float {cached['batches']:,.0f} frames/s")


if __name__ == "__main__":
    main()
