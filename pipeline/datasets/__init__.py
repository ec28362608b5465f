"""Dataset readers used by the decode stage. Importing this package stays cheap (no torch).

Layouts (each module's docstring has the details):
    sklearn_digits  shipped with scikit-learn (no root)
    cifar10/100     <root>/cifar-10-batches-py/ or <root>/cifar-100-python/ (official pickles)
    image_folder    <root>/<class>/<image>, or <root>/train/... plus <root>/test/... (or val/)
    ucf101          <root>/UCF-101/<Class>/*.avi plus <root>/ucfTrainTestlist/
    hmdb51          <root>/hmdb51_org/<class>/*.avi plus <root>/testTrainMulti_7030_splits/
    video_folder    <root>/<class>/<video>, or <root>/train/... plus <root>/test/... (or val/)
"""

from __future__ import annotations

from pathlib import Path

from pipeline.modalities import SOURCE_MODALITY  # noqa: F401  (re-exported: decode reads it from here)


def check_layout(source: str, root: str, fold: int = 1, download: bool = False) -> None:
    """Raise FileNotFoundError naming the path and what belongs there, before any decoding.

    Cheap (file-system checks only), so the Snakefile can run it when it builds the DAG.
    """
    from pipeline.datasets import cifar, folders, hmdb51, ucf101

    path = Path(root)
    if source in ("cifar10", "cifar100") and not download:
        cifar.require_layout(path, source)
    elif source in ("image_folder", "video_folder"):
        folders.require_root(path)
    elif source == "ucf101":
        ucf101.require_layout(path, fold)
    elif source == "hmdb51":
        hmdb51.split_files(path, fold)
