"""Reading and writing real video files: decord first (audio off), PyAV as the fallback.

Every GPU stage reads decoded uint8 arrays, so decoders live only here and in `decode`.
Both readers decode a file once, front to back, and convert to RGB only the frames a clip
needs: frames in between are decoded without colour conversion (the conversion, not the
H.264 decoding, is most of the cost at 320x240); decord seeks to a keyframe only when the
next wanted frame lies in a later GOP. Random access per clip would re-read each GOP (8.6
clips/s against 2,040 frames/s sequentially in design.md's measurement).
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

# libx264 settings for reproducible files. Measured (issue #18) on this project's AVX-512 Xeon:
# 300 moving-digit clips each encoded 3 times in one process; clips whose 2nd/3rd encoding differ
# from the 1st: default settings 25/23 (decoded frames differ by up to 4 grey levels); one thread
# (threads=1, lookahead-threads=1, sliced-threads=0) 20/18, so threads are not the cause; x264
# limited to its kernels up to AVX2 0/0, with AVX-512 added 5/4; asm=0 (plain C kernels) 0/0.
# asm=0, unlike a list of CPU flags, is safe on every CPU, and the same C kernels run whatever
# SIMD set a machine has; with one thread it costs no time against the default (see README).
X264_DETERMINISTIC = "threads=1:lookahead-threads=1:sliced-threads=0:asm=0"


def write_h264(path: str | Path, frames: np.ndarray, fps: int = 8, crf: int = 12) -> None:
    """Write uint8 frames (T, H, W, 3) as an H.264 (yuv420p) video with PyAV; byte-identical on every run.

    H and W must be even (a yuv420p requirement). `crf` 12 keeps codec error small.
    See X264_DETERMINISTIC for the encoder settings that make the bytes reproducible.
    """
    import av

    t, h, w, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1  # one encoding thread: the file's bytes must not depend on scheduling
        stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": X264_DETERMINISTIC}
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def clip_starts(n_frames: int, span: int, clips_per_video: int) -> list[int]:
    """Uniformly spaced start frames of `clips_per_video` clips of `span` frames (empty if too short)."""
    if n_frames < span:
        return []
    last = n_frames - span
    if clips_per_video == 1:
        return [last // 2]
    return [round(i * last / (clips_per_video - 1)) for i in range(clips_per_video)]


def clip_indices(starts: list[int], frames: int, stride: int) -> np.ndarray:
    """Frame numbers of every clip, int64 (K, T): start + stride * t."""
    return np.asarray(starts, np.int64)[:, None] + stride * np.arange(frames, dtype=np.int64)[None, :]


class DecordFrames:
    """One file opened once with decord (video stream only, one decoding thread)."""

    name = "decord"

    def __init__(self, path: str | Path) -> None:
        import decord

        self.reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        self.count = len(self.reader)

    def read(self, indices: np.ndarray, batch: int = 16) -> Iterator[tuple[list[int], Any]]:
        """(frame numbers, uint8 (B, H, W, 3) torch tensor) for ascending, distinct `indices`.

        `get_batch` decodes in frame order, skipping (no colour conversion) within a GOP
        and seeking to the keyframe across GOPs; the batch reaches torch without a copy.
        """
        from decord.bridge import use_torch

        wanted = [int(i) for i in indices]  # decord misreads numpy integers
        for start in range(0, len(wanted), batch):
            numbers = wanted[start : start + batch]
            with use_torch():  # whatever bridge another library set globally (pytorchvideo sets torch)
                frames = self.reader.get_batch(numbers)
            if frames.shape[-1] != 3:  # decord 0.6 pads some widths (16, 24, 48, 72 px) and mislabels them
                raise ValueError(f"decord returned {tuple(frames.shape)} frames (its row-padding bug)")
            yield numbers, frames

    def close(self) -> None:
        self.reader.seek(0)  # releases the frames get_batch caches (decord issues #197, #208)
        del self.reader


class PyAVFrames:
    """One file opened once with PyAV (FFmpeg), for the files decord cannot read."""

    name = "pyav"

    def __init__(self, path: str | Path) -> None:
        import av

        self.container = av.open(str(path))
        self.stream = self.container.streams.video[0]
        self.stream.thread_count = 1  # one core per worker process: the pool is the parallelism
        self.count = self.stream.frames or _count_packets(path)

    def read(self, indices: np.ndarray, batch: int = 16) -> Iterator[tuple[list[int], np.ndarray]]:
        """(frame numbers, uint8 (B, H, W, 3)) for ascending, distinct `indices`, decoded front to back."""
        wanted = [int(i) for i in indices]
        numbers: list[int] = []
        frames: list[np.ndarray] = []
        for number, frame in enumerate(self.container.decode(self.stream)):
            if len(numbers) == len(wanted):
                break
            if number == wanted[len(numbers)]:
                numbers.append(number)
                frames.append(frame.to_ndarray(format="rgb24", threads=1))  # swscale's pool would be one per CPU
                if len(frames) == batch or len(numbers) == len(wanted):
                    yield numbers[-len(frames) :], np.stack(frames)
                    frames = []

    def close(self) -> None:
        self.container.close()


def _count_packets(path: str | Path) -> int:
    """Frame count of containers without one in the header (one video packet per frame)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)


# Tried in this order for every file; the first that reads all clips is recorded in meta.json.
DECODERS = {"decord": DecordFrames, "pyav": PyAVFrames}
