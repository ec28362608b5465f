"""Backbone registry: name -> builder(width, small_input) -> (feature extractor, feature dim).

Image backbones take (N,3,H,W), video backbones (N,3,T,H,W); all return (N, dim) features.
torchvision and pytorchvideo are imported inside the builders that need them only.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pipeline.models.resnet_small import SmallResNet

Builder = Callable[[int, bool], tuple[nn.Module, int]]


def resnet_small(width: int, small_input: bool) -> tuple[nn.Module, int]:
    """ResNet-18 layout (2,2,2,2 BasicBlocks) at widths width*(1,2,4,8)."""
    net = SmallResNet([width, 2 * width, 4 * width, 8 * width], [2, 2, 2, 2], dims=2, small_input=small_input)
    return net, net.out_dim


def r3d_small(width: int, small_input: bool) -> tuple[nn.Module, int]:
    """R3D layout with one 3x3x3 BasicBlock per stage at widths width*(1,2,4,8)."""
    net = SmallResNet([width, 2 * width, 4 * width, 8 * width], [1, 1, 1, 1], dims=3, small_input=small_input)
    return net, net.out_dim


def _torchvision_resnet(name: str, dim: int) -> Builder:
    def build(width: int, small_input: bool) -> tuple[nn.Module, int]:
        from torchvision import models

        _require_width(width, 64, name)
        net = getattr(models, name)(weights=None)
        if small_input:  # the CIFAR stem of SimCLR, SupContrast and the robust-CSL code: 3x3 conv, no max-pool
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        return net, dim

    build.__doc__ = f"torchvision's {name} ({dim}-d features); CIFAR stem for small inputs. `width` must be 64."
    return build


resnet18 = _torchvision_resnet("resnet18", 512)
resnet50 = _torchvision_resnet("resnet50", 2048)  # the backbone of the authors' 2021 code and of SupContrast's CIFAR runs


def _torchvision_video(name: str) -> Builder:
    def build(width: int, small_input: bool) -> tuple[nn.Module, int]:
        from torchvision.models import video

        _require_width(width, 64, name)
        net = getattr(video, name)(weights=None)
        net.fc = nn.Identity()
        return net, 512

    build.__doc__ = f"torchvision's {name} (input (N,3,T,H,W), 512-d features). `width` must be 64."
    return build


def _x3d(size: str) -> Builder:
    def build(width: int, small_input: bool) -> tuple[nn.Module, int]:
        from pytorchvideo.models.x3d import create_x3d

        crop, frames = {"xs": (160, 4), "s": (160, 13)}[size]
        net = create_x3d(input_clip_length=frames, input_crop_size=crop, model_num_class=400, head_activation=None)
        head = net.blocks[-1]
        head.proj = nn.Identity()  # keep the 2048-d pre-logits features
        head.output_pool = nn.AdaptiveAvgPool3d(1)
        head.pool.pool = nn.AdaptiveAvgPool3d(1)  # any clip size, not only the X3D training size
        return nn.Sequential(net, nn.Flatten(1)), 2048

    build.__doc__ = f"pytorchvideo's X3D-{size.upper()} (2048-d features, any clip size)."
    return build


def _require_width(width: int, expected: int, name: str) -> None:
    if width != expected:
        raise ValueError(f"backbone {name} has fixed width {expected}; set width: {expected} or use a *_small backbone")


BACKBONES: dict[str, Builder] = {
    "resnet_small": resnet_small,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "r3d_small": r3d_small,
    "r3d_18": _torchvision_video("r3d_18"),
    "r2plus1d_18": _torchvision_video("r2plus1d_18"),
    "mc3_18": _torchvision_video("mc3_18"),
    "x3d_xs": _x3d("xs"),
    "x3d_s": _x3d("s"),
}
VIDEO_BACKBONES = {"r3d_small", "r3d_18", "r2plus1d_18", "mc3_18", "x3d_xs", "x3d_s"}
