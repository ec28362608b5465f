"""The training set as the warm-up encoder sees it: base embeddings and augmented support views.

Base embedding: the backbone (or backbone + projection head) output of each un-augmented sample.
A clip is embedded as the mean over its non-overlapping windows of the warm-up's training clip
length (`augment.temporal_crop`): the encoder was trained on such windows, and a whole clip is a
different input distribution (measured: kNN pair precision on moving digits 0.27 -> 0.36 / 0.28 -> 0.42).
Support views: augmented copies of every sample (FNC, Huynh et al. 2022), with the warm-up's own
augmentation but a milder crop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from pipeline.augment import AugmentSpec, augment
from pipeline.data import Split, batch_indices
from pipeline.models import projection_head

Features = Callable[[torch.Tensor], torch.Tensor]  # float batch in [0, 1] -> (B, D)


def projection_from_state(state: dict, device: torch.device) -> nn.Module:
    """The warm-up's MLP projection head, rebuilt from its saved weights (shapes give the sizes).

    Raises ValueError when the checkpoint's head is not SimCLR's MLP (e.g. a CE warm-up's classifier).
    """
    head_state = state.get("head", {})
    if "0.weight" not in head_state or "3.weight" not in head_state:
        raise ValueError("mine.features: projection needs a warm-up with an MLP projection head; "
                         f"the checkpoint's head has {sorted(head_state)}")
    hidden, in_dim = head_state["0.weight"].shape
    head = projection_head(in_dim, hidden, head_state["3.weight"].shape[0])
    head.load_state_dict(head_state)
    return head.to(device).eval()


def feature_fn(encoder: nn.Module, state: dict, features: str, device: torch.device) -> Features:
    """Backbone features, or the projection head's output on them (`mine.features`)."""
    if features == "backbone":
        return encoder
    if features == "projection":
        head = projection_from_state(state, device)
        return lambda x: head(encoder(x))
    raise ValueError(f"mine.features: unknown {features!r}; choose backbone or projection")


def windows(clip_frames: int, window: int) -> list[int]:
    """Start frames of the non-overlapping windows of `window` frames in a clip (all of it if window <= 0)."""
    if window <= 0 or window >= clip_frames:
        return [0]
    return list(range(0, clip_frames - window + 1, window))


@torch.no_grad()
def base_embeddings(fn: Features, split: Split, batch_size: int, window: int = 0) -> torch.Tensor:
    """Unit-norm embeddings of the un-augmented split. (N, D) float32.

    Clips (N,C,T,H,W) are embedded as the normalised mean of their windows of `window` frames
    (0 = the whole clip); images ignore `window`.
    """
    rows = []
    for idx in batch_indices(len(split), batch_size, shuffle=False, drop_last=False):
        x = split.batch(idx)
        if x.dim() == 5:
            length = window if 0 < window < x.shape[2] else x.shape[2]
            h = torch.stack([fn(x[:, :, s : s + length]).float() for s in windows(x.shape[2], window)]).mean(0)
        else:
            h = fn(x).float()
        rows.append(h)
    return nn.functional.normalize(torch.cat(rows), dim=1)


def support_spec(spec: AugmentSpec, crop_scale_min: float) -> AugmentSpec:
    """The warm-up's augmentation with the support views' crop (`mine.support_crop_scale_min`)."""
    return dataclasses.replace(spec, crop_scale_min=crop_scale_min)


@torch.no_grad()
def support_views(fn: Features, split: Split, batch_size: int, spec: AugmentSpec, views: int,
                  gen: torch.Generator) -> torch.Tensor:
    """`views` augmented views of every sample, unit norm. (V, N, D) float32.

    Clips get the spec's temporal crop, so a view has the warm-up's training clip length.
    """
    out = []
    for _ in range(views):
        rows = [fn(augment(split.batch(idx), spec, gen)).float()
                for idx in batch_indices(len(split), batch_size, shuffle=False, drop_last=False)]
        out.append(nn.functional.normalize(torch.cat(rows), dim=1))
    return torch.stack(out)
