"""The schema and its typed mirror agree; bad configs fail early and name the key."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from pipeline import budget as B
from pipeline import config as C
from pipeline import grid
from pipeline.attacks import ATTACKS
from pipeline.config.attacks import ATTACK_SETTINGS
from tests.conftest import REPO, SCHEMA, schema_attack_defaults, schema_defaults, validated


def schema_props(*path: str) -> set[str]:
    schema = yaml.safe_load(SCHEMA.read_text())
    node = schema
    for key in path:
        node = schema["$defs"][key] if key in schema["$defs"] and node is schema else node["properties"][key]
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].split("/")[-1]]
        if "additionalProperties" in node and isinstance(node["additionalProperties"], dict):
            node = node["additionalProperties"]
    return set(node["properties"])


def fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls,path", [
    (C.EmbedConfig, ("embed",)), (C.DecodeConfig, ("decode",)), (C.ModelConfig, ("model",)), (C.MethodConfig, ("method",)),
    (C.MineConfig, ("mine",)), (C.FinetuneConfig, ("finetune",)), (C.EvaluateConfig, ("evaluate",)),
    (C.AnalyseConfig, ("analyse",)), (C.ReportConfig, ("report",)),
])
def test_dataclasses_mirror_the_schema(cls, path):
    assert fields(cls) == schema_props(*path)


def test_augment_spec_mirrors_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert fields(C.AugmentSpec) == set(schema["$defs"]["model"]["properties"]["augment"]["properties"])


def test_default_and_test_configs_validate_and_build():
    for path in (REPO / "config" / "config.yaml", REPO / "config" / "extended.yaml", REPO / "config" / "mechanism.yaml",
                 REPO / ".test" / "config.yaml"):
        cfg = validated(yaml.safe_load(path.read_text()))
        C.from_dict(C.MineConfig, cfg["mine"])
        for dataset in cfg["datasets"]:  # what each evaluate job receives
            C.from_dict(C.EvaluateConfig, grid.evaluate_slice(cfg, dataset))
        for method in cfg["pretrain"]["methods"].values():
            C.from_dict(C.PretrainConfig, {"device": "cpu", "precision": "auto", "budget_mb": 1.0,
                                           "model": cfg["pretrain"]["image"], "method": method})


def test_typed_mirror_rejects_unknown_missing_and_mistyped_keys():
    good = {"supervised_method": "a", "csl_method": "b", "claims_protocol": "slf", "oracle_methods": [], "mined_methods": [],
            "adversarial_pairs": {}, "primary_eps": {}, "random_init_method": None, "plateau_fraction": 0.2, "plateau_tolerance": 0.05,
            "supcon_method": None, "adversarial_protocol": None}
    with pytest.raises(C.ConfigError, match=r"report: unknown key\(s\) \['csl_methd'\]"):
        C.from_dict(C.ReportConfig, {**good, "csl_methd": "b"}, "report")
    with pytest.raises(C.ConfigError, match="missing key"):
        C.from_dict(C.ReportConfig, {"supervised_method": "a"}, "report")
    with pytest.raises(C.ConfigError, match="report.csl_method: expected str"):
        C.from_dict(C.ReportConfig, {**good, "csl_method": 3}, "report")


def test_schema_rejects_a_misspelt_key_naming_it():
    from snakemake.exceptions import WorkflowError

    cfg = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    cfg["evaluate"]["attacks"]["pgd"]["stpes"] = 3
    with pytest.raises(WorkflowError, match="stpes"):
        validated(cfg)


def test_linf_budgets_turn_into_pixel_units_once_and_keep_their_1_255_label():
    """Config eps are in 1/255; from_dict is the one place that divides, and labels keep the written value."""
    cfg = validated(yaml.safe_load((REPO / ".test" / "config.yaml").read_text()))
    ev = C.from_dict(C.EvaluateConfig, {**cfg["evaluate"], "epsilons": [2, 3, 8]})
    assert [float(e) for e in ev.epsilons] == [2 / 255, 3 / 255, 8 / 255]
    assert [B.per_255(e) for e in ev.epsilons] == [2.0, 3.0, 8.0]  # labels are not 255 * (e / 255)
    assert ev.epsilons_l2 == cfg["evaluate"]["epsilons_l2"] and B.per_255(0.5) == 0.5  # L2: input units, untouched
    again = dataclasses.replace(ev, attacks={})  # no second conversion after the boundary
    assert again.epsilons == ev.epsilons and [B.per_255(e) for e in again.epsilons] == [2.0, 3.0, 8.0]
    copied = copy.deepcopy(dataclasses.asdict(ev))["epsilons"]  # deepcopy rebuilds from the label
    assert copied == ev.epsilons and [e.per_255 for e in copied] == [2.0, 3.0, 8.0]
    adv = C.from_dict(C.AdversarialConfig, schema_defaults("adversarial", {"eps": 8}))
    assert adv.eps == 8 / 255 and B.per_255(adv.eps) == 8.0 and adv.step_size == schema_defaults("adversarial")["step_size"]
    raw = schema_defaults("method", {"loss": "acl"})
    raw["attack"]["eps"] = 4
    method = C.from_dict(C.MethodConfig, raw)
    assert method.attack.eps == 4 / 255 and method.attack.step_size == raw["attack"]["step_size"]  # still a fraction of eps


def test_one_key_and_one_display_format_for_a_budget():
    """Results are keyed by the config's 1/255 value and shown as 'N/255', whatever the budget's type."""
    eps = B.Eps(8)
    assert eps == 8 / 255 and B.eps_key(eps) == "8.0" and B.eps_key(0.5) == "0.5"  # L2 budgets are keyed as given
    assert B.eps_text(B.eps_key(eps)) == B.eps_text(8) == B.eps_text(8.0) == "8/255"
    assert B.eps_key(B.Eps(1 / 3)) == str(1 / 3)  # the label, not 255 * pixels (which need not round-trip)


def test_attack_settings_mirror_the_schema_and_the_registry():
    """One typed settings class per attack: the registry's names, each with its schema entry's properties."""
    schema = yaml.safe_load(SCHEMA.read_text())
    entries = schema["properties"]["evaluate"]["properties"]["attacks"]["properties"]
    assert list(ATTACK_SETTINGS) == list(ATTACKS) and set(entries) == set(ATTACKS)
    for name, cls in ATTACK_SETTINGS.items():
        assert fields(cls) == set(entries[name]["properties"]), name
        settings = C.from_dict(cls, schema_attack_defaults(name), name)
        assert not (set(settings.arguments(8 / 255)) & {"max_samples", "epsilons"})  # the stage's, not the attack's


def test_evaluation_attacks_are_typed_with_an_absolute_step_at_each_eps():
    cfg = validated(yaml.safe_load((REPO / ".test" / "config.yaml").read_text()))
    raw = {**cfg["evaluate"], "pgd_steps_check": {**cfg["evaluate"]["pgd_steps_check"], "epsilons": []},
           "attacks": {"pgd": {**schema_attack_defaults("pgd"), "step_size": 0.25, "epsilons": [8]}, "fgsm": {"max_samples": 7}}}
    ev = C.from_dict(C.EvaluateConfig, raw, "evaluate")
    pgd = ev.attacks["pgd"]
    assert isinstance(pgd, ATTACK_SETTINGS["pgd"]) and pgd.step_size == 0.25  # a fraction of eps, as written
    assert pgd.arguments(B.Eps(8))["step_size"] == 0.25 * (8 / 255)  # the absolute step the attack takes, 2/255
    assert pgd.arguments(B.Eps(4))["step_size"] == 0.25 * (4 / 255)
    budgets = [B.Eps(2), B.Eps(8), B.Eps(16)]
    assert pgd.runs_at(budgets) == [8 / 255] and ev.attacks["fgsm"].runs_at(budgets) == budgets  # by label; none: all
    assert ev.attacks["fgsm"].arguments(0.1) == {}
    assert C.to_dict(ev.attacks) == raw["attacks"]  # the record reads like the config
    with pytest.raises(C.ConfigError, match=r"evaluate.attacks: unknown name\(s\) \['pgdd'\]"):
        C.from_dict(C.EvaluateConfig, {**raw, "attacks": {"pgdd": {}}}, "evaluate")
    with pytest.raises(C.ConfigError, match=r"evaluate.attacks.pgd: missing key\(s\) \['restarts'\]"):
        C.from_dict(C.EvaluateConfig, {**raw, "attacks": {"pgd": {k: v for k, v in raw["attacks"]["pgd"].items() if k != "restarts"}}},
                    "evaluate")


def test_protocols_are_typed_and_round_trip_in_1_255_units():
    adv = schema_defaults("adversarial", {"eps": 8, "steps": 3})
    raw = schema_defaults("finetune", {"protocols": {"slf": {"methods": [], "seeds": []}, "aff_trades": adv}})
    ft = C.from_dict(C.FinetuneConfig, raw, "finetune")
    assert isinstance(ft.protocols["slf"], C.SlfProtocolConfig) and isinstance(ft.protocols["aff_trades"], C.AdversarialConfig)
    assert ft.protocols["aff_trades"].eps == 8 / 255 and ft.protocols["aff_trades"].steps == 3
    assert C.to_dict(ft) == raw  # eps back as the config's 8, every other value as written
    with pytest.raises(C.ConfigError, match=r"finetune.protocols.aff_trades: unknown key\(s\) \['stpes'\]"):
        C.from_dict(C.FinetuneConfig, {**raw, "protocols": {"aff_trades": {**adv, "stpes": 1}}}, "finetune")
