"""JPEG compression and pixelation at 5 severities, per frame for clips.

Severity parameters follow Hendrycks & Dietterich (CIFAR-10-C settings); not bit-identical
with CIFAR-10-C (torchvision's libjpeg, torch resampling instead of PIL).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from pipeline.corruptions.common import per_frame, severity_value, to_uint8

JPEG_QUALITY = (80, 65, 58, 50, 40)
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)  # side scale of the low-resolution image


def jpeg(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode and decode as JPEG at the severity's quality (on the CPU: libjpeg; the data are small)."""
    quality = severity_value(JPEG_QUALITY, severity)

    def roundtrip(f: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its JPEG codec in favour of torchcodec; it still works
            warnings.filterwarnings("ignore", message="The image decoding and encoding", category=DeprecationWarning)
            encoded = encode_jpeg(list(to_uint8(f).cpu()), quality=quality)
            return torch.stack(decode_jpeg(encoded)).to(f.device).float() / 255

    return per_frame(roundtrip, x)


def pixelate(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Box-downsample to scale * side, then nearest-neighbour upsample back (PIL BOX both ways in H&D)."""
    scale = severity_value(PIXELATE, severity)

    def pix(f: torch.Tensor) -> torch.Tensor:
        h, w = f.shape[-2:]
        small = F.interpolate(f, size=(max(1, int(h * scale)), max(1, int(w * scale))), mode="area")
        return F.interpolate(small, size=(h, w), mode="nearest")

    return per_frame(pix, x)
