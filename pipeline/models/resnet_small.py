"""Narrow ResNets (2-D and 3-D) for CPU-scale studies and tests.

Why not torchvision: its ResNet and VideoResNet hard-code the widths 64..512, which is
too heavy for the 10-minute CPU default study, and importing torchvision costs ~1.8 s per
process (it dominates ~100 tiny Snakemake jobs). This builder mirrors torchvision's
BasicBlock ResNet exactly (same block, same downsampling, same stems): at widths
(64, 128, 256, 512) and blocks (2, 2, 2, 2) it has the same parameter count as
torchvision's resnet18 (checked in tests/test_models.py). Paper-scale runs use the
torchvision / pytorchvideo builders in `backbones.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 (or 3x3x3) convolutions with a residual connection (He et al. 2016)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dims: int) -> None:
        super().__init__()
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv1 = conv(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = bn(out_ch)
        self.conv2 = conv(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = bn(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(conv(in_ch, out_ch, 1, stride, bias=False), bn(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


def _stem(width: int, dims: int, small_input: bool) -> nn.Sequential:
    """CIFAR stem (3x3, stride 1) for small inputs; ImageNet stem (7x7/2 + maxpool) otherwise.

    The 3-D stems follow torchvision's r3d_18: (3,7,7) kernel, spatial stride 2, no maxpool;
    the small-input 3-D stem keeps full resolution with a (3,3,3) kernel.
    """
    if dims == 2:
        if small_input:
            return nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        return nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
    kernel, stride, pad = ((3, 3, 3), 1, 1) if small_input else ((3, 7, 7), (1, 2, 2), (1, 3, 3))
    return nn.Sequential(nn.Conv3d(3, width, kernel, stride, pad, bias=False), nn.BatchNorm3d(width), nn.ReLU(inplace=True))


class SmallResNet(nn.Module):
    """ResNet feature extractor: input (N,3,H,W) or (N,3,T,H,W) -> features (N, widths[-1])."""

    def __init__(self, widths: Sequence[int], blocks: Sequence[int], dims: int, small_input: bool) -> None:
        super().__init__()
        self.stem = _stem(widths[0], dims, small_input)
        layers, in_ch = [], widths[0]
        for stage, (width, n_blocks) in enumerate(zip(widths, blocks, strict=True)):
            for b in range(n_blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(in_ch, width, stride, dims))
                in_ch = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.out_dim = in_ch
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layers(self.stem(x))).flatten(1)
