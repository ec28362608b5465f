"""Batched, per-sample random augmentations on the device (no per-sample Python).

Each function takes a float batch in [0, 1], images (N,C,H,W) or clips (N,C,T,H,W), and
draws one set of random parameters per sample; a clip's frames share them (same crop,
flip and colour change for every frame), as video CSL requires.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.config import AugmentSpec  # the settings live with the config, the code here

# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)
# RGB <-> YIQ: hue rotation = rotating the (I, Q) chroma plane (the GPU-friendly form used by DALI).
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _uniform(n: int, low: float, high: float, like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, device=like.device, generator=gen) * (high - low) + low


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,1,1,1) or (N,1,1,1,1) to broadcast over a sample (or a whole clip)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def resized_crop_flip(x: torch.Tensor, scale_min: float, flip_p: float, gen: torch.Generator | None) -> torch.Tensor:
    """Random resized crop (area in [scale_min, 1], aspect in [3/4, 4/3]) + horizontal flip.

    One `grid_sample` per batch does crop, resize back to (H, W) and flip: the crop is an
    affine map per sample. Clips are viewed as (N, C*T, H, W) so all frames share it.
    """
    n, shape = x.shape[0], x.shape
    area = _uniform(n, scale_min, 1.0, x, gen)
    log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), x, gen)
    ratio = torch.exp(log_ratio)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width as a fraction of the image
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(n, device=x.device, generator=gen) * 2 - 1) * (1 - sx)  # centre offset, in [-1, 1] units
    ty = (torch.rand(n, device=x.device, generator=gen) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(n, device=x.device, generator=gen) < flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    flat = x.reshape(n, -1, shape[-2], shape[-1])  # (N, C*T, H, W) for clips
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode="reflection", align_corners=False).view(shape)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of an RGB batch, kept 3-channel. Shape preserved."""
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, *([1] * (x.dim() - 2)))
    return (x * w).sum(1, keepdim=True).expand_as(x)


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each sample's hue by `turns` (N,) of a full turn, in YIQ space."""
    m = RGB_TO_YIQ.to(x.device, x.dtype)
    yiq = torch.einsum("ij,nj...->ni...", m, x)
    angle = _per_sample(turns * 2 * math.pi, yiq[:, 0])
    i, q = yiq[:, 1], yiq[:, 2]
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotated = torch.stack([yiq[:, 0], i * cos - q * sin, i * sin + q * cos], dim=1)
    return torch.einsum("ij,nj...->ni...", torch.linalg.inv(m), rotated)


def color_jitter(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast, saturation and hue with per-sample strengths, applied with `jitter_prob`."""
    n = x.shape[0]
    b = _per_sample(_uniform(n, 1 - spec.brightness, 1 + spec.brightness, x, gen), x)
    c = _per_sample(_uniform(n, 1 - spec.contrast, 1 + spec.contrast, x, gen), x)
    s = _per_sample(_uniform(n, 1 - spec.saturation, 1 + spec.saturation, x, gen), x)
    h = _uniform(n, -spec.hue, spec.hue, x, gen)
    y = (x * b).clamp(0, 1)
    mean = grayscale(y).mean(dim=tuple(range(1, x.dim())), keepdim=True)  # one mean per image / clip
    y = ((y - mean) * c + mean).clamp(0, 1)
    gray = grayscale(y)
    y = ((y - gray) * s + gray).clamp(0, 1)
    y = rotate_hue(y, h).clamp(0, 1)
    apply = _per_sample(torch.rand(n, device=x.device, generator=gen) < spec.jitter_prob, x)
    return torch.where(apply, y, x)


def random_grayscale(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    apply = _per_sample(torch.rand(x.shape[0], device=x.device, generator=gen) < p, x)
    return torch.where(apply, grayscale(x), x)


def temporal_crop(x: torch.Tensor, frames: int, gen: torch.Generator | None) -> torch.Tensor:
    """Keep `frames` consecutive frames at a random start per clip. (N,C,T,H,W) -> (N,C,frames,H,W)."""
    n, c, t, h, w = x.shape
    if frames <= 0 or frames >= t:
        return x
    start = torch.randint(0, t - frames + 1, (n,), device=x.device, generator=gen)
    idx = (start[:, None] + torch.arange(frames, device=x.device)[None]).view(n, 1, frames, 1, 1)
    return x.gather(2, idx.expand(n, c, frames, h, w))


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels, one per sigma. (N,) -> (N, size); size is odd."""
    r = torch.arange(size, device=sigma.device, dtype=sigma.dtype) - size // 2
    k = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """SimCLR's blur: with probability p, sigma ~ U(0.1, 2) px, kernel ~10% of the side (odd).

    Per-sample kernels as one grouped, separable convolution over the whole batch (a clip's
    frames share the sample's kernel). No random numbers are drawn when p == 0, so turning
    blur off leaves every other augmentation's draws unchanged.
    """
    if p <= 0:
        return x
    n, shape = x.shape[0], x.shape
    size = max(3, int(0.1 * shape[-1]) // 2 * 2 + 1)
    sigma = _uniform(n, 0.1, 2.0, x, gen)
    apply = _per_sample(torch.rand(n, device=x.device, generator=gen) < p, x)
    flat = x.reshape(1, -1, shape[-2], shape[-1])  # (1, N*C*T, H, W): one group per plane
    planes = flat.shape[1] // n
    k = gaussian_kernels(sigma, size).to(x.dtype).repeat_interleave(planes, dim=0)  # (N*C*T, size)
    pad = size // 2
    y = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="reflect"), k[:, None, None, :], groups=flat.shape[1])
    y = F.conv2d(F.pad(y, (0, 0, pad, pad), mode="reflect"), k[:, None, :, None], groups=flat.shape[1])
    return torch.where(apply, y.view(shape), x)


def augment(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator | None = None) -> torch.Tensor:
    """One SimCLR view of a float batch in [0, 1]: images (N,C,H,W) or clips (N,C,T,H,W)."""
    if x.dim() == 5:
        x = temporal_crop(x, spec.temporal_crop, gen)
    x = resized_crop_flip(x, spec.crop_scale_min, spec.flip, gen)
    x = color_jitter(x, spec, gen)
    x = random_grayscale(x, spec.grayscale, gen)
    return gaussian_blur(x, spec.blur, gen)
