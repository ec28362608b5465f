"""The match stage picks the supervised snapshot whose clean accuracy is closest to the CSL model's."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline import match
from pipeline.config import FinetuneConfig, MatchConfig, PretrainConfig, from_dict
from pipeline.io import load_torch
from pipeline.pretrain.checkpoint import snapshot_steps
from tests.conftest import pretrain_cfg, schema_defaults


def test_snapshot_steps_are_evenly_spaced_and_end_at_the_last_step():
    assert snapshot_steps(40, 4) == {10, 20, 30, 40}
    assert snapshot_steps(40, 0) == set() and snapshot_steps(3, 10) == {1, 2, 3}
    assert max(snapshot_steps(37, 5)) == 37 and len(snapshot_steps(37, 5)) == 5


def test_closest_prefers_the_earliest_on_a_tie():
    assert match.closest([0.5, 0.7, 0.9], 0.72) == 1
    assert match.closest([0.6, 0.8], 0.7) == 0


@pytest.fixture(scope="module")
def supervised_snapshots(tmp_path_factory, digits_dir):
    from pipeline.pretrain import run

    out = tmp_path_factory.mktemp("sup")
    cfg = pretrain_cfg({"loss": "ce", "snapshots": 4}, {"epochs": 2, "batch_size": 128})
    run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, digits_dir, None, out / "encoder.pt", out / "metrics.json")
    return out


def test_pretraining_writes_the_snapshots_it_was_asked_for(supervised_snapshots, digits_dir):
    saved = load_torch(supervised_snapshots / "snapshots.pt")
    steps = [s["step"] for s in saved["snapshots"]]
    assert len(steps) == 4 and steps == sorted(steps)
    last = saved["snapshots"][-1]["encoder"]
    final = load_torch(supervised_snapshots / "encoder.pt")["encoder"]
    assert all(torch.equal(last[k], final[k]) for k in final)  # the last snapshot is the finished encoder
    assert not all(torch.equal(saved["snapshots"][0]["encoder"][k], final[k]) for k in final)


def test_match_picks_the_snapshot_closest_to_the_target(tmp_path, supervised_snapshots, digits_dir):
    finetune = from_dict(FinetuneConfig, schema_defaults("finetune", {"device": "cpu", "epochs": 20}))
    cfg = from_dict(MatchConfig, schema_defaults("match", {"enabled": True}))
    target = tmp_path / "metrics.json"
    results = []
    for goal in (0.0, 1.0):  # the least and the most accurate snapshot
        target.write_text(json.dumps({"test_acc": goal}))
        m = match.run(finetune, cfg, 0, digits_dir, supervised_snapshots / "snapshots.pt", target, tmp_path / "c.pt", tmp_path / "m.json")
        accs = [c["clean_accuracy"] for c in m["candidates"]]
        assert m["clean_accuracy"] == (min(accs) if goal == 0.0 else max(accs))
        assert m["difference"] == pytest.approx(m["clean_accuracy"] - goal)
        results.append(m)
    middle = sorted(c["clean_accuracy"] for c in results[0]["candidates"])[1]
    target.write_text(json.dumps({"test_acc": middle}))
    m = match.run(finetune, cfg, 0, digits_dir, supervised_snapshots / "snapshots.pt", target, tmp_path / "c.pt", tmp_path / "m.json")
    assert m["difference"] == 0 and m["within_tolerance"]
    # the written classifier is evaluate's format and scores what the stage says on the test split
    from pipeline.data import load_split
    from pipeline.models.classifier import load_classifier

    model = load_classifier(tmp_path / "c.pt", torch.device("cpu"))
    test = load_split(digits_dir, "test", torch.device("cpu"))
    with torch.no_grad():
        acc = float((model(test.batch(torch.arange(len(test)))).argmax(1) == test.y).float().mean())
    assert acc == pytest.approx(m["clean_accuracy"], abs=1e-6)


def test_no_snapshots_is_a_clear_error(tmp_path, digits_dir):
    from pipeline.io import save_torch

    save_torch(tmp_path / "snapshots.pt", {"model_args": {}, "snapshots": []})
    (tmp_path / "r.json").write_text(json.dumps({"test_acc": 0.5}))
    finetune = from_dict(FinetuneConfig, schema_defaults("finetune", {"device": "cpu"}))
    with pytest.raises(ValueError, match="snapshots > 0"):
        match.run(finetune, from_dict(MatchConfig, schema_defaults("match")), 0, digits_dir, tmp_path / "snapshots.pt",
                  tmp_path / "r.json", tmp_path / "c.pt", tmp_path / "m.json")
