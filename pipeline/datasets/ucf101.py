"""The UCF101 on-disk layout: class folders of videos plus `ucfTrainTestlist/` split files.

    <root>/UCF-101/<Class>/v_<Class>_g<GG>_c<CC>.<ext>
    <root>/ucfTrainTestlist/classInd.txt        "1 ApplyEyeMakeup"
    <root>/ucfTrainTestlist/trainlist01.txt     "ApplyEyeMakeup/v_..._g08_c01.avi 1"
    <root>/ucfTrainTestlist/testlist01.txt      "ApplyEyeMakeup/v_..._g01_c01.avi"

Labels in the split files are 1-based; we return 0-based.
"""

from __future__ import annotations

from pathlib import Path

VIDEO_DIR = "UCF-101"
SPLIT_DIR = "ucfTrainTestlist"


def read_class_index(root: Path) -> dict[str, int]:
    """Class name -> 0-based label from classInd.txt."""
    path = root / SPLIT_DIR / "classInd.txt"
    _require(path, "classInd.txt lists '<1-based id> <ClassName>' per line")
    classes = {}
    for line in path.read_text().splitlines():
        if line.strip():
            idx, name = line.split()
            classes[name] = int(idx) - 1
    return classes


def read_split(root: Path, split: str, fold: int) -> list[tuple[Path, int]]:
    """(video path, 0-based label) for `split` in {"train", "test"} of fold 1..3."""
    classes = read_class_index(root)
    path = root / SPLIT_DIR / f"{split}list{fold:02d}.txt"
    _require(path, f"{split}list{fold:02d}.txt lists '<Class>/<file>' per line (UCF101 split files)")
    items = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rel = line.split()[0]
        items.append((root / VIDEO_DIR / rel, classes[rel.split("/")[0]]))
    return items


def require_layout(root: Path, fold: int) -> None:
    """Raise FileNotFoundError naming the first missing part of the layout above."""
    if not root.is_dir():
        raise FileNotFoundError(f"UCF101 root {root} does not exist: it must hold {VIDEO_DIR}/<Class>/*.avi and {SPLIT_DIR}/")
    for name, what in (("classInd.txt", "lists '<1-based id> <ClassName>' per line"),
                       (f"trainlist{fold:02d}.txt", "lists '<Class>/<file> <1-based id>' per line"),
                       (f"testlist{fold:02d}.txt", "lists '<Class>/<file>' per line")):
        _require(root / SPLIT_DIR / name, what)
    if not (root / VIDEO_DIR).is_dir():
        raise FileNotFoundError(f"missing UCF101 videos {root / VIDEO_DIR}/<Class>/*.avi: unpack UCF101.rar there")


def write_layout(root: Path, videos: list[tuple[str, int, int]], class_names: list[str], ext: str) -> None:
    """Write classInd/trainlist01/testlist01 for (file stem, label, group) triples; groups 1-7 are test."""
    split_dir = root / SPLIT_DIR
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(class_names)))
    train, test = [], []
    for stem, label, group in videos:
        rel = f"{class_names[label]}/{stem}.{ext}"
        (test if group <= 7 else train).append(rel if group <= 7 else f"{rel} {label + 1}")
    (split_dir / "trainlist01.txt").write_text("".join(line + "\n" for line in train))
    (split_dir / "testlist01.txt").write_text("".join(line + "\n" for line in test))


def _require(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"missing UCF101 split file {path}: {what}. Download the official splits "
                                "(UCF101TrainTestSplits-RecognitionTask.zip) and unpack them there.")
