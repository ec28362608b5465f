"""Common corruptions of images and clips, 5 severities each, as small torch functions.

Every corruption is `(x, severity, *, generator=None) -> x_corrupted` with x in [0, 1],
images (N,C,H,W) or clips (N,C,T,H,W), severity 1..5. The image corruptions follow
Hendrycks & Dietterich ("Benchmarking neural network robustness to common corruptions
and perturbations", ICLR 2019) with their CIFAR-10-C parameters, but are implemented in
torch on the device, so they are not bit-identical to the published CIFAR-10-C arrays.
On clips they act on every frame, with one random draw per clip. The video corruptions
(temporal ones and H.264 re-encoding) apply to clips only.
"""

from pipeline.corruptions.blur import defocus_blur, gaussian_blur
from pipeline.corruptions.codec import h264
from pipeline.corruptions.digital import jpeg, pixelate
from pipeline.corruptions.noise import gaussian_noise, impulse_noise, shot_noise
from pipeline.corruptions.photometric import brightness, contrast
from pipeline.corruptions.temporal import frame_drop, frame_repeat, temporal_shuffle

SEVERITIES = (1, 2, 3, 4, 5)
IMAGE_CORRUPTIONS = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur, "defocus_blur": defocus_blur, "contrast": contrast, "brightness": brightness,
    "jpeg": jpeg, "pixelate": pixelate,
}
VIDEO_CORRUPTIONS = {"frame_drop": frame_drop, "frame_repeat": frame_repeat, "temporal_shuffle": temporal_shuffle, "h264": h264}
CORRUPTIONS = {**IMAGE_CORRUPTIONS, **VIDEO_CORRUPTIONS}


def applicable(name: str, is_video: bool) -> bool:
    """Image corruptions apply to both modalities (per frame for clips); video ones to clips only."""
    return name in IMAGE_CORRUPTIONS or is_video


__all__ = ["CORRUPTIONS", "IMAGE_CORRUPTIONS", "SEVERITIES", "VIDEO_CORRUPTIONS", "applicable"]
