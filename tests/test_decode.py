"""Decode stage: every source in its official layout, clip positions, both decoders, bad input.

The fake datasets are tiny but written in the exact official formats (CIFAR pickles, UCF101
and HMDB51 split files, class folders). Video frames carry their own identity: red encodes
the frame number (16 + 8 t) and green the class (40 + 50 label), so a decoded clip says
which frames of which video it holds.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import DecodeConfig, from_dict
from pipeline.datasets import cifar, hmdb51, ucf101
from pipeline.datasets.resize import resize_frames
from pipeline.datasets.tasks import ClipSpec, write_video
from pipeline.datasets.video_io import DecordFrames, PyAVFrames, clip_starts, write_h264
from pipeline.decode import TooManyBadFiles, channel_stats, decode_files, run
from tests.conftest import REPO, decode_cfg

VIDEO_HW = (32, 40)  # H, W: non-square, to exercise the centre crop (decord misreads 48 px: a padding bug)


# ---- fake datasets ------------------------------------------------------------------------
def coded_frames(label: int, count: int, hw: tuple[int, int] = VIDEO_HW) -> np.ndarray:
    """uint8 (count, H, W, 3): red = 16 + 8 t, green = 40 + 50 label, blue = 128."""
    frames = np.empty((count, *hw, 3), np.uint8)
    frames[..., 0] = (16 + 8 * np.arange(count, dtype=np.uint8))[:, None, None]
    frames[..., 1], frames[..., 2] = 40 + 50 * label, 128
    return frames


def write_avi(path: Path, frames: np.ndarray, fps: int = 25, gop: int = 12) -> None:
    """MPEG-4 part 2 in AVI, as UCF101 and HMDB51 ship (xvid), at a high bit rate, a keyframe every `gop` frames."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = frames.shape[2], frames.shape[1], "yuv420p", 4_000_000
        stream.codec_context.gop_size = gop
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def write_mp4_gop(path: Path, frames: np.ndarray, gop: int, fps: int = 25) -> None:
    """H.264 with a keyframe every `gop` frames and B-frames (decode order != presentation order)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "4", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "2"}
        for i, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = i
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())


def write_video_file(path: Path, label: int, count: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = coded_frames(label, count)
    write_avi(path, frames) if path.suffix == ".avi" else write_h264(path, frames, fps=25, crf=4)
    return path


def decoded_frame_numbers(clips: np.ndarray) -> np.ndarray:
    """(N, T) frame numbers read back from the red channel of decoded clips (N, T, H, W, 3)."""
    return np.rint((clips[..., 0].mean(axis=(2, 3)) - 16) / 8).astype(int)


def decoded_labels(samples: np.ndarray) -> np.ndarray:
    """Labels read back from the green channel of decoded clips or images."""
    return np.rint((samples[..., 1].reshape(len(samples), -1).mean(1) - 40) / 50).astype(int)


def write_ucf101(root: Path, frames: int = 20) -> dict[str, list[str]]:
    """3 classes x 4 videos (groups 1-2 test, 8-9 train), mp4 and avi mixed, with official split files."""
    names = ["ApplyEyeMakeup", "Basketball", "YoYo"]
    videos = []
    for label, name in enumerate(names):
        for group, ext in ((1, "avi"), (2, "mp4"), (8, "mp4"), (9, "avi")):
            stem = f"v_{name}_g{group:02d}_c01"
            write_video_file(root / ucf101.VIDEO_DIR / name / f"{stem}.{ext}", label, frames)
            videos.append((stem, ext, label, group))
    split_dir = root / ucf101.SPLIT_DIR
    split_dir.mkdir(parents=True)
    (split_dir / "classInd.txt").write_text("".join(f"{i + 1} {n}\r\n" for i, n in enumerate(names)))  # official: CRLF
    train = [f"{names[lab]}/{s}.{e} {lab + 1}" for s, e, lab, g in videos if g > 7]
    test = [f"{names[lab]}/{s}.{e}" for s, e, lab, g in videos if g <= 7]
    (split_dir / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")
    (split_dir / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")
    return {"train": train, "test": test}


def write_hmdb51(root: Path) -> None:
    """2 classes x 4 videos; fold 1: ids 1,1,2,0 per class, fold 2: 2,1,1,1 (official file names)."""
    for label, name in enumerate(["brush_hair", "cartwheel"]):
        lines = {1: [], 2: []}
        for i, (f1, f2) in enumerate(((1, 2), (1, 1), (2, 1), (0, 1))):
            video = f"April_09_{name}_u_nm_np1_ba_goo_{i}.avi"
            write_video_file(root / hmdb51.VIDEO_DIR / name / video, label, 12)
            lines[1].append(f"{video} {f1} \n")
            lines[2].append(f"{video} {f2} \n")
        (root / hmdb51.SPLIT_DIR).mkdir(parents=True, exist_ok=True)
        for fold in (1, 2, 3):
            (root / hmdb51.SPLIT_DIR / f"{name}_test_split{fold}.txt").write_text("".join(lines[min(fold, 2)]))


def write_cifar(root: Path, source: str, per_file: int = 6) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The official python-pickle files with random images; returns the expected (x HWC, y) per split."""
    rng = np.random.default_rng(1)
    folder = root / cifar.FOLDERS[source]
    folder.mkdir(parents=True)
    n_classes, label_key = (10, "labels") if source == "cifar10" else (100, "fine_labels")
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if source == "cifar10" else ["train"]
    expected = {}
    for split, files in (("train", train_files), ("test", ["test_batch" if source == "cifar10" else "test"])):
        xs, ys = [], []
        for name in files:
            data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)  # rows: 1024 R, 1024 G, 1024 B
            labels = rng.integers(0, n_classes, per_file).tolist()
            entry = {"batch_label": name, label_key: labels, "data": data, "filenames": [f"{i}.png" for i in range(per_file)]}
            if source == "cifar100":
                entry["coarse_labels"] = [y // 5 for y in labels]
            (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.extend(labels)
        expected[split] = (np.concatenate(xs), np.asarray(ys))
    names = [f"class{i}" for i in range(n_classes)]
    meta = {"label_names": names, "num_cases_per_batch": per_file} if source == "cifar10" else \
        {"fine_label_names": names, "coarse_label_names": [f"super{i}" for i in range(20)]}
    (folder / ("batches.meta" if source == "cifar10" else "meta")).write_bytes(pickle.dumps(meta, protocol=2))
    return expected


def write_png(path: Path, label: int, mode: str, hw: tuple[int, int] = (24, 40)) -> Path:
    """A PNG whose green channel encodes the label, in PIL mode RGB, RGBA, L (grey) or P (palette)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((*hw, 3), np.uint8)
    rgb[..., 1] = 40 + 50 * label
    image = Image.fromarray(rgb)
    if mode == "L":
        image = Image.fromarray(np.full(hw, 40 + 50 * label, np.uint8))  # grey: all channels equal the code
    elif mode == "P":
        image = image.convert("P", palette=Image.ADAPTIVE)  # exact colours, not the web palette
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def cfg_for(**overrides) -> DecodeConfig:
    return from_dict(DecodeConfig, decode_cfg(**overrides))


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ucf") / "UCF101"
    write_ucf101(root)
    return root


@pytest.fixture(scope="module")
def ucf_decoded(ucf_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ucf_out")
    run(cfg_for(source="ucf101", root=str(ucf_root), size=16, frames=4, stride=2, clips_per_video=3), out, threads=2)
    return out


def test_every_schema_source_has_a_reader_and_a_modality():
    import yaml

    from pipeline.datasets import SOURCE_MODALITY
    from pipeline.decode import READERS
    from tests.conftest import SCHEMA

    schema = yaml.safe_load(SCHEMA.read_text())
    sources = schema["properties"]["decode"]["additionalProperties"]["properties"]["source"]["enum"]
    assert set(sources) == set(READERS) == set(SOURCE_MODALITY)


# ---- images -------------------------------------------------------------------------------
def test_digits_decode_is_stratified_rgb(digits_dir):
    meta = json.loads((digits_dir / "meta.json").read_text())
    x, y = np.load(digits_dir / "train_x.npy"), np.load(digits_dir / "train_y.npy")
    xt, yt = np.load(digits_dir / "test_x.npy"), np.load(digits_dir / "test_y.npy")
    assert x.dtype == np.uint8 and x.shape[1:] == (8, 8, 3) and len(x) + len(xt) == 1797
    assert np.array_equal(x[..., 0], x[..., 2])  # grey replicated to RGB
    share = np.bincount(yt) / (np.bincount(y) + np.bincount(yt))
    assert np.allclose(share, 0.3, atol=0.02)
    assert meta["num_classes"] == 10 and meta["modality"] == "image" and len(meta["mean"]) == 3


@pytest.mark.parametrize("source", ["cifar10", "cifar100"])
def test_cifar_pickles_decode_exactly(tmp_path, source):
    expected = write_cifar(tmp_path / "data", source)
    meta = run(cfg_for(source=source, root=str(tmp_path / "data"), size=32, verify_checksums=False), tmp_path / "out", 1)
    for split in ("train", "test"):
        x, y = np.load(tmp_path / "out" / f"{split}_x.npy"), np.load(tmp_path / "out" / f"{split}_y.npy")
        assert np.array_equal(x, expected[split][0]) and np.array_equal(y, expected[split][1])  # CHW rows -> HWC
    assert meta["num_classes"] == (10 if source == "cifar10" else 100) and meta["classes"][3] == "class3"
    assert meta["train"]["shape"] == [30 if source == "cifar10" else 6, 32, 32, 3]
    assert meta["versions"]["torchvision"] and meta["train"]["index"][0][0].startswith(cifar.FOLDERS[source])


def test_cifar_checksums_missing_files_and_resize(tmp_path):
    write_cifar(tmp_path / "data", "cifar10")
    with pytest.raises(ValueError, match="verify_checksums"):  # our fakes are not the official files
        run(cfg_for(source="cifar10", root=str(tmp_path / "data"), verify_checksums=True), tmp_path / "out", 1)
    meta = run(cfg_for(source="cifar10", root=str(tmp_path / "data"), size=16, verify_checksums=False), tmp_path / "out", 1)
    assert meta["train"]["shape"] == [30, 16, 16, 3]
    (tmp_path / "data" / cifar.FOLDERS["cifar10"] / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3.*cifar-10-batches-py"):
        run(cfg_for(source="cifar10", root=str(tmp_path / "data"), verify_checksums=False), tmp_path / "out", 1)


def test_image_folder_modes_labels_and_bad_images(tmp_path):
    root = tmp_path / "images"
    for split, count in (("train", 4), ("test", 2)):
        for label, name in enumerate(["cat", "dog"]):
            for i, mode in zip(range(count), ["RGB", "L", "RGBA", "P"][:count], strict=True):
                write_png(root / split / name / f"{i}.png", label, mode)
    (root / "train" / "dog" / "empty.png").write_bytes(b"")
    good = (root / "train" / "cat" / "0.png").read_bytes()
    (root / "train" / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    meta = run(cfg_for(source="image_folder", root=str(root), size=16, max_bad_fraction=0.25), tmp_path / "out", 2)
    x, y = np.load(tmp_path / "out" / "train_x.npy"), np.load(tmp_path / "out" / "train_y.npy")
    assert x.shape == (8, 16, 16, 3) and np.array_equal(decoded_labels(x), y) and list(np.bincount(y)) == [4, 4]
    assert meta["classes"] == ["cat", "dog"] and meta["train"]["decoders"] == {"pil": 8} and meta["test"]["shape"][0] == 4
    assert {Path(s["file"]).name for s in meta["train"]["skipped"]} == {"empty.png", "truncated.png"}
    assert all(s["reason"] for s in meta["train"]["skipped"]) and not list((tmp_path / "out").glob(".*partial*"))


def test_class_folder_tree_without_splits_is_split_stratified_and_reproducibly(tmp_path):
    root = tmp_path / "flat"
    for label in range(3):
        for i in range(10):
            write_png(root / f"c{label}" / f"{i}.png", label, "RGB", (8, 8))
    metas = [run(cfg_for(source="image_folder", root=str(root), size=8, test_fraction=0.2, split_seed=s), tmp_path / f"o{s}{k}", 1)
             for s, k in ((0, 0), (0, 1), (1, 0))]
    assert metas[0]["test"]["per_class"] == {0: 2, 1: 2, 2: 2}
    files = [[src for src, _ in m["test"]["index"]] for m in metas]
    assert files[0] == files[1] and files[0] != files[2]  # same seed, same files; another seed, others


# ---- videos -------------------------------------------------------------------------------
def test_clip_starts_are_uniform():
    assert clip_starts(100, 16, 1) == [42]
    assert clip_starts(100, 16, 3) == [0, 42, 84]
    assert clip_starts(10, 16, 2) == []


def test_ucf101_mp4_and_avi_labels_shapes_and_clip_positions(ucf_decoded, ucf_root):
    meta = json.loads((ucf_decoded / "meta.json").read_text())
    x, y = np.load(ucf_decoded / "train_x.npy", mmap_mode="r"), np.load(ucf_decoded / "train_y.npy")
    assert isinstance(x, np.memmap) and x.dtype == np.uint8 and x.shape == (18, 4, 16, 16, 3)  # 6 videos x 3 clips
    assert np.array_equal(decoded_labels(np.asarray(x)), y) and list(np.bincount(y)) == [6, 6, 6]
    starts = clip_starts(20, 7, 3)  # span (4-1)*2+1 = 7 of 20 frames: [0, 6, 13]
    assert [s for _, s in meta["train"]["index"]] == starts * 6
    expected = np.asarray([[s + 2 * t for t in range(4)] for s in starts] * 6)
    assert np.array_equal(decoded_frame_numbers(np.asarray(x)), expected)
    assert {Path(src).suffix for src, _ in meta["train"]["index"]} == {".mp4", ".avi"}
    assert meta["train"]["decoders"] == {"decord": 6} and meta["test"]["decoders"] == {"decord": 6}
    assert meta["classes"] == ["ApplyEyeMakeup", "Basketball", "YoYo"] and meta["skipped_total"] == 0
    assert meta["versions"]["decord"] and meta["versions"]["av"]


def test_decoded_split_loads_with_the_reader_of_later_stages(ucf_decoded):
    import torch

    from pipeline.data import load_split

    split = load_split(ucf_decoded, "test", torch.device("cpu"), budget_mb=0)  # streamed from the memory map
    batch = split.batch(torch.tensor([0, 5]))
    assert batch.shape == (2, 3, 4, 16, 16) and 0 <= batch.min() and batch.max() <= 1


def test_video_decode_of_the_embedded_moving_digits(clips_dir):
    meta = json.loads((clips_dir / "meta.json").read_text())
    x, y = np.load(clips_dir / "train_x.npy"), np.load(clips_dir / "train_y.npy")
    assert x.dtype == np.uint8 and x.shape == (60, 4, 16, 16, 3)
    assert meta["train"]["decoders"] == {"decord": 60} and meta["skipped_total"] == 0
    for (source, start), label in zip(meta["train"]["index"], y, strict=True):
        assert f"Digit{label}/" in source and start == clip_starts(12, 7, 1)[0]


def test_hmdb51_split_ids_and_folds(tmp_path):
    write_hmdb51(tmp_path / "hmdb")
    folds = {}
    for fold in (1, 2):
        folds[fold] = run(cfg_for(source="hmdb51", root=str(tmp_path / "hmdb"), size=16, frames=4, stride=1, fold=fold),
                          tmp_path / f"out{fold}", 1)
    names = {f: {s: {Path(src).name for src, _ in folds[f][s]["index"]} for s in ("train", "test")} for f in folds}
    assert names[1]["train"] == {f"April_09_{c}_u_nm_np1_ba_goo_{i}.avi" for c in ("brush_hair", "cartwheel") for i in (0, 1)}
    assert names[1]["test"] == {f"April_09_{c}_u_nm_np1_ba_goo_2.avi" for c in ("brush_hair", "cartwheel")}  # id 0: unused
    assert len(names[2]["train"]) == 6 and len(names[2]["test"]) == 2
    y = np.load(tmp_path / "out1" / "train_y.npy")
    assert folds[1]["classes"] == ["brush_hair", "cartwheel"]
    assert np.array_equal(decoded_labels(np.load(tmp_path / "out1" / "train_x.npy")), y)


def test_video_folder_with_train_test_folders_and_without(tmp_path):
    for split in ("train", "test"):
        for label, name in enumerate(["archery", "bowling"]):
            for i in range(3 if split == "train" else 1):
                write_video_file(tmp_path / "k" / split / name / f"{name}_{i}.mp4", label, 10)
    meta = run(cfg_for(source="video_folder", root=str(tmp_path / "k"), size=16, frames=3, stride=3), tmp_path / "o1", 1)
    assert meta["train"]["per_class"] == {0: 3, 1: 3}
    assert meta["test"]["shape"] == [2, 3, 16, 16, 3] and meta["classes"] == ["archery", "bowling"]
    flat = tmp_path / "k" / "train"  # class folders only: split here, one video per class held out
    meta = run(cfg_for(source="video_folder", root=str(flat), size=16, frames=3, stride=3, test_fraction=0.3), tmp_path / "o2", 1)
    assert meta["train"]["shape"][0] == 4 and meta["test"]["shape"][0] == 2


def read_all(source, indices: list[int]) -> np.ndarray:
    """Frames at `indices` through a reader's batch interface, as one int array (K, H, W, 3)."""
    batches = list(source.read(np.asarray(indices), batch=3))
    assert [n for numbers, _ in batches for n in numbers] == indices
    return np.concatenate([np.asarray(frames) for _, frames in batches]).astype(int)


def test_decord_and_pyav_give_the_same_frames_across_gops(tmp_path):
    idx = [0, 1, 5, 9, 10, 20, 27]  # skips within a GOP and jumps across keyframes (every 4 frames)
    for ext in ("mp4", "avi"):
        path = tmp_path / f"long.{ext}"
        write_avi(path, coded_frames(1, 28), gop=4) if ext == "avi" else write_mp4_gop(path, coded_frames(1, 28), gop=4)
        a, b = DecordFrames(path), PyAVFrames(path)
        assert a.count == b.count == 28
        fa, fb = read_all(a, idx), read_all(b, idx)
        assert fa.shape == fb.shape == (7, *VIDEO_HW, 3)
        assert np.abs(fa - fb).mean() < 2.0  # same codec output up to colour-conversion rounding
        assert np.array_equal(decoded_frame_numbers(fa[None])[0], idx) and np.array_equal(decoded_frame_numbers(fb[None])[0], idx)
    assert DecordFrames(tmp_path / "long.mp4").reader.get_key_indices() == [0, 4, 8, 12, 16, 20, 24]  # real seeks


def test_resize_policies_and_uint8_kernel_against_float_reference():
    import torch

    frames = np.zeros((2, 20, 40, 3), np.uint8)
    frames[:, :, 10:30] = 200  # a bright centre band, the outer quarters dark
    crop = resize_frames(frames, 10, "short_side_crop")  # centre 20x20 -> 10x10: all band
    fixed = resize_frames(frames, 10, "fixed")  # 20x40 -> 10x10: band in the middle half
    assert crop.shape == fixed.shape == (2, 10, 10, 3) and crop.dtype == np.uint8
    assert crop.min() > 150 and fixed[:, :, 0].max() < 60 and fixed[:, :, 4:6].min() > 150
    rng = np.random.default_rng(0)
    # Shrinking both sides or the rows while widening (rows first, in two uint8 passes), one side only, and enlarging.
    for (h, w), size in (((30, 50), 12), ((240, 320), 112), ((30, 8), 12), ((30, 12), 12), ((12, 30), 12), ((9, 14), 20)):
        noise = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
        ref = torch.nn.functional.interpolate(torch.from_numpy(noise).permute(0, 3, 1, 2).float(), size=(size, size),
                                              mode="bilinear", antialias=True).round().clamp(0, 255).permute(0, 2, 3, 1).numpy()
        assert np.abs(resize_frames(noise, size, "fixed").astype(int) - ref).max() <= 1, (h, w, size)


def test_worker_set_up_one_thread_frozen_imports_and_timed_tasks(tmp_path, ucf_root):
    # In a fresh interpreter, as the pool's forkserver would fork it.
    code = ("import gc, torch; from pipeline.datasets.tasks import worker_init; worker_init();"
            " print(torch.get_num_threads(), gc.get_freeze_count() > 1000)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "True"]
    items = [(ucf_root / ucf101.VIDEO_DIR / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi", 0)]
    start = time.perf_counter()
    decoded = decode_files(items, ClipSpec(4, 1, 2, 16, "short_side_crop"), tmp_path / ".x.partial.npy", threads=1, timeout_s=60)
    assert 0 < decoded.worker_seconds < time.perf_counter() - start and decoded.cpu_seconds > 0


def test_pyav_takes_over_where_decord_fails(tmp_path):
    # decord 0.6 cannot copy frames narrower than 32 px; PyAV reads them and is recorded.
    root = tmp_path / "ucf"
    frames = np.zeros((10, 16, 16, 3), np.uint8)
    frames[:, 4:12, 4:12] = 255
    for label in range(2):
        (root / ucf101.VIDEO_DIR / f"C{label}").mkdir(parents=True)
        write_h264(root / ucf101.VIDEO_DIR / f"C{label}" / "v_C_g01_c01.mp4", frames)
        write_h264(root / ucf101.VIDEO_DIR / f"C{label}" / "v_C_g08_c01.mp4", frames)
    ucf101.write_layout(root, [("v_C_g01_c01", 0, 1), ("v_C_g08_c01", 0, 8), ("v_C_g01_c01", 1, 1), ("v_C_g08_c01", 1, 8)],
                        ["C0", "C1"], "mp4")
    meta = run(cfg_for(source="ucf101", root=str(root), size=8, frames=3, stride=2), tmp_path / "out", 1)
    assert meta["train"]["decoders"] == {"pyav": 2} and meta["skipped_total"] == 0
    assert len(meta["train"]["fallbacks"]) == 2 and meta["train"]["fallbacks"][0]["reason"].startswith("decord:")
    x = np.load(tmp_path / "out" / "train_x.npy")
    assert x.shape == (2, 3, 8, 8, 3) and x[:, :, 3:5, 3:5].min() > 200 and x[:, :, 0, 0].max() < 40


# ---- bad input ----------------------------------------------------------------------------
def break_files(root: Path, split: str) -> dict[str, Path]:
    """Make one train video zero-byte, one truncated, one too short for a clip."""
    train = ucf101.read_split(root, split, 1)
    broken = {"empty": train[0][0], "truncated": train[1][0], "short": train[2][0]}
    broken["empty"].write_bytes(b"")
    broken["truncated"].write_bytes(broken["truncated"].read_bytes()[:300])
    write_video_file(broken["short"], train[2][1], 5)
    return broken


def test_zero_byte_truncated_and_short_files_are_skipped_and_listed(tmp_path, ucf_root):
    root = shutil.copytree(ucf_root, tmp_path / "ucf")
    broken = break_files(root, "train")
    meta = run(cfg_for(source="ucf101", root=str(root), size=16, frames=4, clips_per_video=2, max_bad_fraction=0.5),
               tmp_path / "out", threads=2)
    reasons = {s["file"]: s["reason"] for s in meta["train"]["skipped"]}
    assert set(reasons) == {str(p) for p in broken.values()} and meta["skipped_total"] == 3
    assert "a clip spans 7" in reasons[str(broken["short"])] and "pyav" in reasons[str(broken["empty"])]
    x, y = np.load(tmp_path / "out" / "train_x.npy"), np.load(tmp_path / "out" / "train_y.npy")
    assert x.shape[0] == meta["train"]["shape"][0] == 6  # 3 good videos x 2 clips: the gaps are compacted away
    assert np.array_equal(decoded_labels(x), y)  # every kept row is its own video's clip
    assert not {src for src, _ in meta["train"]["index"]} & set(reasons)


def test_too_many_bad_files_fails_naming_them_and_leaves_nothing(tmp_path, ucf_root):
    root = shutil.copytree(ucf_root, tmp_path / "ucf")
    bad = [p for p, _ in ucf101.read_split(root, "test", 1)[:3]]
    for p in bad:
        p.write_bytes(b"not a video")
    with pytest.raises(TooManyBadFiles) as err:
        run(cfg_for(source="ucf101", root=str(root), size=16, frames=4, max_bad_fraction=0.2), tmp_path / "out", threads=2)
    assert all(str(p) in str(err.value) for p in bad) and "3 of 12 files" in str(err.value)
    assert not (tmp_path / "out" / "meta.json").exists() and not list((tmp_path / "out").glob("*.npy"))
    assert not list((tmp_path / "out").glob(".*"))


def test_missing_roots_and_split_files_are_named(tmp_path, ucf_root):
    with pytest.raises(FileNotFoundError, match="nowhere.*UCF-101"):
        run(cfg_for(source="ucf101", root=str(tmp_path / "nowhere")), tmp_path / "out", threads=1)
    root = shutil.copytree(ucf_root, tmp_path / "ucf")
    (root / "ucfTrainTestlist" / "testlist01.txt").unlink()
    with pytest.raises(FileNotFoundError, match="testlist01.txt"):
        run(cfg_for(source="ucf101", root=str(root)), tmp_path / "out", threads=1)
    with pytest.raises(FileNotFoundError, match="trainlist02.txt"):
        run(cfg_for(source="ucf101", root=str(ucf_root), fold=2), tmp_path / "out", threads=1)
    with pytest.raises(FileNotFoundError, match=r"testTrainMulti_7030_splits/<class>_test_split1\.txt"):
        run(cfg_for(source="hmdb51", root=str(tmp_path)), tmp_path / "out", threads=1)
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        run(cfg_for(source="cifar100", root=str(tmp_path)), tmp_path / "out", threads=1)
    with pytest.raises(FileNotFoundError, match="nowhere.*<class>"):
        run(cfg_for(source="image_folder", root=str(tmp_path / "nowhere")), tmp_path / "out", threads=1)


def hang_or_crash(path: str, out: str, slot: int, spec: ClipSpec) -> dict:
    """A decoder that hangs forever on *_g08_* files and dies in native code on *_g09_* files."""
    if "_g08_" in path:
        time.sleep(3600)
    if "_g09_" in path and "Basketball" in path:
        os.kill(os.getpid(), signal.SIGKILL)  # as a segfault or the OOM killer would: no exception, no reply
    return write_video(path, out, slot, spec)


def test_hung_decoder_is_killed_and_a_crashed_one_replaced(tmp_path, ucf_root):
    items = ucf101.read_split(ucf_root, "train", 1)  # 6 videos: 3 hang (g08), 1 crashes (Basketball g09)
    spec = ClipSpec(frames=4, stride=2, clips=1, size=16, resize="short_side_crop")
    start = time.monotonic()
    decoded = decode_files(items, spec, tmp_path / ".train_x.partial.npy", threads=2, timeout_s=1.5, task=hang_or_crash)
    elapsed = time.monotonic() - start
    reasons = {Path(s["file"]).name: s["reason"] for s in decoded.skipped}
    assert elapsed < 15  # 3 hangs x 1.5 s on 2 workers, not an hour each
    assert {n for n, r in reasons.items() if "timed out after 1.5 s" in r} == {p.name for p, _ in items if "_g08_" in p.name}
    assert "died" in reasons["v_Basketball_g09_c01.avi"]
    assert len(decoded.x) == 2 and np.array_equal(decoded_labels(np.asarray(decoded.x)), decoded.y)
    for reason in reasons.values():
        if "pid" in reason:
            pid = int(reason.split("pid ")[1].split()[0])
            status = Path(f"/proc/{pid}/status")
            assert not status.exists() or "zombie" in status.read_text()  # killed, not left running


def test_channel_stats_match_numpy_and_bound_the_sample():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 4, 6, 6, 3), dtype=np.uint8)
    mean, std = channel_stats(x)
    ref = x.reshape(-1, 3) / 255.0
    assert np.allclose(mean, ref.mean(0), atol=1e-6) and np.allclose(std, ref.std(0), atol=1e-6)
    mean_sub, _ = channel_stats(x, max_samples=10)  # every 5th sample
    assert np.allclose(mean_sub, (x[::5].reshape(-1, 3) / 255.0).mean(0), atol=1e-6)


# ---- the paper-scale config -----------------------------------------------------------------
@pytest.mark.workflow
def test_paper_config_dry_runs_against_a_fake_dataset_tree(tmp_path):
    shutil.copy(REPO / "Snakefile", tmp_path)
    for name in ("workflow", "pipeline", "config"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    write_cifar(tmp_path / "fake" / "cifar10", "cifar10", per_file=1)
    write_ucf101(tmp_path / "fake" / "UCF101", frames=8)

    def dry_run(ucf_root: Path) -> subprocess.CompletedProcess:
        roots = f"decode={{cifar10: {{root: {tmp_path / 'fake' / 'cifar10'}}}, ucf101: {{root: {ucf_root}}}}}"
        cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", "config/cifar10_ucf101.yaml",
               "--replace-workflow-config", "--config", roots]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    proc = dry_run(tmp_path / "fake" / "UCF101")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = {line.split()[0]: int(line.split()[1]) for line in out.split("Job stats:")[1].split("total")[0].splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert jobs["decode"] == 2 and jobs["pretrain"] == 2 * 13 * 3 and jobs["mine"] == 2 * 3 and jobs["match"] == 2 * 3
    proc = dry_run(tmp_path / "fake" / "missing")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "decode.ucf101.root" in out and str(tmp_path / "fake" / "missing") in out


# ---- safe loading -------------------------------------------------------------------------
class _Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official files: bytes as BINSTRING, numpy.core names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "").replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__name__}\n".encode())
        self.memoize(obj)

    dispatch[type] = save_global


def py2_pickle(obj) -> bytes:
    """A protocol-2 pickle in the byte layout of the official (Python 2) CIFAR files."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


class _Exploit:
    """Unpickling this calls os.system, which writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("verify_checksums", [True, False])
def test_malicious_cifar_pickle_does_not_run(tmp_path, verify_checksums):
    write_cifar(tmp_path / "data", "cifar10")
    marker = tmp_path / "pwned"
    entry = {"batch_label": "x", "labels": [0], "data": np.zeros((1, 3072), np.uint8), "hook": _Exploit(marker)}
    (tmp_path / "data" / cifar.FOLDERS["cifar10"] / "data_batch_1").write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(ValueError, match="data_batch_1|MD5") as error:
        cifar.load(tmp_path / "data", "cifar10", download=False, verify_checksums=verify_checksums)
    assert not marker.exists()
    if not verify_checksums:
        assert "posix.system" in str(error.value) or "os.system" in str(error.value)
    with pytest.raises(ValueError, match="os.system|posix.system"):  # the unpickler itself, checksums aside
        cifar.safe_load(tmp_path / "data" / cifar.FOLDERS["cifar10"] / "data_batch_1")
    assert not marker.exists()


def test_python2_format_cifar_pickle_loads(tmp_path):
    """The official files' layout (bytes as BINSTRING, numpy.core._reconstruct) loads to the same arrays."""
    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    raw = py2_pickle({b"batch_label": b"x", b"labels": [1, 2, 3, 4], b"data": data, b"filenames": [b"a.png"] * 4})
    assert b"numpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw
    (tmp_path / "batch").write_bytes(raw)
    entry = cifar.safe_load(tmp_path / "batch")
    assert np.array_equal(entry["data"], data) and entry["labels"] == [1, 2, 3, 4] and entry["batch_label"] == "x"


def test_checksum_error_says_what_turning_it_off_risks(tmp_path):
    write_cifar(tmp_path / "data", "cifar10")
    with pytest.raises(ValueError, match="verify_checksums: false") as error:
        cifar.load(tmp_path / "data", "cifar10", download=False, verify_checksums=True)
    assert "nothing then checks" in str(error.value)


def test_unset_cifar_root_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="decode.<dataset>.root") as error:
        cifar.require_layout(Path(""), "cifar10")
    assert "unpacked into ." not in str(error.value)
