"""Class-folder trees: torchvision ImageFolder style for images, Kinetics style for videos.

    <root>/train/<class>/<file>  and  <root>/test/<class>/<file>   (or val/ for test): as given
    <root>/<class>/<file>                                          : split here, stratified

Labels are positions in the sorted class names of the training tree (the torchvision and
pytorchvideo convention). Without train/ and test/ (or val/) folders, a fixed-seed
stratified split holds out `test_fraction` of every class (the same files for the same
tree and seed). Images are listed by torchvision, videos (.mp4, .avi) by pytorchvideo.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.datasets.digits import stratified_split

Items = list[tuple[Path, int]]


def list_images(folder: Path) -> dict[str, list[Path]]:
    """Class name -> image files (torchvision's IMG_EXTENSIONS), as ImageFolder lists them."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    classes, class_to_idx = find_classes(str(folder))
    return _by_class(make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS), classes)


def list_videos(folder: Path) -> dict[str, list[Path]]:
    """Class name -> video files (.mp4, .avi), as pytorchvideo's LabeledVideoPaths lists them."""
    from pytorchvideo.data.labeled_video_paths import LabeledVideoPaths

    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    paths = LabeledVideoPaths.from_directory(str(folder))
    return _by_class([(path, info["label"]) for path, info in (paths[i] for i in range(len(paths)))], classes)


def _by_class(pairs: list[tuple[str, int]], classes: list[str]) -> dict[str, list[Path]]:
    grouped: dict[str, list[Path]] = {name: [] for name in classes}
    for path, label in pairs:
        grouped[classes[label]].append(Path(path))
    return grouped


def split_folders(root: Path) -> tuple[Path, Path] | None:
    """(train, test) sub-folders when the tree has them (test/ preferred over val/), else None."""
    for test in ("test", "val"):
        if (root / "train").is_dir() and (root / test).is_dir():
            return root / "train", root / test
    return None


def read_splits(root: Path, lister: Callable[[Path], dict[str, list[Path]]], test_fraction: float,
                seed: int) -> tuple[dict[str, Items], list[str]]:
    """{"train": items, "test": items} and the class names of a class-folder tree."""
    require_root(root)
    folders = split_folders(root)
    if folders is None:
        tree = _listed(root, lister)
        classes = sorted(tree)
        items = _items(tree, classes)
        train, test = stratified_split(np.asarray([label for _, label in items]), test_fraction, seed)
        return {"train": [items[i] for i in train], "test": [items[i] for i in test]}, classes
    train_tree, test_tree = _listed(folders[0], lister), _listed(folders[1], lister)
    unknown = sorted(set(test_tree) - set(train_tree))
    if unknown:
        raise ValueError(f"{folders[1]} has classes with no folder in {folders[0]}: {unknown}")
    classes = sorted(train_tree)
    return {"train": _items(train_tree, classes), "test": _items(test_tree, classes)}, classes


def _items(tree: dict[str, list[Path]], classes: list[str]) -> Items:
    """(path, label) pairs, class by class in name order, files in listing (sorted) order."""
    return [(path, classes.index(name)) for name in sorted(tree) for path in tree[name]]


def _listed(folder: Path, lister: Callable[[Path], dict[str, list[Path]]]) -> dict[str, list[Path]]:
    """The lister's output, with the libraries' assertion or empty-class errors made readable."""
    try:
        tree = lister(folder)
    except (AssertionError, FileNotFoundError) as error:
        raise FileNotFoundError(f"{folder}: no usable class folders ({error or 'no files'}); expected "
                                f"{folder}/<class>/<file> for every class") from error
    if not tree:
        raise FileNotFoundError(f"{folder} has no class folders: expected {folder}/<class>/<file>")
    return tree


def require_root(root: Path) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist: expected {root}/<class>/<file> "
                                f"or {root}/train/<class>/<file> plus {root}/test/<class>/<file>")
