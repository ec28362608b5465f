"""The output-size policy shared by every source: uint8 in, uint8 out, one implementation.

Both video decoders and the image readers return frames at their native resolution and
resize here, so decord and PyAV give comparable frames (decord's own resize also fails
for outputs narrower than 32 px, a stride bug in 0.6). torch's uint8 channels-last
bilinear kernel with antialiasing (the one behind torchvision's `Resize(antialias=True)`)
is ~20x faster than a float round trip, which would otherwise cost more than decoding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RESIZE_POLICIES = ("short_side_crop", "fixed")


def centre_square(frames: Any) -> Any:
    """The centred square of side min(H, W) of (K, H, W, C) frames, array or tensor (a view)."""
    h, w = frames.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return frames[:, top : top + side, left : left + side]


def resize_frames(frames: Any, size: int, policy: str = "short_side_crop") -> np.ndarray:
    """uint8 (K, H, W, 3) numpy array or torch tensor -> uint8 numpy (K, size, size, 3).

    short_side_crop: scale the short side to `size` and keep the centre (cropping first is
    the same geometry with fewer pixels to filter); fixed: scale H and W to `size` each.
    """
    import torch

    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; expected one of {RESIZE_POLICIES}")
    x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(frames)
    if policy == "short_side_crop":
        x = centre_square(x)
    if tuple(x.shape[1:3]) == (size, size):
        return x.contiguous().numpy()
    y = antialiased_resize(x.permute(0, 3, 1, 2), (size, size))
    return y.permute(0, 2, 3, 1).contiguous().numpy()  # the input's channels-last layout: no copy


def antialiased_resize(x: Any, size: tuple[int, int]) -> Any:
    """Antialiased bilinear resize of a uint8 (K, C, H, W) channels-last view to `size` (height, width).

    When the height shrinks, the vertical pass runs first, as a call of its own. Why: torch's
    uint8 kernel always runs its horizontal pass (along each row) first, over every input
    row, and per output value that pass costs several times the vertical one. Shrinking the
    rows first leaves it fewer rows: `benchmarks/decode.py` times 320x240 -> 112x112 at 1.26-1.29x
    the speed of one call. The intermediate is rounded to uint8, so pixels may differ from a
    single call by 1 grey level.
    """
    import torch.nn.functional as F

    height, width = x.shape[-2:]
    if size[0] < height and size[1] != width:
        x = F.interpolate(x, size=(size[0], width), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def resize_in_chunks(images: np.ndarray, size: int, policy: str, chunk: int = 4096) -> np.ndarray:
    """`resize_frames` over a large in-memory (N, H, W, 3) array, a chunk at a time."""
    if images.shape[1:3] == (size, size) or len(images) == 0:
        return images if len(images) else np.zeros((0, size, size, images.shape[-1]), np.uint8)
    return np.concatenate([resize_frames(images[i : i + chunk], size, policy) for i in range(0, len(images), chunk)])
