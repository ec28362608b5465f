"""Which modality each dataset source is: the one fact about datasets that the grid needs.

Kept apart from `pipeline.datasets` so that the grid (and with it the report's code hash) does not
depend on the dataset readers.
"""

from __future__ import annotations

# The source decides the modality; the grid reads this to pick pretrain.image/video.
SOURCE_MODALITY = {
    "sklearn_digits": "image", "cifar10": "image", "cifar100": "image", "image_folder": "image",
    "ucf101": "video", "hmdb51": "video", "video_folder": "video",
}
