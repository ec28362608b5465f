"""Study config validation before any job: the JSON schema (which fills the defaults), then the
cross-key checks a schema cannot express. Torch-free: the Snakefile runs it while parsing.

Every error is a short `ConfigError`: the key, the bad value, what is allowed, what to do,
instead of Snakemake's dump of the whole schema and config.

`--config` values: Snakemake parses a nested value such as `seeds=[0]` with YAML's BaseLoader,
which makes every scalar inside it a string (['0']). `coerce_strings` converts such strings to
the integer, number or boolean type the schema expects at that place, so `--config seeds=[0,1]`
works; a string that does not parse as that type is left alone and the schema reports it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.grid import RESULTS, embedded_name
from pipeline.grid import config_error as reference_error  # raises a GridError naming the key

# The image backbones; the schema's backbone enum holds both kinds. `test_validation` checks
# the video set against pipeline.models.backbones.VIDEO_BACKBONES (which needs torch).
IMAGE_BACKBONES = ("resnet_small", "resnet18", "resnet50")
VIDEO_BACKBONES = ("r3d_small", "r3d_18", "r2plus1d_18", "mc3_18", "x3d_xs", "x3d_s")
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DEVICE_SECTIONS = ("pretrain", "mine", "finetune", "evaluate", "analyse")


def config_error(key: str, value: Any, allowed: str, todo: str) -> ConfigError:
    """The four-line error: key, bad value, what is allowed, what to do."""
    shown = repr(value)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return ConfigError(f"config error at '{key}': {shown} is not allowed\n  allowed: {allowed}\n  to fix: {todo}")


# ---- duplicate keys ------------------------------------------------------------------------
def _strict_loader(path: str) -> type:
    """A SafeLoader that refuses a mapping key written twice (PyYAML silently keeps the last one)."""
    import yaml  # lazily, as validate_config: the module is imported by every Snakemake start

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN202 (PyYAML's signature)
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may repeat by design
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(f"config error at '{key}': written twice in {path} (lines {seen[key]} and {line})\n"
                                      f"  to fix: keep one of them (YAML would silently use line {line} and drop line {seen[key]})")
                seen[key] = line
            return super().construct_mapping(node, deep)

    return StrictLoader


def check_duplicate_keys(paths: list[str | Path]) -> None:
    """Every config file Snakemake loaded, read again with duplicate keys refused; the error names the key and both lines."""
    import yaml

    for path in paths:
        yaml.load(Path(path).read_text(), Loader=_strict_loader(str(path)))  # noqa: S506 (a SafeLoader subclass)


# ---- schema-guided coercion of --config strings -------------------------------------------
def resolve(node: dict, schema: dict) -> dict:
    """Follow a local `$ref` ("#/$defs/name") to the schema it names."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = schema
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def child_schema(node: dict, key: str, schema: dict) -> dict | None:
    """The schema of `key` inside an object schema: properties, patternProperties, then additionalProperties."""
    if key in node.get("properties", {}):
        return resolve(node["properties"][key], schema)
    for pattern, sub in node.get("patternProperties", {}).items():
        if re.search(pattern, key):
            return resolve(sub, schema)
    extra = node.get("additionalProperties")
    return resolve(extra, schema) if isinstance(extra, dict) else None


def coerce_scalar(value: str, kind: Any) -> Any:
    """'3' -> 3 for integer, '0.5' -> 0.5 for number, 'true' -> True for boolean; else the string."""
    kinds = kind if isinstance(kind, list) else [kind]
    try:
        if "integer" in kinds and re.fullmatch(r"[+-]?\d+", value):
            return int(value)
        if "number" in kinds:
            return float(value) if not re.fullmatch(r"[+-]?\d+", value) else int(value)
    except ValueError:
        return value
    if "boolean" in kinds and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def coerce_strings(data: Any, node: dict | None, schema: dict) -> Any:
    """`data` with strings converted to the scalar type the schema expects there (see module doc)."""
    if node is None:
        return data
    node = resolve(node, schema)
    if isinstance(data, dict):
        return {k: coerce_strings(v, child_schema(node, k, schema), schema) for k, v in data.items()}
    if isinstance(data, list) and isinstance(node.get("items"), dict):
        return [coerce_strings(v, node["items"], schema) for v in data]
    if isinstance(data, str) and node.get("type") not in (None, "string"):
        return coerce_scalar(data, node["type"])
    return data


# ---- schema errors, shortened ------------------------------------------------------------
def dotted(path: Any) -> str:
    """('pretrain', 'methods', 'a', 0) -> 'pretrain.methods.a[0]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def short_schema_error(error: Any) -> ConfigError:
    """A jsonschema ValidationError as a ConfigError: key, value, what is allowed, what to do."""
    key, kind, rule = dotted(error.absolute_path), error.validator, error.validator_value
    described = error.schema.get("description", "")
    described = described if len(described) <= 160 else described[:157] + "..."
    if kind == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        patterns = list(error.schema.get("patternProperties", {}))
        unknown = [u for u in unknown if not any(re.search(p, u) for p in patterns)] or unknown
        close = {u: difflib.get_close_matches(u, known, 1) for u in unknown}
        hint = "; ".join(f"did you mean '{c[0]}' for '{u}'?" for u, c in close.items() if c)
        where = f"{key}.{unknown[0]}" if error.absolute_path else unknown[0]
        allowed = ", ".join(known) + (f" (or names matching {', '.join(patterns)})" if patterns else "")
        return config_error(where, unknown[0] if len(unknown) == 1 else unknown, f"the keys {allowed}",
                            (hint + " " if hint else "") + "remove or rename the key (unknown keys are errors)")
    if kind == "enum":
        allowed = ", ".join(map(str, rule))
    elif kind == "type":
        allowed = f"a value of type {rule}"
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "multipleOf"):
        allowed = f"{kind} {rule}"
    elif kind == "required":
        allowed = f"an entry with the keys {', '.join(rule)}"
    elif kind == "pattern":
        allowed = f"text matching {rule}"
    else:
        allowed = f"{kind}: {rule}"
    todo = f"see the description: {described}" if described else "see workflow/schemas/config.schema.yaml"
    return config_error(key, error.instance, allowed, todo)


# ---- cross-key checks --------------------------------------------------------------------
def check_devices(config: dict) -> None:
    for section in DEVICE_SECTIONS:
        device = config.get(section, {}).get("device")
        if device is not None and not DEVICE.match(str(device)):
            raise config_error(f"{section}.device", device, "auto, cpu, cuda or cuda:N (N = GPU index)",
                               "fix the spelling; auto picks CUDA when available")


VIDEO_DEFAULT_BACKBONE = "r3d_small"  # the schema's one model default (resnet_small) is an image backbone


def fill_modality_defaults(config: dict) -> None:
    """A video section the user did not write (or wrote without a backbone) gets a video backbone.

    The schema describes both modality sections with one `$defs/model`, whose `backbone` default
    is an image backbone; filling that into `pretrain.video` would reject a study for a value the
    user never wrote.
    """
    pretrain = config.get("pretrain")
    if isinstance(pretrain, dict) and isinstance(pretrain.get("video", {}), dict):
        pretrain.setdefault("video", {}).setdefault("backbone", VIDEO_DEFAULT_BACKBONE)


def check_backbones(config: dict) -> None:
    """pretrain.image must use an image backbone, pretrain.video a video one."""
    for modality, allowed in (("image", IMAGE_BACKBONES), ("video", VIDEO_BACKBONES)):
        backbone = config.get("pretrain", {}).get(modality, {}).get("backbone")
        if backbone is not None and backbone not in allowed:
            article = "an" if modality == "image" else "a"
            raise config_error(f"pretrain.{modality}.backbone", backbone, f"{modality} backbones: {', '.join(allowed)}",
                               f"pick one of those ({backbone} is not {article} {modality} backbone)")


def check_attack_epsilons(config: dict) -> None:
    """Each attack's `epsilons` (when given) must be among evaluate.epsilons, else it runs nowhere."""
    study = config.get("evaluate", {}).get("epsilons", [])
    for name, entry in config.get("evaluate", {}).get("attacks", {}).items():
        chosen = (entry or {}).get("epsilons") or []
        stray = [e for e in chosen if not any(abs(e - s) < 1e-9 for s in study)]
        if stray:
            raise config_error(f"evaluate.attacks.{name}.epsilons", chosen, f"a subset of evaluate.epsilons {study}",
                               f"drop {stray} or add them to evaluate.epsilons (an attack runs only at the study's epsilons)")


CROSS_KEY_CHECKS = (check_devices, check_backbones, check_attack_epsilons)


def validate_config(config: dict, schema_path: str | Path) -> None:
    """Validate `config` in place: coerce --config strings, fill the schema's defaults, cross-key checks.

    Raises ConfigError (a few lines naming the key) on the first problem.
    """
    import jsonschema
    import yaml
    from snakemake.utils import validate

    schema = yaml.safe_load(Path(schema_path).read_text())
    config.update(coerce_strings(dict(config), schema, schema))
    fill_modality_defaults(config)
    # jsonschema first, for an error we can shorten (Snakemake's WorkflowError holds only the
    # formatted dump); then Snakemake's validate, which fills in the defaults.
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        raise short_schema_error(error)
    validate(config, schema=str(Path(schema_path).resolve()))
    from pipeline.grid import expand_mechanism

    expand_mechanism(config)  # the manipulations become ordinary methods before any check reads the methods
    for check in CROSS_KEY_CHECKS:
        check(config)


# ---- cross-key checks -------------------------------------------------------------------
def check_references(config: dict) -> None:
    """Cross-key checks the JSON schema cannot express; each error names the offending key."""
    methods_cfg = config["pretrain"]["methods"]
    methods = list(methods_cfg)
    seeds = config["seeds"]
    for i, ds in enumerate(config["datasets"]):
        if ds not in config["decode"]:
            reference_error(f"datasets[{i}]", f"'{ds}' has no entry under decode: (have {sorted(config['decode'])})")
    if not methods:
        reference_error("pretrain.methods", "no pretraining method configured")
    for key in ("supervised_method", "csl_method"):
        if config["report"][key] not in methods:
            reference_error(f"report.{key}", f"'{config['report'][key]}' is not one of pretrain.methods {methods}")
    for name, m in methods_cfg.items():
        if (m.get("fn_recall", 1) != 1 or m.get("fn_precision", 1) != 1) and m.get("false_negatives") != "oracle":
            reference_error(f"pretrain.methods.{name}.fn_recall",
                         "fn_recall / fn_precision thin and dilute the oracle's mask: they need false_negatives: oracle")
    _check_mining(config, methods_cfg, seeds)
    _check_claims(config, methods)
    for ds in config["datasets"]:
        root = config["decode"][ds]["root"]
        name = embedded_name(root)
        if name is not None and name not in config["embed"]:
            reference_error(f"decode.{ds}.root", f"{root} is under {RESULTS}/embed but embed: has no '{name}'")
    run_seeds = {s for m in methods_cfg.values() for s in m.get("seeds") or seeds}
    for name, entry in config["finetune"]["protocols"].items():
        unknown = [m for m in entry.get("methods", []) if m not in methods]
        if unknown:
            reference_error(f"finetune.protocols.{name}.methods", f"{unknown} are not pretrain.methods {methods}")
        unused = set(entry.get("seeds", [])) - run_seeds
        if unused:
            reference_error(f"finetune.protocols.{name}.seeds", f"seeds {sorted(unused)} are not run by any pretraining method")


def _check_mining(config: dict, methods_cfg: dict, seeds: list[int]) -> None:
    """Mined methods need a warm-up method that is configured, not itself mined, and runs their seeds."""
    if not any(m.get("false_negatives") == "mined" for m in methods_cfg.values()):
        return
    warmup = config["mine"]["warmup_method"]
    if warmup not in methods_cfg:
        reference_error("mine.warmup_method", f"'{warmup}' is not one of pretrain.methods {list(methods_cfg)}")
    if methods_cfg[warmup].get("false_negatives") == "mined":
        reference_error("mine.warmup_method", f"'{warmup}' itself uses mined false negatives (a cycle)")
    warm_seeds = set(methods_cfg[warmup].get("seeds") or seeds)
    for name, m in methods_cfg.items():
        missing = set(m.get("seeds") or seeds) - warm_seeds
        if m.get("false_negatives") == "mined" and missing:
            reference_error(f"pretrain.methods.{name}.seeds", f"seeds {sorted(missing)} have no {warmup} warm-up run to mine from")


def _check_claims(config: dict, methods: list[str]) -> None:
    """The claims' roles name configured methods; the match stage has snapshots to match from."""
    report = config["report"]
    for key in ("oracle_methods", "mined_methods"):
        for i, m in enumerate(report[key]):
            if m not in methods:
                reference_error(f"report.{key}[{i}]", f"'{m}' is not one of pretrain.methods {methods}")
    for variant, base in report["adversarial_pairs"].items():
        for m in (variant, base):
            if m not in methods:
                reference_error(f"report.adversarial_pairs.{variant}", f"'{m}' is not one of pretrain.methods {methods}")
    for key in ("supcon_method", "random_init_method"):
        if report.get(key) is not None and report[key] not in methods:
            reference_error(f"report.{key}", f"'{report[key]}' is not one of pretrain.methods {methods}")
    protocol = report.get("adversarial_protocol")
    if protocol is not None and protocol not in config["finetune"]["protocols"]:
        reference_error("report.adversarial_protocol",
                     f"'{protocol}' is not one of finetune.protocols {list(config['finetune']['protocols'])}")
    if report["claims_protocol"] not in config["finetune"]["protocols"]:
        reference_error("report.claims_protocol", f"'{report['claims_protocol']}' is not one of finetune.protocols "
                                               f"{list(config['finetune']['protocols'])}")
    sup = report["supervised_method"]
    if config["match"]["enabled"]:
        if config["pretrain"]["methods"][sup].get("snapshots", 0) < 2:
            reference_error(f"pretrain.methods.{sup}.snapshots", "the match stage (match.enabled) needs at least 2 snapshots of the "
                                                              "supervised pretraining to choose from")
        if "slf" not in config["finetune"]["protocols"]:
            reference_error("match.enabled", "the match stage compares SLF clean accuracies: finetune.protocols needs slf")
        if f"{sup}_matched" in methods:
            reference_error(f"pretrain.methods.{sup}_matched", "the name is taken by the match stage's pseudo-method")
