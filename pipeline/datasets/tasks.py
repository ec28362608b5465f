"""What one worker process does with one file: decode it, resize it, write its rows.

The decode stage pre-allocates each split's output .npy and gives every file a fixed block
of rows (`slot`); the worker writes its clips straight into that block, so clips never
travel through a pipe and the parent never holds a split in memory.
The worker's reply is small: clip start frames and the decoder that read the file.

This module imports torch, decord and PyAV at the top on purpose: it is what the worker
pool's forkserver preloads, once, before forking the workers.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from typing import Any

import av  # noqa: F401  (preloaded for the workers)
import decord  # noqa: F401
import numpy as np
import torch
from PIL import Image

from pipeline.datasets.resize import resize_frames
from pipeline.datasets.video_io import DECODERS, clip_indices, clip_starts
from pipeline.runtime import keep_freed_memory_in_heap


@dataclass(frozen=True)
class ClipSpec:
    """Clip sampling and output size of a video source (the `decode` config keys)."""

    frames: int  # T
    stride: int  # frames between consecutive clip frames
    clips: int  # uniformly spaced clips per video
    size: int
    resize: str

    @property
    def span(self) -> int:
        return (self.frames - 1) * self.stride + 1


@dataclass(frozen=True)
class ImageSpec:
    size: int
    resize: str


def worker_init() -> None:
    """Set up a freshly forked worker for a long run of small decode tasks.

    - One core per worker process: the pool, not torch's thread pool, is the parallelism.
    - Freed batch buffers (decord's 3.7 MB per 16 frames of 320x240, the resized output)
      stay in the heap instead of being unmapped and faulted in again for every batch
      (page faults were most of a worker's kernel time in perf).
    - The garbage collector stops re-scanning the objects imported before the fork (torch,
      the decoders): they live as long as the worker anyway.
    """
    torch.set_num_threads(1)
    keep_freed_memory_in_heap()
    gc.freeze()


class Rows:
    """Rows [first, first + count) of a pre-allocated .npy, written with pwrite.

    Writing through the file descriptor costs a fifth of the CPU time of storing into a
    memory map of a fresh file (no page fault per 4 KiB page), and nothing is mapped.
    """

    _files: dict[str, tuple[int, int]] = {}  # output path -> (fd, data offset), one open file per worker

    def __init__(self, out: str, first: int, count: int, row_bytes: int) -> None:
        if out not in self._files:
            for fd, _ in self._files.values():  # a new output file: the previous split is finished
                os.close(fd)
            self._files.clear()
            self._files[out] = (os.open(out, os.O_WRONLY), _data_offset(out))
        self.fd, offset = self._files[out]
        self.first, self.count, self.row_bytes, self.offset = first, count, row_bytes, offset

    def write(self, k: int, frames: list[np.ndarray]) -> None:
        """Row k (< count) from its C-contiguous parts (e.g. the T frames of a clip), without joining them."""
        if not 0 <= k < self.count:
            raise IndexError(f"row {k} outside this file's {self.count} rows")
        written = os.pwritev(self.fd, [memoryview(f).cast("B") for f in frames], self.offset + (self.first + k) * self.row_bytes)
        if written != self.row_bytes:
            raise OSError(f"short write: {written} of {self.row_bytes} bytes")


def _data_offset(path: str) -> int:
    """Byte offset of the array data in a .npy file (after its header)."""
    return int(np.load(path, mmap_mode="r").offset)


def write_video(path: str, out: str, slot: int, spec: ClipSpec) -> dict[str, Any]:
    """Decode `spec.clips` clips of one video into rows slot*K.. of `out`; decord, else PyAV.

    Returns the clip start frames, the decoder that read the file (and why decord could
    not), and the CPU seconds (all the worker's threads) and wall seconds it took.
    """
    start, start_wall = time.process_time(), time.perf_counter()
    rows = Rows(out, slot * spec.clips, spec.clips, spec.frames * spec.size * spec.size * 3)
    errors = []
    for name, opener in DECODERS.items():
        try:
            starts = write_clips(opener(path), spec, rows)
        except Exception as error:  # the next decoder gets its chance; all reasons are kept
            errors.append(f"{name}: {type(error).__name__}: {error}")
            continue
        return {"starts": starts, "decoder": name, "fallback_reason": "; ".join(errors) or None,
                "cpu_s": time.process_time() - start, "wall_s": time.perf_counter() - start_wall}
    raise ValueError("; ".join(errors))


def write_clips(source: Any, spec: ClipSpec, rows: Rows) -> list[int]:
    """Read every clip of an opened video into its K rows (T, S, S, 3); returns the start frames."""
    try:
        starts = clip_starts(source.count, spec.span, spec.clips)
        if not starts:
            raise ValueError(f"video has {source.count} frames, a clip spans {spec.span}")
        clips = clip_indices(starts, spec.frames, spec.stride).tolist()
        done = fill_clips(source.read(np.unique(clips)), clips, spec, rows)
        if done < len(clips):
            raise ValueError(f"decoding stopped before frame {clips[done][-1]} of the {source.count} the container reports")
        return starts
    finally:
        source.close()


def fill_clips(batches: Any, clips: list[list[int]], spec: ClipSpec, rows: Rows) -> int:
    """Assemble clips (K lists of T frame numbers) from (frame numbers, frames) batches in frame order.

    Clips may share frames. Each batch is resized at once; resized frames are kept (small)
    until no later clip needs them. Returns how many clips were completed (< K: the file
    ended early).
    """
    resized: dict[int, np.ndarray] = {}
    k = 0
    for numbers, frames in batches:
        resized.update(zip(numbers, resize_frames(frames, spec.size, spec.resize), strict=True))
        while k < len(clips) and clips[k][-1] in resized:
            rows.write(k, [resized[i] for i in clips[k]])
            k += 1
            resized = {i: f for i, f in resized.items() if k == len(clips) or i >= clips[k][0]}
    return k


def write_image(path: str, out: str, slot: int, spec: ImageSpec) -> dict[str, Any]:
    """Decode one image file with PIL (as torchvision's ImageFolder does) into row `slot`."""
    start, start_wall = time.process_time(), time.perf_counter()
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))  # greyscale, palette, RGBA -> RGB
    Rows(out, slot, 1, spec.size * spec.size * 3).write(0, [resize_frames(rgb[None], spec.size, spec.resize)[0]])
    return {"decoder": "pil", "cpu_s": time.process_time() - start, "wall_s": time.perf_counter() - start_wall}


TASKS = {"video": write_video, "image": write_image}
SPECS = {"video": ClipSpec, "image": ImageSpec}
