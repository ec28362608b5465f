"""pipeline.io: atomic writes follow the umask; checksums catch truncated, flipped and swapped files."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from pipeline import io


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_output_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        io.write_json(tmp_path / "a.json", {"x": 1})
        io.write_npy(tmp_path / "a.npy", np.zeros(3))
        with open(tmp_path / "plain", "w") as f:  # what an ordinary open() gives under this umask
            f.write("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("a.json", "a.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    import hashlib

    data = np.random.default_rng(0).integers(0, 256, 3 * 2**20 + 17, dtype=np.uint8).tobytes()
    (tmp_path / "f").write_bytes(data)
    assert io.sha256_file(tmp_path / "f", chunk_mb=1) == hashlib.sha256(data).hexdigest()


@pytest.fixture()
def decoded_copy(tmp_path, digits_dir):
    """A private copy of the decoded digits (the session fixture must stay intact)."""
    import shutil

    return shutil.copytree(digits_dir, tmp_path / "digits")


@pytest.mark.parametrize("fault", ["truncated", "flipped", "swapped"])
def test_corrupt_decode_array_is_detected_naming_file_rule_and_command(decoded_copy, fault):
    import shutil

    import torch

    from pipeline.data import load_split

    target = decoded_copy / "train_x.npy"
    load_split(decoded_copy, "train", torch.device("cpu"))  # intact: loads
    if fault == "truncated":
        target.write_bytes(target.read_bytes()[:-1000])
    elif fault == "flipped":
        raw = bytearray(target.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        target.write_bytes(bytes(raw))
    else:
        shutil.copy(decoded_copy / "test_x.npy", target)
    with pytest.raises(io.IntegrityError) as error:
        load_split(decoded_copy, "train", torch.device("cpu"))
    message = str(error.value)
    assert str(target) in message and "rule 'decode'" in message and f"--forcerun {target}" in message


def test_flipped_or_swapped_encoder_is_detected(tmp_path, digits_dir):
    """The issue's same-size byte flip in encoder.pt loaded silently (weights 2.4e24)."""
    import json
    import shutil

    import torch

    from pipeline import pretrain
    from pipeline.config import PretrainConfig, from_dict
    from pipeline.models.classifier import load_encoder
    from tests.conftest import pretrain_cfg

    cfg = pretrain_cfg({"loss": "nt_xent"}, {"epochs": 1})
    out = tmp_path / "seed0"
    pretrain.run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, digits_dir, None, out / "encoder.pt", out / "metrics.json")
    load_encoder(out / "encoder.pt", torch.device("cpu"))  # intact: loads
    raw = bytearray((out / "encoder.pt").read_bytes())
    raw[len(raw) // 2] ^= 0x40
    (out / "encoder.pt").write_bytes(bytes(raw))
    with pytest.raises(io.IntegrityError, match=r"encoder\.pt.*rule 'pretrain'.*forcerun"):
        load_encoder(out / "encoder.pt", torch.device("cpu"))
    other = tmp_path / "seed1"
    pretrain.run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 1, digits_dir, None, other / "encoder.pt", other / "metrics.json")
    shutil.copy(other / "encoder.pt", out / "encoder.pt")  # a whole, valid file, but another run's
    with pytest.raises(io.IntegrityError, match="pretrain"):
        load_encoder(out / "encoder.pt", torch.device("cpu"))


def test_flipped_mined_false_negatives_are_detected_with_the_file_named(tmp_path):
    """pretrain reads mine's false_negatives.npz only if it is the file mine recorded."""
    import numpy as np
    import pytest
    import torch

    from pipeline.io import IntegrityError, sha256_file, write_json
    from pipeline.pretrain.context import MinedFalseNegatives

    path = tmp_path / "false_negatives.npz"
    np.savez(path, labels=np.arange(10) % 3)
    write_json(tmp_path / "quality.json", {"false_negatives_sha256": sha256_file(path)})
    assert MinedFalseNegatives(path, torch.device("cpu")).labels.tolist() == (np.arange(10) % 3).tolist()
    np.savez(path, labels=np.arange(10) % 2)  # swapped for other labels
    with pytest.raises(IntegrityError, match="false_negatives.npz.*'mine'"):
        MinedFalseNegatives(path, torch.device("cpu"))


def test_a_truncated_json_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "robustness.json"
    io.write_json(path, {"clean_accuracy": 0.9, "attacks": {"pgd": {"8.0": {"accuracy": 0.5}}}})
    assert io.read_json(path)["clean_accuracy"] == 0.9
    path.write_text(path.read_text()[:20])
    with pytest.raises(io.IntegrityError) as error:
        io.read_json(path)
    assert str(path) in str(error.value) and "not valid JSON" in str(error.value) and "--forcerun" in str(error.value)


def test_a_sealed_result_reads_back_and_an_edit_is_caught(tmp_path):
    path = tmp_path / "robustness.json"
    data = {"accuracy": np.float32(0.75), "per_eps": {8: 0.5, 16: 0.25}, "nan": float("nan")}  # numpy scalar, int keys
    io.write_json(path, io.sealed(data))
    back = io.read_sealed(path, "evaluate")
    assert back["per_eps"] == {"8": 0.5, "16": 0.25} and back[io.SEAL]
    path.write_text(path.read_text().replace("0.25", "0.99"))
    with pytest.raises(io.IntegrityError, match="rule 'evaluate'.*--forcerun"):
        io.read_sealed(path, "evaluate")
    io.write_json(path, {"accuracy": 0.5})  # no seal (written before seals): read as it is
    assert io.read_sealed(path, "evaluate") == {"accuracy": 0.5}


def test_hostile_or_truncated_arrays_and_checkpoints_are_refused_naming_the_file(tmp_path):
    import pickle

    import torch

    objects = tmp_path / "train_x.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # would unpickle on load
    with pytest.raises(io.IntegrityError, match=r"train_x.npy: not a plain numeric .npy array.*--forcerun"):
        io.read_npy(objects)
    cut = tmp_path / "test_x.npy"
    np.save(cut, np.arange(100))
    cut.write_bytes(cut.read_bytes()[:60])
    with pytest.raises(io.IntegrityError, match="test_x.npy"):
        io.read_npy(cut)
    with pytest.raises(FileNotFoundError):
        io.read_npy(tmp_path / "missing.npy")

    class Payload:  # any object other than tensors and plain containers
        def __reduce__(self):
            return (print, ("ran",))

    hostile = tmp_path / "encoder.pt"
    with open(hostile, "wb") as f:
        torch.save({"x": Payload()}, f, pickle_module=pickle)
    with pytest.raises(io.IntegrityError, match=r"encoder.pt: refused or unreadable checkpoint"):
        io.load_torch(hostile)
    io.save_torch(hostile, {"w": torch.ones(2)})
    hostile.write_bytes(hostile.read_bytes()[:50])
    with pytest.raises(io.IntegrityError, match="encoder.pt"):
        io.load_torch(hostile)
