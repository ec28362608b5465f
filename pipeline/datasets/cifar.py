"""CIFAR-10 and CIFAR-100 in the official python-pickle layout, read by torchvision.

    <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <root>/cifar-100-python/{train, test, meta}

torchvision checks each file against the official MD5 sum; `verify_checksums: false`
accepts a re-packed copy of the same format (a subset, or the tests' tiny fakes).
torchvision unpickles these files: read only copies you trust (the official archives).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
FILES = {
    "cifar10": ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"],
    "cifar100": ["train", "test", "meta"],
}
URLS = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}


def require_layout(root: Path, source: str) -> None:
    """Raise FileNotFoundError naming the missing files and where they belong."""
    folder = root / FOLDERS[source]
    missing = [name for name in FILES[source] if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source}: missing {', '.join(missing)} in {folder}: expected the official python version "
            f"({URLS[source]}) unpacked into {root}, or set download: true")


def dataset_class(source: str, verify_checksums: bool) -> type:
    """torchvision's CIFAR10/CIFAR100, or a subclass that skips the MD5 check (None = exists only)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[source]
    if verify_checksums:
        return cls
    unchecked = {"train_list": [[name, None] for name, _ in cls.train_list],
                 "test_list": [[name, None] for name, _ in cls.test_list], "meta": {**cls.meta, "md5": None}}
    return type(f"{cls.__name__}Unverified", (cls,), unchecked)


def load(root: Path, source: str, download: bool, verify_checksums: bool) -> dict[str, Any]:
    """{"train"/"test": (uint8 (N, 32, 32, 3), int64 (N,))} and "classes": the class names."""
    if not download:
        require_layout(root, source)
    cls = dataset_class(source, verify_checksums)
    try:
        splits = {name: cls(str(root), train=name == "train", download=download) for name in ("train", "test")}
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        raise ValueError(f"{source} at {root / FOLDERS[source]}: {error} (a checksum mismatch: the files are not the "
                         "official ones; set verify_checksums: false to accept a re-packed copy)") from error
    out: dict[str, Any] = {name: (np.ascontiguousarray(d.data, np.uint8), np.asarray(d.targets, np.int64))
                           for name, d in splits.items()}
    out["classes"] = list(splits["train"].classes)
    return out
