"""Temporal corruptions of clips (N,C,T,H,W) at 5 severities: frame drop, frame repeat, local shuffle.

There is no standard set for video (anchors.md 1.6); these keep the clip length T, so the
classifier sees the usual input shape. Every clip draws its own pattern.
"""

from __future__ import annotations

import torch

from pipeline.corruptions.common import severity_value

DROP = (0.1, 0.2, 0.3, 0.4, 0.5)  # probability that a frame is lost
REPEAT = (0.1, 0.2, 0.3, 0.4, 0.5)  # probability that a frame is a copy of its predecessor (a stall)
WINDOW = (2, 3, 4, 6, 8)  # frames shuffled within non-overlapping windows of this length


def gather_frames(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """out[n, :, t] = x[n, :, idx[n, t]]. x: (N,C,T,H,W); idx: (N,T) long."""
    n, c, t, h, w = x.shape
    return x.gather(2, idx.view(n, 1, t, 1, 1).expand(n, c, t, h, w))


def kept_frames(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """(N,T) bool: each frame but the first survives with probability 1 - p."""
    keep = torch.rand(x.shape[0], x.shape[2], device=x.device, generator=generator) >= p
    keep[:, 0] = True
    return keep


def frame_drop(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lose frames, then stretch the survivors over the T slots (nearest neighbour): motion skips ahead."""
    keep = kept_frames(x, severity_value(DROP, severity), generator)
    order = torch.argsort((~keep).to(torch.uint8), dim=1, stable=True)  # surviving frame indices first, in time order
    t = x.shape[2]
    pos = (torch.arange(t, device=x.device)[None] * keep.sum(1, keepdim=True)) // t
    return gather_frames(x, order.gather(1, pos))


def frame_repeat(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stalls: a frame that is not kept shows the last kept frame instead."""
    keep = kept_frames(x, severity_value(REPEAT, severity), generator)
    t = torch.arange(x.shape[2], device=x.device).expand_as(keep)
    return gather_frames(x, torch.cummax(torch.where(keep, t, 0), dim=1).values)


def temporal_shuffle(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random permutation of the frames inside each window of `WINDOW` frames (order jitter, no frame lost)."""
    window = severity_value(WINDOW, severity)
    t = torch.arange(x.shape[2], device=x.device)
    keys = (t // window)[None] + 0.5 * torch.rand(x.shape[0], x.shape[2], device=x.device, generator=generator)
    return gather_frames(x, torch.argsort(keys, dim=1))
