"""CIFAR-10 and CIFAR-100 in the official python-pickle layout, read through a restricted unpickler.

    <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <root>/cifar-100-python/{train, test, meta}

`verify_checksums: true` checks each file against the official MD5 sum (torchvision's table);
`false` accepts a re-packed copy of the same format (a subset, or the tests' tiny fakes).
Either way the files are unpickled by `SafeUnpickler`, which builds only dicts, lists, strings,
numbers and numpy arrays: a crafted file cannot run code, whatever `verify_checksums` says.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
FILES = {
    "cifar10": ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"],
    "cifar100": ["train", "test", "meta"],
}
SPLIT_FILES = {
    "cifar10": {"train": FILES["cifar10"][:5], "test": ["test_batch"]},
    "cifar100": {"train": ["train"], "test": ["test"]},
}
META = {"cifar10": ("batches.meta", "label_names"), "cifar100": ("meta", "fine_label_names")}
URLS = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as Python 3's protocol-2 pickles use it for bytes, limited to latin-1."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r} (only latin1)")
    return codecs.encode(text, "latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled ndarray needs, under numpy 1's and numpy 2's module names.

    The official (Python 2) files need only _reconstruct, ndarray and dtype; _frombuffer is how
    numpy pickles arrays at protocol 5, so a copy re-packed by Python 3 loads too.
    """
    from numpy._core import multiarray, numeric

    allowed = {}
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves no global outside `_numpy_globals()`: no os.system, no __reduce__ tricks."""

    allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load global {module}.{name}: a CIFAR file holds only dicts, lists, strings and "
                "numpy arrays, so this file is not one (it could run code if unpickled)") from None


def safe_load(path: Path) -> Any:
    """Unpickle `path` with `SafeUnpickler` (latin1 as for Python 2 pickles: keys become str)."""
    data = path.read_bytes()
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a CIFAR python pickle: {error}") from error


def official_md5(source: str) -> dict[str, str]:
    """{file name: MD5 of the official file}, from torchvision's tables."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[source]
    return {**dict(cls.train_list), **dict(cls.test_list), cls.meta["filename"]: cls.meta["md5"]}


def check_md5(folder: Path, source: str) -> None:
    """Raise ValueError naming every file whose MD5 differs from the official one."""
    wrong = [name for name, md5 in official_md5(source).items()
             if hashlib.md5((folder / name).read_bytes()).hexdigest() != md5]
    if wrong:
        raise ValueError(
            f"{source} at {folder}: {', '.join(wrong)} differ from the official files (MD5 mismatch). Re-download "
            f"{URLS[source]}, or, for a deliberately re-packed copy in the same format, set "
            "verify_checksums: false (the files are still loaded safely, but nothing then checks that "
            "the images and labels are the official ones)")


def require_layout(root: Path, source: str) -> None:
    """Raise FileNotFoundError naming the missing files and where they belong."""
    folder = root / FOLDERS[source]
    missing = [name for name in FILES[source] if not (folder / name).is_file()]
    if missing:
        where = f"unpacked into {root}" if str(root) not in ("", ".") else \
            f"unpacked into the directory named by decode.<dataset>.root (unset: it is '{root}')"
        raise FileNotFoundError(
            f"{source}: missing {', '.join(missing)} in {folder}: expected the official python version "
            f"({URLS[source]}) {where}, or set download: true")


def fetch_archive(root: Path, source: str) -> None:
    """Fetch and unpack the official archive into `root` (torchvision checks the archive's MD5)."""
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[source]
    if not all((root / FOLDERS[source] / name).is_file() for name in FILES[source]):
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)


def read_split(folder: Path, source: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) HWC images and int64 (N,) labels of one split (rows are 1024 R, G, B)."""
    label_key = "labels" if source == "cifar10" else "fine_labels"
    images, labels = [], []
    for name in SPLIT_FILES[source][split]:
        entry = safe_load(folder / name)
        if not isinstance(entry, dict) or not isinstance(entry.get("data"), np.ndarray) or label_key not in entry:
            raise ValueError(f"{folder / name}: expected a dict with 'data' (an array) and '{label_key}'")
        images.append(entry["data"])
        labels.extend(entry[label_key])
    x = np.vstack(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, np.uint8), np.asarray(labels, np.int64)


def load(root: Path, source: str, download: bool, verify_checksums: bool) -> dict[str, Any]:
    """{"train"/"test": (uint8 (N, 32, 32, 3), int64 (N,))} and "classes": the class names."""
    if download:
        fetch_archive(root, source)
    require_layout(root, source)
    folder = root / FOLDERS[source]
    if verify_checksums:
        check_md5(folder, source)
    out: dict[str, Any] = {split: read_split(folder, source, split) for split in ("train", "test")}
    meta_file, key = META[source]
    out["classes"] = [str(name) for name in safe_load(folder / meta_file)[key]]
    return out
