"""JPEG compression and pixelation at 5 severities, per frame for clips.

Severity parameters follow Hendrycks & Dietterich (CIFAR-10-C settings); not bit-identical
with CIFAR-10-C (torch resampling instead of PIL for pixelate). JPEG goes through Pillow's
libjpeg as in H&D; not torchvision's codec, which 0.29 deprecates and whose import costs
~1.5 s per evaluate process.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.corruptions.common import per_frame, severity_value, to_uint8

JPEG_QUALITY = (80, 65, 58, 50, 40)
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)  # side scale of the low-resolution image


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode one uint8 RGB image (H,W,3) as JPEG at `quality` and decode it again."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def jpeg(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode and decode as JPEG at the severity's quality (on the CPU: libjpeg; the data are small)."""
    quality = severity_value(JPEG_QUALITY, severity)

    def roundtrip(f: torch.Tensor) -> torch.Tensor:
        images = to_uint8(f).permute(0, 2, 3, 1).cpu().numpy()  # (B,H,W,3)
        decoded = np.stack([jpeg_roundtrip(image, quality) for image in images])
        return torch.from_numpy(decoded).permute(0, 3, 1, 2).to(f.device).float() / 255

    return per_frame(roundtrip, x)


def pixelate(x: torch.Tensor, severity: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Box-downsample to scale * side, then nearest-neighbour upsample back (PIL BOX both ways in H&D)."""
    scale = severity_value(PIXELATE, severity)

    def pix(f: torch.Tensor) -> torch.Tensor:
        h, w = f.shape[-2:]
        small = F.interpolate(f, size=(max(1, int(h * scale)), max(1, int(w * scale))), mode="area")
        return F.interpolate(small, size=(h, w), mode="nearest")

    return per_frame(pix, x)
