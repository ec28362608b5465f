"""Decode stage: shapes, labels, clip positions, both decoders, bad files and bad roots."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.config import DecodeConfig, from_dict
from pipeline.datasets import ucf101
from pipeline.datasets.video_io import clip_starts, read_all_frames_pyav, read_frames_decord
from pipeline.decode import TooManyBadFiles, run
from tests.conftest import decode_cfg


def test_digits_decode_is_stratified_rgb(digits_dir):
    meta = json.loads((digits_dir / "meta.json").read_text())
    x, y = np.load(digits_dir / "train_x.npy"), np.load(digits_dir / "train_y.npy")
    xt, yt = np.load(digits_dir / "test_x.npy"), np.load(digits_dir / "test_y.npy")
    assert x.dtype == np.uint8 and x.shape[1:] == (8, 8, 3) and len(x) + len(xt) == 1797
    assert np.array_equal(x[..., 0], x[..., 2])  # grey replicated to RGB
    share = np.bincount(yt) / (np.bincount(y) + np.bincount(yt))
    assert np.allclose(share, 0.3, atol=0.02)
    assert meta["num_classes"] == 10 and meta["modality"] == "image" and len(meta["mean"]) == 3


def test_clip_starts_are_uniform():
    assert clip_starts(100, 16, 1) == [42]
    assert clip_starts(100, 16, 3) == [0, 42, 84]
    assert clip_starts(10, 16, 2) == []


def test_video_decode_shapes_labels_and_positions(clips_dir, moving_digits_root):
    meta = json.loads((clips_dir / "meta.json").read_text())
    x, y = np.load(clips_dir / "train_x.npy"), np.load(clips_dir / "train_y.npy")
    assert x.dtype == np.uint8 and x.shape == (60, 4, 16, 16, 3)
    assert meta["train"]["decoders"] == {"decord": 60} and meta["skipped_total"] == 0
    for (source, start), label in zip(meta["train"]["index"], y):
        assert f"Digit{label}/" in source
        assert start == clip_starts(12, 7, 1)[0]  # span (4-1)*2+1 = 7 of 12 frames, centred
    assert meta["modality"] == "video" and meta["versions"]["decord"]


def test_decord_and_pyav_give_the_same_frames(moving_digits_root):
    path = ucf101.read_split(moving_digits_root, "train", 1)[0][0]
    idx = np.array([0, 3, 7, 11])
    a = read_frames_decord(path, idx).astype(int)
    b = read_all_frames_pyav(path)[idx].astype(int)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 2.0  # same codec output up to colour-conversion rounding


def test_resize_short_side_then_centre_crop():
    from pipeline.datasets.video_io import resize_short_side_crop

    frames = np.zeros((2, 20, 40, 3), np.uint8)
    frames[:, :, 10:30] = 200  # a bright centre band, the outer quarters dark
    out = resize_short_side_crop(frames, 10)  # 20x40 -> 10x20 -> centre crop 10x10
    assert out.shape == (2, 10, 10, 3) and out.dtype == np.uint8
    assert out[:, :, 1:-1].min() > 150  # the crop keeps exactly the bright band


def test_pyav_takes_over_where_decord_fails(tmp_path):
    # decord 0.6 cannot copy frames narrower than 32 px; PyAV reads them and is recorded.
    from pipeline.datasets.video_io import write_h264

    root = tmp_path / "ucf"
    frames = np.zeros((10, 16, 16, 3), np.uint8)
    frames[:, 4:12, 4:12] = 255
    for label in range(2):
        (root / ucf101.VIDEO_DIR / f"C{label}").mkdir(parents=True)
        write_h264(root / ucf101.VIDEO_DIR / f"C{label}" / "v_C_g01_c01.mp4", frames)
        write_h264(root / ucf101.VIDEO_DIR / f"C{label}" / "v_C_g08_c01.mp4", frames)
    ucf101.write_layout(root, [("v_C_g01_c01", 0, 1), ("v_C_g08_c01", 0, 8), ("v_C_g01_c01", 1, 1), ("v_C_g08_c01", 1, 8)],
                        ["C0", "C1"], "mp4")
    meta = run(from_dict(DecodeConfig, decode_cfg(source="ucf101", root=str(root), size=8, frames=3, stride=2)), tmp_path / "out", 1)
    assert meta["train"]["decoders"] == {"pyav": 2} and meta["skipped_total"] == 0
    x = np.load(tmp_path / "out" / "train_x.npy")
    assert x.shape == (2, 3, 8, 8, 3) and x[:, :, 3:5, 3:5].min() > 200 and x[:, :, 0, 0].max() < 40


def _copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_zero_byte_and_truncated_files_are_skipped_and_listed(tmp_path, moving_digits_root):
    root = _copy_tree(moving_digits_root, tmp_path / "ucf")
    train = ucf101.read_split(root, "train", 1)
    empty, truncated = train[0][0], train[1][0]
    empty.write_bytes(b"")
    truncated.write_bytes(truncated.read_bytes()[:200])
    cfg = from_dict(DecodeConfig, decode_cfg(source="ucf101", root=str(root), size=16, frames=4, max_bad_fraction=0.5))
    meta = run(cfg, tmp_path / "out", threads=2)
    skipped = {s["file"] for s in meta["train"]["skipped"]}
    assert skipped == {str(empty), str(truncated)} and meta["skipped_total"] == 2
    assert meta["train"]["shape"][0] == 58
    assert all(s["reason"] for s in meta["train"]["skipped"])


def test_too_many_bad_files_fails_naming_them(tmp_path, moving_digits_root):
    root = _copy_tree(moving_digits_root, tmp_path / "ucf")
    bad = [p for p, _ in ucf101.read_split(root, "test", 1)[:10]]
    for p in bad:
        p.write_bytes(b"not a video")
    cfg = from_dict(DecodeConfig, decode_cfg(source="ucf101", root=str(root), size=16, frames=4, max_bad_fraction=0.05))
    with pytest.raises(TooManyBadFiles) as err:
        run(cfg, tmp_path / "out", threads=2)
    assert str(bad[0]) in str(err.value) and not (tmp_path / "out" / "meta.json").exists()


def test_missing_root_and_split_file_are_named(tmp_path, moving_digits_root):
    cfg = from_dict(DecodeConfig, decode_cfg(source="ucf101", root=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run(cfg, tmp_path / "out", threads=1)
    root = _copy_tree(moving_digits_root, tmp_path / "ucf")
    (root / "ucfTrainTestlist" / "testlist01.txt").unlink()
    cfg = from_dict(DecodeConfig, decode_cfg(source="ucf101", root=str(root)))
    with pytest.raises(FileNotFoundError, match="testlist01.txt"):
        run(cfg, tmp_path / "out", threads=1)
