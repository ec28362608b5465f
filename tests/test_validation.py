"""pipeline.validation: every bad config of issue 16 fails before any job with a short error
naming the key; `--config` lists work; schema descriptions are whole."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline.validation import VIDEO_BACKBONES, ConfigError, coerce_strings, validate_config
from tests.conftest import REPO, SCHEMA

TINY = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())


def edited(edit) -> dict:
    cfg = copy.deepcopy(TINY)
    edit(cfg)
    return cfg


BAD = {  # case -> (edit, the key the error must name, a word of what is allowed)
    "device typo": (lambda c: c["pretrain"].update(device="cdua"), "pretrain.device", "cuda:N"),
    "evaluate device": (lambda c: c["evaluate"].update(device="gpu"), "evaluate.device", "cuda:N"),
    "video backbone for images": (lambda c: c["pretrain"]["image"].update(backbone="r3d_small"),
                                  "pretrain.image.backbone", "resnet_small"),
    "image backbone for video": (lambda c: c["pretrain"]["video"].update(backbone="resnet18"),
                                 "pretrain.video.backbone", "r3d_18"),
    "epsilon outside the study": (lambda c: c["evaluate"]["attacks"]["apgd_ce"].update(epsilons=[3]),
                                  "evaluate.attacks.apgd_ce.epsilons", "subset of evaluate.epsilons"),
    "unknown attack": (lambda c: c["evaluate"]["attacks"].update(apgd={}), "evaluate.attacks.apgd", "apgd_ce"),
    "top-level typo": (lambda c: c.update(sedes=[0]), "sedes", "seeds"),
    "bad enum": (lambda c: c["finetune"]["protocols"]["aff_trades"].update(training="trade"),
                 "finetune.protocols.aff_trades.training", "trades"),
    "bad corruption": (lambda c: c["evaluate"]["corruptions"].update(names=["fog"]), "evaluate.corruptions.names[0]",
                       "gaussian_noise"),
    "wrong type": (lambda c: c["pretrain"]["image"].update(batch_size="big"), "pretrain.image.batch_size", "integer"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_fails_with_a_short_error_naming_the_key(case):
    edit, key, allowed = BAD[case]
    with pytest.raises(ConfigError) as error:
        validate_config(edited(edit), SCHEMA)
    message = str(error.value)
    assert f"'{key}'" in message and allowed in message
    assert len(message.splitlines()) <= 4 and len(message) < 800


def test_a_key_written_twice_is_an_error_naming_it_and_both_lines(tmp_path):
    from pipeline.validation import check_duplicate_keys

    path = tmp_path / "study.yaml"
    path.write_text("seeds: [0]\nalias: &a {b: 1}\nother: {<<: *a, c: 2}\nreport:\n  x: 1\n  x: 2\n")  # merge keys are fine
    with pytest.raises(ConfigError) as error:
        check_duplicate_keys([path])
    assert "config error at 'x'" in str(error.value) and "lines 5 and 6" in str(error.value)  # nested keys too
    path.write_text("seeds: [0]\ndatasets: [digits]\nseeds: [0, 1]\n")
    with pytest.raises(ConfigError, match=r"config error at 'seeds': written twice in .*study.yaml \(lines 1 and 3\)"):
        check_duplicate_keys([path])
    check_duplicate_keys([REPO / "config" / name for name in ("config.yaml", "extended.yaml", "mechanism.yaml", "cifar10_ucf101.yaml")])


def test_a_study_without_a_video_section_gets_a_video_backbone_by_default():
    """The schema's one model default (resnet_small) is an image backbone: it must not reject a study that
    never wrote `pretrain.video`, and a video section without a backbone gets a video one."""
    for drop in (lambda c: c["pretrain"].pop("video"), lambda c: c["pretrain"]["video"].pop("backbone")):
        cfg = edited(drop)
        validate_config(cfg, SCHEMA)
        assert cfg["pretrain"]["video"]["backbone"] in VIDEO_BACKBONES
    image_only = yaml.safe_load((REPO / "config" / "extended.yaml").read_text())
    assert "video" not in image_only["pretrain"]
    validate_config(image_only, SCHEMA)


def test_good_configs_validate_and_get_defaults():
    for path in (REPO / "config" / "config.yaml", REPO / "config" / "extended.yaml", REPO / "config" / "mechanism.yaml",
                 REPO / ".test" / "config.yaml"):
        cfg = yaml.safe_load(path.read_text())
        validate_config(cfg, SCHEMA)
        assert cfg["pretrain"]["image"]["optimizer"] in ("sgd", "lars")  # a default filled in


def test_config_command_line_strings_are_coerced():
    """Snakemake parses `--config seeds=[0,1]` with YAML's BaseLoader into ['0', '1']."""
    schema = yaml.safe_load(SCHEMA.read_text())
    out = coerce_strings({"seeds": ["0", "1"], "evaluate": {"epsilons": ["2", "0.5"], "cascade": "false"},
                          "datasets": ["1"]}, schema, schema)
    assert out["seeds"] == [0, 1] and out["evaluate"]["epsilons"] == [2, 0.5] and out["evaluate"]["cascade"] is False
    assert out["datasets"] == ["1"]  # a string where the schema wants one stays a string
    cfg = edited(lambda c: c.update(seeds=["x"]))
    with pytest.raises(ConfigError, match=r"'seeds\[0\]'"):
        validate_config(cfg, SCHEMA)


def test_video_backbones_match_the_model_registry():
    from pipeline.models.backbones import BACKBONES
    from pipeline.models.backbones import VIDEO_BACKBONES as REGISTRY

    assert set(VIDEO_BACKBONES) == set(REGISTRY)
    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(schema["$defs"]["model"]["properties"]["backbone"]["enum"]) == set(BACKBONES)


def test_every_schema_description_is_whole():
    """An unquoted comma inside a flow mapping `{... description: a, b}` cuts it and leaves a null key."""
    def nulls(node, path=""):
        if isinstance(node, dict):
            nullable = isinstance(node.get("type"), list) and "null" in node["type"]
            for k, v in node.items():
                if v is None and not (k == "default" and nullable):  # a declared null default is meant
                    yield f"{path}.{k}"
                yield from nulls(v, f"{path}.{k}")
        elif isinstance(node, list):
            for v in node:
                yield from nulls(v, path)

    schema = yaml.safe_load(SCHEMA.read_text())
    assert list(nulls(schema)) == []
    batch = schema["$defs"]["model"]["properties"]["batch_size"]["description"]
    assert batch == "Batch size (samples, two views each for contrastive methods)."


@pytest.mark.workflow
def test_snakemake_dry_run_prints_a_few_lines(tmp_path):
    """The real terminal: `snakemake -n --config ...` with a bad value prints the error, not a schema dump."""
    for name in ("Snakefile", "workflow", "pipeline", "config", ".test"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    cmd = [sys.executable, "-m", "snakemake", "-n", "--configfile", ".test/config.yaml", "--config", "typo=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode != 0 and "config error at 'typo'" in "\n".join(out)
    assert len(out) <= 10, "\n".join(out)
    cmd = [sys.executable, "-m", "snakemake", "-n", "--configfile", ".test/config.yaml", "--config", "seeds=[0]"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (tmp_path / "results").exists()
