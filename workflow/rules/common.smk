# Helpers shared by the rules: config validation, the study grid, per-job parameters.
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # this checkout's `pipeline`, even if another is installed

from pipeline.datasets import SOURCE_MODALITY
from pipeline.provenance import source_hash
from pipeline.validation import validate_config


validate_config(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))  # short errors naming the key

PYTHON = sys.executable  # the interpreter running Snakemake, so jobs see the same packages
RESULTS = "results"
SEEDS = config["seeds"]
DATASETS = config["datasets"]
METHODS = list(config["pretrain"]["methods"])
PROTOCOLS = list(config["finetune"]["protocols"])  # slf, alf[_x], aff[_x]: the `protocol` wildcard


def config_error(key, message):
    raise ValueError(f"config error at '{key}': {message}")


def check_references():
    """Cross-key checks the JSON schema cannot express; each names the offending key."""
    for i, ds in enumerate(DATASETS):
        if ds not in config["decode"]:
            config_error(f"datasets[{i}]", f"'{ds}' has no entry under decode: (have {sorted(config['decode'])})")
    if not METHODS:
        config_error("pretrain.methods", "no pretraining method configured")
    for key in ("supervised_method", "csl_method"):
        if config["report"][key] not in METHODS:
            config_error(f"report.{key}", f"'{config['report'][key]}' is not one of pretrain.methods {METHODS}")
    warmup = config["mine"]["warmup_method"]
    if any(m.get("false_negatives") == "mined" for m in config["pretrain"]["methods"].values()):
        if warmup not in METHODS:
            config_error("mine.warmup_method", f"'{warmup}' is not one of pretrain.methods {METHODS}")
        if config["pretrain"]["methods"][warmup].get("false_negatives") == "mined":
            config_error("mine.warmup_method", f"'{warmup}' itself uses mined false negatives (a cycle)")
        warm_seeds = set(config["pretrain"]["methods"][warmup]["seeds"] or SEEDS)
        for name, m in config["pretrain"]["methods"].items():
            missing = set(m["seeds"] or SEEDS) - warm_seeds
            if m["false_negatives"] == "mined" and missing:
                config_error(f"pretrain.methods.{name}.seeds", f"seeds {sorted(missing)} have no {warmup} warm-up run to mine from")
    for ds in DATASETS:
        root = config["decode"][ds]["root"]
        name = embedded_name(root)
        if name is not None and name not in config["embed"]:
            config_error(f"decode.{ds}.root", f"{root} is under {RESULTS}/embed but embed: has no '{name}'")
    for name, entry in config["finetune"]["protocols"].items():
        unknown = [m for m in entry["methods"] if m not in METHODS]
        if unknown:
            config_error(f"finetune.protocols.{name}.methods", f"{unknown} are not pretrain.methods {METHODS}")
        unused = set(entry["seeds"]) - {s for m in config["pretrain"]["methods"].values() for s in m["seeds"] or SEEDS}
        if unused:
            config_error(f"finetune.protocols.{name}.seeds", f"seeds {sorted(unused)} are not run by any pretraining method")


def embedded_name(root):
    """The embed entry a decode root points into (results/embed/<name>), else None."""
    parts = Path(root).parts
    return parts[2] if len(parts) == 3 and parts[:2] == (RESULTS, "embed") else None


check_references()


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    method="[A-Za-z0-9_]+",
    seed=r"\d+",
    protocol="(slf|alf|aff)(_[a-z0-9]+)?",
    name="[A-Za-z0-9_]+",


def as_json(data):
    return json.dumps(data, sort_keys=True)


def code_hash(stage):
    """Hash of the pipeline sources the stage imports: Snakemake does not track imported code."""
    return source_hash(f"pipeline.{stage}")


def modality(dataset):
    return SOURCE_MODALITY[config["decode"][dataset]["source"]]


def uses_mined(method):
    return config["pretrain"]["methods"][method]["false_negatives"] == "mined"


# ---- paths ------------------------------------------------------------------------------
def decode_dir(dataset):
    return f"{RESULTS}/decode/{dataset}"


def data_dir(wildcards):
    return decode_dir(wildcards.dataset)


def output_dir(name):
    """Params function: the folder of the named output (stages write several files there)."""

    def folder(wildcards, output):
        return os.path.dirname(output[name])

    return folder


def results_root(wildcards, input):
    """The results folder, derived from an input (results/analyse/<dataset>/representation.json)."""
    return str(Path(input.analyse[0]).parents[2])


def encoder_path(dataset, method, seed):
    return f"{RESULTS}/pretrain/{dataset}/{method}/seed{seed}/encoder.pt"


# ---- per-job inputs and parameters ------------------------------------------------------
def embed_cfg(wildcards):
    return as_json(config["embed"][wildcards.name])


def decode_cfg(wildcards):
    return as_json(config["decode"][wildcards.dataset])


def decode_inputs(wildcards):
    """An embedded dataset's videos come from the embed rule; a user's dataset is read in place."""
    root = config["decode"][wildcards.dataset]["root"]
    return [root] if embedded_name(root) is not None else []


def pretrain_cfg(wildcards):
    section = config["pretrain"]
    return as_json({
        "device": section["device"], "precision": section["precision"], "budget_mb": section["budget_mb"],
        "model": section[modality(wildcards.dataset)], "method": section["methods"][wildcards.method],
    })


def pretrain_inputs(wildcards):
    inputs = {"meta": f"{decode_dir(wildcards.dataset)}/meta.json"}
    if uses_mined(wildcards.method):
        inputs["mined"] = f"{RESULTS}/mine/{wildcards.dataset}/seed{wildcards.seed}/false_negatives.npz"
    return inputs


def mined_arg(wildcards, input):
    return f"--mined {input.mined}" if uses_mined(wildcards.method) else ""


def warmup_encoder(wildcards):
    return encoder_path(wildcards.dataset, config["mine"]["warmup_method"], wildcards.seed)


def section_cfg(stage):
    return as_json(config[stage])


def method_seeds(method):
    """A method's own `seeds`, else the study's: expensive methods may run fewer seeds."""
    return config["pretrain"]["methods"][method]["seeds"] or SEEDS


def runs():
    """Every (method, seed) pair of the study, in config order."""
    return [(m, s) for m in METHODS for s in method_seeds(m)]


def dataset_encoders(wildcards):
    return [encoder_path(wildcards.dataset, m, s) for m, s in sorted(runs())]


def encoder_args(wildcards):
    """Sorted, so that reordering methods in the config does not look like a change."""
    return " ".join(f"--encoder {m}:{s}:{encoder_path(wildcards.dataset, m, s)}" for m, s in sorted(runs()))


def protocol_methods(protocol):
    """The pretraining methods a protocol covers (its `methods`, else all), in config order."""
    chosen = config["finetune"]["protocols"][protocol]["methods"]
    return [m for m in METHODS if not chosen or m in chosen]


def protocol_seeds(protocol):
    """The seeds a protocol covers ([] = every seed of each method)."""
    return config["finetune"]["protocols"][protocol]["seeds"]


def protocol_runs():
    """Every (method, seed, protocol) finetune/evaluate job of the study."""
    return [(m, s, p) for p in PROTOCOLS for m, s in runs()
            if m in protocol_methods(p) and (not protocol_seeds(p) or s in protocol_seeds(p))]


def finetune_cfg(wildcards):
    """The finetune section with `protocols` cut down to this job's entry, minus the grid-only `methods`
    and `seeds`: editing one protocol (or which jobs it covers) reruns only that protocol's jobs."""
    section = config["finetune"]
    entry = section["protocols"][wildcards.protocol]
    return as_json({**section, "protocols": {wildcards.protocol: {**entry, "methods": [], "seeds": []}}})


def report_grid():
    return as_json({
        "datasets": {ds: modality(ds) for ds in DATASETS}, "methods": METHODS, "seeds": SEEDS,
        "method_seeds": {m: method_seeds(m) for m in METHODS},
        "protocols": PROTOCOLS, "protocol_methods": {p: protocol_methods(p) for p in PROTOCOLS},
        "protocol_seeds": {p: protocol_seeds(p) for p in PROTOCOLS},
        "mined": any(uses_mined(m) for m in METHODS),
    })


def mined_seeds():
    return sorted({s for m, s in runs() if uses_mined(m)})


def report_inputs():
    job = "{dataset}/{method}/seed{seed}"
    inputs = {
        "evaluate": [f"{RESULTS}/evaluate/{job}/{p}/robustness.json".format(dataset=d, method=m, seed=s)
                     for d in DATASETS for m, s, p in protocol_runs()],
        "finetune": [f"{RESULTS}/finetune/{job}/{p}/metrics.json".format(dataset=d, method=m, seed=s)
                     for d in DATASETS for m, s, p in protocol_runs()],
        "pretrain": [f"{RESULTS}/pretrain/{job}/metrics.json".format(dataset=d, method=m, seed=s) for d in DATASETS for m, s in runs()],
        "analyse": expand(f"{RESULTS}/analyse/{{dataset}}/representation.json", dataset=DATASETS),
    }
    if mined_seeds():
        inputs["mine"] = expand(f"{RESULTS}/mine/{{dataset}}/seed{{seed}}/quality.json", dataset=DATASETS, seed=mined_seeds())
    return inputs


def final_outputs():
    return [f"{RESULTS}/report/report.md"]


def decode_threads(wildcards):
    """decode's threads: all the cores given with --cores, or 1 where none were given
    (`snakemake --report`, `--unlock`, `-n`: a plain `workflow.cores` fails there)."""
    from snakemake.exceptions import WorkflowError

    try:
        return workflow.cores
    except WorkflowError:
        return 1


def decoded_arrays(splits=("train", "test")):
    """Input function: the decode arrays a stage reads besides meta.json, declared so that a
    replaced or damaged array reruns the stage, whose checksum check then names the file."""

    def arrays(wildcards):
        return [f"{decode_dir(wildcards.dataset)}/{s}_{part}.npy" for s in splits for part in ("x", "y")]

    return arrays
