"""Corruptions: shapes and range, severity ordering, one draw per clip, temporal ones only reorder frames."""

from __future__ import annotations

import colorsys

import pytest
import torch
import torch.nn.functional as F

from pipeline.corruptions import CORRUPTIONS, IMAGE_CORRUPTIONS, VIDEO_CORRUPTIONS
from pipeline.corruptions.photometric import brightness


def smooth_images(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Natural-looking test images: upsampled low-resolution noise, in (0.15, 0.85). (N,3,H,W)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return 0.15 + 0.7 * F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def smooth_clips(n: int = 6, frames: int = 8, size: int = 16) -> torch.Tensor:
    """Clips that fade from one smooth image to another: (N,3,T,H,W), smooth in space and time."""
    a, b = smooth_images(n, size, seed=1), smooth_images(n, size, seed=2)
    w = torch.linspace(0, 1, frames).view(1, 1, frames, 1, 1)
    return a[:, :, None] * (1 - w) + b[:, :, None] * w


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


CASES = [(name, "image") for name in IMAGE_CORRUPTIONS] + [(name, "clip") for name in CORRUPTIONS]


@pytest.mark.parametrize("name,kind", CASES)
def test_shape_range_and_severity_order(name, kind):
    x = smooth_images() if kind == "image" else smooth_clips()
    out = {s: CORRUPTIONS[name](x, s, generator=gen()) for s in (1, 5)}
    for y in out.values():
        assert y.shape == x.shape and y.dtype == x.dtype
        assert y.min() >= 0 and y.max() <= 1
    change = {s: float((y - x).abs().mean()) for s, y in out.items()}
    assert change[5] > change[1] > 0 or (name == "frame_drop" and change[5] > change[1])


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_seeded_and_odd_sizes(name):
    x = smooth_clips(n=3, frames=5, size=16)[..., :7, :9]  # odd H and W (H.264 pads and crops)
    a, b = (CORRUPTIONS[name](x, 3, generator=gen()) for _ in range(2))
    assert a.shape == x.shape and torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(IMAGE_CORRUPTIONS))
def test_a_clip_shares_one_draw_across_frames(name):
    still = smooth_images(4)[:, :, None].expand(-1, -1, 5, -1, -1).contiguous()  # 5 identical frames
    out = IMAGE_CORRUPTIONS[name](still, 4, generator=gen())
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-6)
    assert not torch.equal(out[0], out[1])  # but clips differ from each other


@pytest.mark.parametrize("name", sorted(set(VIDEO_CORRUPTIONS) - {"h264"}))
def test_temporal_corruptions_only_reorder_or_repeat_frames(name):
    x = smooth_clips(n=16)
    out = VIDEO_CORRUPTIONS[name](x, 5, generator=gen())
    for clip_in, clip_out in zip(x, out, strict=True):
        frames_in = clip_in.permute(1, 0, 2, 3).flatten(1)  # (T, C*H*W)
        frames_out = clip_out.permute(1, 0, 2, 3).flatten(1)
        source = torch.cdist(frames_out, frames_in).argmin(1)  # which input frame each output frame is
        assert torch.equal(frames_out, frames_in[source])
        if name == "temporal_shuffle":  # a permutation within windows of 8 frames: same multiset
            assert sorted(source.tolist()) == list(range(x.shape[2]))
        else:  # frames keep their order and the first frame is kept
            assert source[0] == 0 and bool((source[1:] >= source[:-1]).all())


def test_brightness_matches_an_hsv_round_trip():
    x = torch.rand(2, 3, 3, 3, generator=gen())
    x[0, :, 0, 0] = 0.0  # black: hue undefined
    out = brightness(x, 3)
    for n, i, j in [(0, 0, 0), (0, 1, 2), (1, 2, 1), (1, 0, 0)]:
        h, s, v = colorsys.rgb_to_hsv(*x[n, :, i, j].tolist())
        expected = colorsys.hsv_to_rgb(h, s, min(v + 0.15, 1.0))
        assert out[n, :, i, j].tolist() == pytest.approx(expected, abs=1e-6)


def test_h264_at_best_quality_is_close_to_the_input():
    x = smooth_clips(n=2)
    y = CORRUPTIONS["h264"](x, 1)
    psnr = -10 * torch.log10(((y - x) ** 2).mean())
    assert psnr > 30


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_blur_agrees_with_torchvision(severity):
    """The hand-written separable blur equals torchvision's gaussian_blur (same kernel, reflect padding)."""
    from torchvision.transforms.v2.functional import gaussian_blur as tv_gaussian_blur

    from pipeline.corruptions.blur import GAUSSIAN_SIGMA, separable_gaussian_blur

    x = smooth_images(size=16) + 0.05 * torch.rand(8, 3, 16, 16, generator=gen())  # some high frequencies to blur
    sigma = GAUSSIAN_SIGMA[severity - 1]
    for k in (3, 5, 7):
        ours = separable_gaussian_blur(x, k, sigma)
        ref = tv_gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert (CORRUPTIONS["gaussian_blur"](x, severity) - x).abs().mean() > 1e-3  # it does blur


@pytest.mark.parametrize("quality_severity", [1, 5])
def test_jpeg_agrees_with_torchvision_codec(quality_severity):
    """Pillow's JPEG round trip is libjpeg like torchvision's: the same images within codec rounding."""
    import warnings

    from torchvision.io import decode_jpeg, encode_jpeg

    from pipeline.corruptions.common import to_uint8
    from pipeline.corruptions.digital import JPEG_QUALITY

    x = smooth_images(size=32)
    ours = CORRUPTIONS["jpeg"](x, quality_severity)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = encode_jpeg(list(to_uint8(x)), quality=JPEG_QUALITY[quality_severity - 1])
        ref = torch.stack(decode_jpeg(encoded)).float() / 255
    assert (ours - ref).abs().max() <= 3 / 255  # encoder/decoder rounding, not a different quality
    assert (ours - x).abs().mean() > 1e-3  # it is lossy


def test_jpeg_gets_worse_with_severity():
    x = smooth_images(size=32) + 0.1 * torch.rand(8, 3, 32, 32, generator=gen())
    errors = [(CORRUPTIONS["jpeg"](x.clamp(0, 1), s) - x.clamp(0, 1)).abs().mean() for s in (1, 3, 5)]
    assert errors[0] < errors[1] < errors[2]
