"""Augmentations: per-sample randomness, shared parameters across a clip's frames, valid range."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.augment import (
    AugmentSpec,
    augment,
    color_jitter,
    gaussian_blur,
    gaussian_kernels,
    grayscale,
    resized_crop_flip,
    rotate_hue,
    temporal_crop,
)

SPEC = AugmentSpec(crop_scale_min=0.2, flip=0.5, jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4,
                   hue=0.1, grayscale=0.2, temporal_crop=0, blur=0.0)


def test_samples_get_different_views_of_the_same_image():
    x = torch.rand(1, 3, 16, 16).repeat(8, 1, 1, 1)  # 8 copies of one image
    y = augment(x, SPEC, torch.Generator().manual_seed(0))
    diffs = [(y[0] - y[i]).abs().max().item() for i in range(1, 8)]
    assert min(diffs) > 1e-3
    assert y.min() >= 0 and y.max() <= 1 and y.shape == x.shape


def test_clip_frames_share_one_crop_flip_and_colour():
    frame = torch.rand(2, 3, 1, 16, 16)
    static = frame.repeat(1, 1, 6, 1, 1)  # (N, C, T, H, W): the same frame 6 times
    y = augment(static, SPEC, torch.Generator().manual_seed(1))
    for t in range(1, 6):
        assert torch.allclose(y[:, :, 0], y[:, :, t], atol=1e-6)
    assert not torch.allclose(y[0], y[1])


def smooth_images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """Low-frequency images (3x3 random colours, bilinearly upsampled): a near-identity crop barely changes them."""
    coarse = torch.rand(n, 3, 3, 3, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)


def test_full_area_crop_without_flip_keeps_the_image_not_another():
    x, unrelated = smooth_images(8, 0), smooth_images(8, 1)
    y = resized_crop_flip(x, scale_min=1.0, flip_p=0.0, gen=torch.Generator().manual_seed(0))
    # area 1 with aspect in [3/4, 4/3]: at most a 13 % zoom along one axis
    assert y.shape == x.shape and (y - x).abs().mean() < 0.2 * (y - unrelated).abs().mean()


def test_flip_reverses_width():
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(6, 3, 16, 16).contiguous()  # brighter to the right

    def slope(y):  # mean left-to-right gradient per sample
        return (y[..., 1:] - y[..., :-1]).mean(dim=(1, 2, 3))

    flipped = resized_crop_flip(ramp, scale_min=0.5, flip_p=1.0, gen=torch.Generator().manual_seed(0))
    kept = resized_crop_flip(ramp, scale_min=0.5, flip_p=0.0, gen=torch.Generator().manual_seed(0))
    assert (slope(flipped) < 0).all() and (slope(kept) > 0).all()
    torch.testing.assert_close(flipped, kept.flip(-1), atol=1e-5, rtol=0)  # same crop (same draws), mirrored


def test_hue_rotation_by_a_full_turn_is_identity_and_keeps_luma():
    x = torch.rand(4, 3, 6, 6)
    assert torch.allclose(rotate_hue(x, torch.ones(4)), x, atol=1e-5)
    y = rotate_hue(x, torch.full((4,), 0.3))
    assert torch.allclose(grayscale(y)[:, 0], grayscale(x)[:, 0], atol=1e-5)


def test_jitter_probability_zero_is_identity():
    spec = AugmentSpec(**{**SPEC.__dict__, "jitter_prob": 0.0})
    x = torch.rand(5, 3, 4, 4)
    assert torch.equal(color_jitter(x, spec, torch.Generator().manual_seed(0)), x)


def test_temporal_crop_takes_consecutive_frames_per_clip():
    t = torch.arange(10.0).view(1, 1, 10, 1, 1).repeat(6, 1, 1, 2, 2)
    y = temporal_crop(t, 4, torch.Generator().manual_seed(0))
    assert y.shape == (6, 1, 4, 2, 2)
    starts = y[:, 0, 0, 0, 0]
    for i in range(6):
        assert torch.equal(y[i, 0, :, 0, 0], starts[i] + torch.arange(4.0))
    assert len(set(starts.tolist())) > 1


def test_blur_matches_a_per_sample_reference_convolution():
    x = torch.rand(3, 3, 12, 12)
    gen = torch.Generator().manual_seed(4)
    y = gaussian_blur(x, 1.0, gen)
    sigma = torch.rand(3, generator=torch.Generator().manual_seed(4)) * 1.9 + 0.1  # the same first draw
    for i in range(3):
        k = gaussian_kernels(sigma[i : i + 1], 3)[0]
        k2 = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)  # separable = outer product
        ref = F.conv2d(F.pad(x[i : i + 1], (1, 1, 1, 1), mode="reflect"), k2, groups=3)
        assert torch.allclose(y[i], ref[0], atol=1e-5)
    assert torch.allclose(gaussian_kernels(torch.tensor([0.7, 2.0]), 5).sum(1), torch.ones(2))


def test_blur_off_draws_nothing_and_clip_frames_share_the_kernel():
    x = torch.rand(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert torch.equal(gaussian_blur(x, 0.0, gen), x) and torch.equal(gen.get_state(), state)
    static = torch.rand(2, 3, 1, 10, 10).repeat(1, 1, 4, 1, 1)
    y = gaussian_blur(static, 1.0, torch.Generator().manual_seed(1))
    assert all(torch.allclose(y[:, :, 0], y[:, :, t], atol=1e-6) for t in range(4))
    assert (y - static).abs().max() > 1e-3 and y.min() >= 0 and y.max() <= 1
