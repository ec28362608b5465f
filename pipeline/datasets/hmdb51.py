"""The HMDB51 layout: class folders of videos plus per-class split files, as distributed.

    <root>/hmdb51_org/<class>/<video>.avi                        (hmdb51_org.rar, unpacked)
    <root>/testTrainMulti_7030_splits/<class>_test_split<N>.txt   (test_train_splits.rar)

Each split-file line is "<video>.avi <id>": 1 train, 2 test, 0 unused in fold N. Parsed
by pytorchvideo's `Hmdb51LabeledVideoPaths`; labels are the sorted class names' positions.
"""

from __future__ import annotations

from pathlib import Path

VIDEO_DIR = "hmdb51_org"
SPLIT_DIR = "testTrainMulti_7030_splits"


def split_files(root: Path, fold: int) -> list[Path]:
    """The 51 `<class>_test_split<fold>.txt` files, sorted; an error names what is missing."""
    folder = root / SPLIT_DIR
    files = sorted(folder.glob(f"*_test_split{fold}.txt")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"missing HMDB51 split files {folder}/<class>_test_split{fold}.txt: unpack the official "
                                f"test_train_splits.rar into {root} (lines '<video>.avi <0|1|2>')")
    if not (root / VIDEO_DIR).is_dir():
        raise FileNotFoundError(f"missing HMDB51 videos {root / VIDEO_DIR}/<class>/*.avi: unpack hmdb51_org.rar and its "
                                "per-class archives there")
    return files


def class_names(files: list[Path]) -> list[str]:
    """Class names from split-file names ("brush_hair_test_split1.txt" -> "brush_hair"), sorted."""
    return sorted(f.stem.rsplit("_test_split", 1)[0] for f in files)


def read_split(root: Path, split: str, fold: int) -> tuple[list[tuple[Path, int]], list[str]]:
    """(video path, 0-based label) pairs of `split` ("train"/"test") in fold 1..3, and the class names."""
    from pytorchvideo.data.hmdb51 import Hmdb51LabeledVideoPaths

    files = split_files(root, fold)
    classes = class_names(files)
    paths = Hmdb51LabeledVideoPaths.from_csvs(files, split)
    paths.path_prefix = str(root / VIDEO_DIR)
    pairs = (paths[i] for i in range(len(paths)))
    return [(Path(path), classes.index(info["label"])) for path, info in pairs], classes
