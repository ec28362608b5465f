"""Pretrain stage: every method trains on images and clips, resumes exactly, guards against NaN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.config import PretrainConfig, from_dict
from pipeline.io import load_torch
from pipeline.losses import same_label_mask
from pipeline.pretrain import MinedFalseNegatives, NonFiniteLoss, run
from tests.conftest import pretrain_cfg

METHODS = {
    "supervised": {"loss": "ce"},
    "supcon": {"loss": "supcon"},
    "simclr": {"loss": "nt_xent"},
    "focal": {"loss": "focal_infonce"},
    "oracle_elim": {"loss": "nt_xent", "false_negatives": "oracle", "fn_mode": "eliminate"},
    "mined_attract": {"loss": "nt_xent", "false_negatives": "mined", "fn_mode": "attract"},
}


def pseudo_labels_file(tmp_path, data_dir) -> str:
    labels = np.load(data_dir / "train_y.npy") % 3  # deliberately wrong "mined" labels
    path = tmp_path / "mined.npz"
    np.savez(path, labels=labels)
    return path


def train(tmp_path, data_dir, method, model=None, **kw):
    cfg = pretrain_cfg(method, model)
    mined = pseudo_labels_file(tmp_path, data_dir) if method.get("false_negatives") == "mined" else None
    out = tmp_path / "encoder.pt"
    metrics = run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, data_dir, mined, out, tmp_path / "metrics.json", **kw)
    return metrics, out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_on_images(tmp_path, digits_dir, name):
    metrics, out = train(tmp_path, digits_dir, METHODS[name], {"epochs": 3})
    losses = [h["loss"] for h in metrics["history"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert metrics["knn_acc"] > 0.3  # well above the 0.1 of chance after 3 tiny epochs
    state = load_torch(out)
    assert state["model_args"]["backbone"] == "resnet_small" and not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("name", ["supervised", "simclr", "mined_attract"])
def test_methods_train_on_clips(tmp_path, clips_dir, name):
    model = {"backbone": "r3d_small", "width": 4, "batch_size": 10, "epochs": 2, "augment": {"temporal_crop": 3}}
    metrics, _ = train(tmp_path, clips_dir, METHODS[name], model)
    assert all(np.isfinite(h["loss"]) for h in metrics["history"]) and 0 <= metrics["knn_acc"] <= 1


def test_resumed_run_ends_with_the_same_weights(tmp_path, digits_dir):
    method, model = METHODS["oracle_elim"], {"epochs": 3}
    full, full_out = train(tmp_path / "full", digits_dir, method, model)
    (tmp_path / "cut").mkdir()
    stopped = train(tmp_path / "cut", digits_dir, method, model, stop_after=1)[0]
    assert stopped == {"stopped_after": 1} and (tmp_path / "cut" / "checkpoint.pt").exists()
    resumed, resumed_out = train(tmp_path / "cut", digits_dir, method, model)
    a, b = load_torch(full_out)["encoder"], load_torch(resumed_out)["encoder"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]], abs=1e-5)


def test_checkpoint_from_other_settings_is_not_resumed(tmp_path, digits_dir):
    train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 2}, stop_after=1)
    metrics, _ = train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 2, "lr": 0.2})
    assert len(metrics["history"]) == 2 and metrics["history"][0]["epoch"] == 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, digits_dir):
    train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 3}, stop_after=1)
    before = load_torch(tmp_path / "checkpoint.pt")["epoch"]
    with pytest.raises(NonFiniteLoss, match="epoch"):
        train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 3, "lr": 1e30})
    assert before == 1 and not (tmp_path / "encoder.pt").exists()


def test_mined_file_masks_exactly_its_pairs(tmp_path, digits_dir):
    path = pseudo_labels_file(tmp_path, digits_dir)
    mined = MinedFalseNegatives(path, torch.device("cpu"))
    idx = torch.tensor([5, 17, 2, 40, 41])
    labels = torch.from_numpy(np.load(path)["labels"])
    assert torch.equal(mined.mask(idx), same_label_mask(labels[idx]))
    nb = tmp_path / "nb.npz"
    np.savez(nb, neighbours=np.array([[1, -1], [0, 2], [-1, -1]]))
    m = MinedFalseNegatives(nb, torch.device("cpu")).mask(torch.tensor([0, 1, 2]))
    assert m[0, 1] and m[1, 2] and m[2, 1] and not m[0, 2]
