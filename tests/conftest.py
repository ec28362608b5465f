"""Shared fixtures: configs filled from the schema's defaults and tiny real datasets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def validated(config: dict) -> dict:
    """Validate a config against the schema and fill its defaults, as the Snakefile does."""
    from snakemake.utils import validate

    config = copy.deepcopy(config)
    validate(config, str(SCHEMA), set_default=True)
    return config


def schema_defaults(defs_key: str, overrides: dict | None = None) -> dict:
    """Defaults of a `$defs` object of the schema (e.g. "model"), with nested objects filled."""
    schema = yaml.safe_load(SCHEMA.read_text())

    def fill(node: dict) -> dict:
        out = {}
        for key, prop in node.get("properties", {}).items():
            if "$ref" in prop:
                out[key] = fill(schema["$defs"][prop["$ref"].split("/")[-1]])
            elif prop.get("type") == "object" and "properties" in prop:
                out[key] = fill(prop)
            elif "default" in prop:
                out[key] = copy.deepcopy(prop["default"])
        return out

    result = fill(schema["$defs"][defs_key]) if defs_key in schema["$defs"] else fill(schema["properties"][defs_key])
    return deep_update(result, overrides or {})


def schema_attack_defaults(name: str) -> dict:
    """The schema's defaults of one evaluation attack (`evaluate.attacks.<name>`)."""
    schema = yaml.safe_load(SCHEMA.read_text())
    entry = schema["properties"]["evaluate"]["properties"]["attacks"]["properties"][name]
    return {key: copy.deepcopy(prop["default"]) for key, prop in entry["properties"].items()}


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


TINY_MODEL = {"backbone": "resnet_small", "width": 4, "proj_hidden": 32, "proj_dim": 16, "epochs": 2,
              "batch_size": 64, "lr": 0.3, "augment": {"crop_scale_min": 0.5, "flip": 0.0}}


def pretrain_cfg(method: dict, model: dict | None = None) -> dict:
    """A complete PretrainConfig dict for CPU tests."""
    return {"device": "cpu", "precision": "fp32", "budget_mb": 1024,
            "model": schema_defaults("model", {**TINY_MODEL, **(model or {})}),
            "method": schema_defaults("method", method)}


def decode_cfg(**overrides) -> dict:
    base = {"source": "sklearn_digits", "root": "", "download": False, "verify_checksums": True, "size": 8,
            "resize": "short_side_crop", "test_fraction": 0.3, "split_seed": 0, "fold": 1,
            "frames": 4, "stride": 2, "clips_per_video": 1, "max_bad_fraction": 0.05, "timeout_s": 60}
    return {**base, **overrides}


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The embedded digits decoded at 8x8 RGB."""
    from pipeline.config import DecodeConfig, from_dict
    from pipeline.decode import run

    out = tmp_path_factory.mktemp("digits")
    run(from_dict(DecodeConfig, decode_cfg()), out, threads=1)
    return out


@pytest.fixture(scope="session")
def moving_digits_root(tmp_path_factory) -> Path:
    """A tiny moving-digits UCF101 tree, 9 videos per class of 12 frames at 32x32 (the embed stage's code)."""
    from pipeline.config import EmbedConfig, from_dict
    from pipeline.embed import run

    cfg = {"videos_per_class": 9, "frames": 12, "canvas": 32, "sprite": 20, "max_speed": 2.0, "fps": 8, "crf": 12, "seed": 0}
    out = tmp_path_factory.mktemp("embed") / "moving_digits"
    run(from_dict(EmbedConfig, cfg), out)
    return out


@pytest.fixture(scope="session")
def clips_dir(tmp_path_factory, moving_digits_root) -> Path:
    from pipeline.config import DecodeConfig, from_dict
    from pipeline.decode import run

    out = tmp_path_factory.mktemp("clips")
    run(from_dict(DecodeConfig, decode_cfg(source="ucf101", root=str(moving_digits_root), size=16, frames=4, stride=2)), out, threads=2)
    return out


def as_json(data: dict) -> str:
    return json.dumps(data, sort_keys=True)
