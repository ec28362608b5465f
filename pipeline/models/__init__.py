"""Encoders (normalisation inside the model), projection heads and classifiers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline.models.backbones import BACKBONES, VIDEO_BACKBONES


class Normalize(nn.Module):
    """Per-channel (x - mean) / std inside the model, so attacks see inputs in [0, 1].

    Works for images (N,C,H,W) and clips (N,C,T,H,W).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)


class Encoder(nn.Module):
    """Normalize + backbone: [0,1] input -> (N, dim) features."""

    def __init__(self, backbone: str, width: int, small_input: bool, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
        self.normalize = Normalize(mean, std)
        self.backbone, self.out_dim = BACKBONES[backbone](width, small_input)
        self.is_video = backbone in VIDEO_BACKBONES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR's 2-layer MLP projection head (Linear-BN-ReLU-Linear)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
    )


class Classifier(nn.Module):
    """Encoder + linear head: [0,1] input -> logits. The model every attack sees."""

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build_encoder(model_args: dict) -> Encoder:
    """Rebuild an encoder from the `model_args` dict stored in every checkpoint."""
    return Encoder(model_args["backbone"], model_args["width"], model_args["small_input"], model_args["mean"], model_args["std"])
