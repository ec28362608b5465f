"""H.264 re-encoding of clips through PyAV (libx264, yuv420p) at 5 quality levels (CRF).

Runs on the CPU, one clip at a time (each its own encoder, so a clip's result never depends
on its neighbours), in memory: video codecs have no batched torch path. About 15 ms per
8x16x16 clip on the development CPU, dominated by opening the encoder.
Odd frame sizes are padded by edge replication to the even size yuv420p needs, then cropped.
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import torch

from pipeline.corruptions.common import severity_value, to_uint8

CRF = (20, 28, 36, 44, 51)  # constant rate factor: 0 is lossless, 51 the worst quality
FPS = 8


def encode_decode(frames: np.ndarray, crf: int) -> np.ndarray:
    """uint8 (T, H, W, 3) with even H, W -> the same frames after an H.264 round trip."""
    import av

    t, h, w, _ = frames.shape
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        # one thread: x264's output depends on its thread count (frame threading), so this keeps results
        # machine-independent, and a thread pool per tiny clip only costs time
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1"}
        # and one thread for the rgb24 -> yuv420p conversion PyAV makes before encoding (its reformatter takes
        # the codec context's thread count, 0 = one per CPU): threaded swscale made a clip differ between runs
        stream.codec_context.thread_count = 1
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        video = container.streams.video[0]
        # one decoding thread too: FFmpeg's threaded decoder made the same clip differ between runs
        # (tests/test_reproducible.py), and its thread pool must not be alive in a process that forks
        video.codec_context.thread_count = 1
        video.thread_type = "NONE"
        decoded = [f.to_ndarray(format="rgb24", threads=1) for f in container.decode(video)]  # swscale too
    if len(decoded) != t:
        raise RuntimeError(f"H.264 round trip returned {len(decoded)} frames for {t}")
    return np.stack(decoded)


def h264(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Re-encode every clip (N,3,T,H,W) in [0, 1] with libx264 at the severity's CRF."""
    crf = severity_value(CRF, severity)
    n, c, t, h, w = x.shape
    clips = to_uint8(x).permute(0, 2, 3, 4, 1).cpu()  # (N, T, H, W, 3)
    pad = (0, 0, 0, w % 2, 0, h % 2)  # F.pad order: channels, width, height
    padded = torch.nn.functional.pad(clips.float(), pad, mode="replicate").to(torch.uint8) if (h % 2 or w % 2) else clips
    out = np.stack([encode_decode(clip.numpy(), crf) for clip in padded])[:, :, :h, :w]
    return torch.from_numpy(out).to(x.device).permute(0, 4, 1, 2, 3).float() / 255
