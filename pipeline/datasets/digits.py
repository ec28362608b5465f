"""scikit-learn's 8x8 digits as the embedded image dataset (no download: shipped with sklearn)."""

from __future__ import annotations

import numpy as np


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as uint8 (N, 8, 8) in 0..255 and int64 labels (N,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # sklearn stores 0..16
    return images, bunch.target.astype(np.int64)


def upsample_rgb(images: np.ndarray, size: int) -> np.ndarray:
    """(N, 8, 8) uint8 -> (N, size, size, 3) uint8 by bilinear resize, grey replicated to RGB."""
    import torch

    x = torch.from_numpy(images).float()[:, None]  # (N, 1, 8, 8)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)[:, 0]  # (N, size, size)
    return np.repeat(x.numpy()[..., None], 3, axis=-1)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-seed stratified train/test index split."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(test)
