"""Reading decoded splits: the arrays are checked where they are read, batches and embeddings are exact."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pipeline.data import batch_indices, load_split
from pipeline.io import IntegrityError, sha256_file


def tampered(tmp_path, digits_dir, name: str, array: np.ndarray):
    """A copy of the decoded digits with one array replaced and its checksum recomputed (a buggy producer or hand edit)."""
    out = tmp_path / "digits"
    shutil.copytree(digits_dir, out)
    np.save(out / name, array)
    meta = json.loads((out / "meta.json").read_text())
    meta["sha256"][name] = sha256_file(out / name)
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def test_a_clean_split_loads_with_its_labels(digits_dir):
    split = load_split(digits_dir, "test", torch.device("cpu"))
    x = np.load(digits_dir / "test_x.npy")
    assert len(split) == len(x) and torch.equal(split.y, torch.from_numpy(np.load(digits_dir / "test_y.npy")))


@pytest.mark.parametrize("name,make,problem", [
    ("test_x.npy", lambda x, y: np.where(np.arange(x.size).reshape(x.shape) == 0, np.nan, x.astype(np.float32)), "dtype float32"),
    ("test_x.npy", lambda x, y: x.astype(np.float32) * 300, "dtype float32"),
    ("test_x.npy", lambda x, y: x[..., 0], "shape"),
    ("test_y.npy", lambda x, y: np.where(np.arange(len(y)) == 3, 99, y), "labels span 0..99, outside 0..9"),
    ("test_y.npy", lambda x, y: y[:-1], "one per sample"),
    ("test_y.npy", lambda x, y: y.astype(np.float64), "integer labels"),
])
def test_a_bad_array_with_a_valid_checksum_names_the_file_and_the_fix(tmp_path, digits_dir, name, make, problem):
    x, y = np.load(digits_dir / "test_x.npy"), np.load(digits_dir / "test_y.npy")
    out = tampered(tmp_path, digits_dir, name, make(x, y))
    with pytest.raises(IntegrityError) as error:
        load_split(out, "test", torch.device("cpu"))
    message = str(error.value)
    assert str(out / name) in message and problem in message and "--forcerun" in message


def test_batch_indices_cover_every_sample_once_and_drop_the_tail_only_when_asked():
    gen = torch.Generator().manual_seed(0)
    batches = list(batch_indices(10, 4, shuffle=True, drop_last=False, generator=gen))
    assert [len(b) for b in batches] == [4, 4, 2] and sorted(torch.cat(batches).tolist()) == list(range(10))
    assert [len(b) for b in batch_indices(10, 4, shuffle=False, drop_last=True)] == [4, 4]
    assert torch.cat(list(batch_indices(5, 2, shuffle=False, drop_last=False))).tolist() == [0, 1, 2, 3, 4]
