"""Reading and writing real video files: decord first (audio off), PyAV as the fallback.

Every GPU stage reads decoded uint8 arrays, so decoders live only here and in `decode`.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_h264(path: str | Path, frames: np.ndarray, fps: int = 8, crf: int = 12) -> None:
    """Write uint8 frames (T, H, W, 3) as an H.264 (yuv420p) video with PyAV.

    H and W must be even (a yuv420p requirement). `crf` 12 keeps codec error small.
    """
    import av

    t, h, w, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"crf": str(crf), "preset": "veryfast"}
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


def resize_short_side_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (K, H, W, 3) -> (K, size, size, 3): resize the short side to `size`, centre crop.

    One resize for both decoders, so decord and PyAV give comparable frames (and because
    decord's own resize fails for outputs narrower than 32 px: a stride-alignment bug).
    """
    import torch

    k, h, w, _ = frames.shape
    if (h, w) == (size, size):
        return frames
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def read_frames_decord(path: str | Path, indices: np.ndarray) -> np.ndarray:
    """Frames at `indices` as uint8 (K, H, W, 3) at the file's resolution."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    frames = reader.get_batch([int(i) for i in indices]).asnumpy()  # decord misreads numpy int64 lists
    reader.seek(0)  # releases decord's cached frames (decord issues #197/#208)
    del reader
    return frames


def count_frames_decord(path: str | Path) -> int:
    import decord

    return len(decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1))


def read_all_frames_pyav(path: str | Path) -> np.ndarray:
    """Every frame of the first video stream as uint8 (T, H, W, 3), decoded sequentially."""
    import av

    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        raise ValueError(f"no decodable video frames in {path}")
    return np.stack(frames)
