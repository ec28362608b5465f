"""The attack, loss and training-method registries have one shape and the schema's names."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from pipeline.attacks import ATTACKS
from pipeline.finetune.adversarial import TRAINING
from pipeline.losses import LOSSES
from tests.conftest import SCHEMA

SCHEMA_DOC = yaml.safe_load(SCHEMA.read_text())


def test_registry_keys_are_the_schema_names():
    evaluate = SCHEMA_DOC["properties"]["evaluate"]["properties"]
    assert set(ATTACKS) == set(evaluate["attacks"]["properties"])
    assert set(LOSSES) == set(SCHEMA_DOC["$defs"]["method"]["properties"]["loss"]["enum"])
    assert set(TRAINING) == set(SCHEMA_DOC["$defs"]["adversarial"]["properties"]["training"]["enum"])


@pytest.mark.parametrize("registry", [ATTACKS, LOSSES, TRAINING], ids=["attacks", "losses", "training"])
def test_every_entry_is_a_frozen_dataclass_with_a_callable_fn(registry):
    for name, entry in registry.items():
        assert dataclasses.is_dataclass(entry) and type(entry).__dataclass_params__.frozen, name
        assert callable(entry.fn), name
        with pytest.raises(dataclasses.FrozenInstanceError):
            entry.fn = None


def test_attack_metadata_is_consistent():
    assert all((a.norm == "L2") == name.endswith("_l2") for name, a in ATTACKS.items())
    assert [n for n, a in ATTACKS.items() if a.black_box] == ["square"]
    assert [n for n, a in ATTACKS.items() if a.standalone] == ["autoattack"]
    assert all(a.describe is None or callable(a.describe) for a in ATTACKS.values())


def test_loss_families_match_what_the_pretrain_stage_does():
    assert {n for n, e in LOSSES.items() if e.family == "adversarial"} == {"clae", "rocl", "acl"}
    assert {n for n, e in LOSSES.items() if e.dual_bn} == {"clae", "acl"}
    assert {e.family for e in LOSSES.values()} == {"supervised", "contrastive", "adversarial"}
