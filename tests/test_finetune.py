"""SLF fine-tuning keeps the encoder bit-identical and learns a useful linear head."""

from __future__ import annotations

import json

import torch

from pipeline.config import FinetuneConfig, PretrainConfig, from_dict
from pipeline.finetune import run, train_linear_head, weights_digest
from pipeline.io import load_torch
from tests.conftest import pretrain_cfg, schema_defaults


def test_slf_freezes_the_encoder_exactly(tmp_path, digits_dir):
    from pipeline import pretrain

    cfg = pretrain_cfg({"loss": "nt_xent"}, {"epochs": 1})
    pretrain.run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, digits_dir, None, tmp_path / "enc.pt", tmp_path / "m.json")
    ft = from_dict(FinetuneConfig, schema_defaults("finetune", {"device": "cpu", "epochs": 20}))
    metrics = run(ft, "slf", 0, digits_dir, tmp_path / "enc.pt", tmp_path / "clf.pt", tmp_path / "ft.json")
    before = load_torch(tmp_path / "enc.pt")["encoder"]
    after = {k[len("encoder."):]: v for k, v in load_torch(tmp_path / "clf.pt")["model"].items() if k.startswith("encoder.")}
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical, BN statistics included
    assert metrics["encoder_frozen"] and metrics["test_acc"] > 0.3


def test_linear_head_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    feats = torch.nn.functional.one_hot(y, 3).float() * 2 + 0.1 * torch.randn(300, 3, generator=g)
    cfg = from_dict(FinetuneConfig, schema_defaults("finetune", {"device": "cpu", "epochs": 30, "lr": 0.05}))
    head = train_linear_head(feats, y, 3, cfg, seed=0)
    assert float((head(feats).argmax(1) == y).float().mean()) == 1.0


def test_weights_digest_sees_any_change():
    m = torch.nn.Linear(3, 2)
    d = weights_digest(m)
    with torch.no_grad():
        m.weight[0, 0] += 1e-7
    assert weights_digest(m) != d
