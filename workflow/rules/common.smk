# Glue between the config and the rules. The grid itself (which jobs exist, what each job receives,
# the cross-key checks) lives in the torch-free `pipeline.grid`, shared with the report stage.
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod

sys.path.insert(0, workflow.basedir)  # this checkout's `pipeline`, even if another is installed

from pipeline import grid as study
from pipeline.provenance import source_hash
from pipeline.errors import ConfigError
from pipeline.validation import check_duplicate_keys, check_references, validate_config

try:
    check_duplicate_keys(workflow.configfiles)  # YAML keeps the last of two equal keys silently
    validate_config(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))  # short errors naming the key
    check_references(config)
except ConfigError as error:  # GridError too
    sys.exit(f"{error}")  # the message names the key and the fix; a traceback into the validator would only bury it

# Every job runs `$PIPELINE_PYTHON -m pipeline.warm pipeline.<stage>`: the interpreter running Snakemake, so jobs
# see the same packages; with `--sdm conda`, the rule's environment (workflow/envs/pipeline.yaml), which has no
# `pipeline` installed, so this checkout goes on PYTHONPATH. Set in Snakemake's shell prefix rather than as a
# {PYTHON} placeholder, as `snakemake --lint` asks (shell commands name no variable from outside the rule); a
# cluster job re-parses this file on its node and sets it there again.
IN_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
PYTHON = "python" if IN_CONDA else sys.executable
_exports = [f"export PIPELINE_PYTHON={shlex.quote(PYTHON)}"]
if IN_CONDA:
    _exports.append(f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{PYTHONPATH:+:$PYTHONPATH}}")
shell.prefix(("set -euo pipefail; " + "; ".join(_exports) + "; ").replace("{", "{{").replace("}", "}}"))  # formatted once
RESULTS = study.RESULTS
GRID = study.Grid.from_config(config)
DATASETS = list(GRID.datasets)
config_error = study.config_error


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


# ---- paths ------------------------------------------------------------------------------
decode_dir = study.decode_dir
encoder_path = study.encoder_path


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


# ---- per-job inputs and parameters ------------------------------------------------------
def embed_cfg(wildcards):
    return as_json(config["embed"][wildcards.name])


def decode_cfg(wildcards):
    return as_json(config["decode"][wildcards.dataset])


def decode_inputs(wildcards):
    """An embedded dataset's videos come from the embed rule; a user's dataset is read in place."""
    root = config["decode"][wildcards.dataset]["root"]
    return [root] if study.embedded_name(root) is not None else []


def pretrain_cfg(wildcards):
    return as_json(study.pretrain_slice(config, wildcards.dataset, wildcards.method))


def pretrain_inputs(wildcards):
    inputs = {"meta": f"{decode_dir(wildcards.dataset)}/meta.json"}
    if GRID.uses_mined(wildcards.method):
        inputs["mined"] = f"{RESULTS}/mine/{wildcards.dataset}/seed{wildcards.seed}/false_negatives.npz"
    return inputs


def mined_arg(wildcards, input):
    return f"--mined {input.mined}" if GRID.uses_mined(wildcards.method) else ""


def warmup_encoder(wildcards):
    return encoder_path(wildcards.dataset, GRID.warmup_method, wildcards.seed)


def section_cfg(stage):
    return as_json(config[stage])


def analysed_encoders(dataset):
    """(method, seed, checkpoint) of every encoder analyse describes: the pretrained ones, then the matched
    supervised snapshots (their match classifier's encoder: claim C2 at matched clean accuracy)."""
    runs = [(m, s, encoder_path(dataset, m, s)) for m, s in sorted(GRID.runs())]
    if GRID.matched_method:
        runs += [(GRID.matched_method, s, f"{RESULTS}/match/{dataset}/seed{s}/classifier.pt") for s in GRID.matched_seeds]
    return runs


def dataset_encoders(wildcards):
    return [path for _, _, path in analysed_encoders(wildcards.dataset)]


def encoder_args(wildcards):
    """Sorted, so that reordering methods in the config does not look like a change."""
    return " ".join(f"--encoder {m}:{s}:{path}" for m, s, path in analysed_encoders(wildcards.dataset))


def evaluate_cfg(wildcards):
    return as_json(study.evaluate_slice(config, wildcards.dataset))


def finetune_cfg(wildcards):
    return as_json(study.finetune_slice(config, wildcards.protocol))


def classifier_input(wildcards):
    """The classifier evaluate attacks: finetune's, or the match stage's for the matched supervised pseudo-method."""
    if wildcards.method == GRID.matched_method:
        return f"{RESULTS}/match/{wildcards.dataset}/seed{wildcards.seed}/classifier.pt"
    return f"{study.run_dir('finetune', wildcards.dataset, wildcards.method, wildcards.seed, wildcards.protocol)}/classifier.pt"


def matched_snapshots(wildcards):
    return f"{RESULTS}/pretrain/{wildcards.dataset}/{config['report']['supervised_method']}/seed{wildcards.seed}/snapshots.pt"


def matched_target(wildcards):
    return f"{study.run_dir('finetune', wildcards.dataset, config['report']['csl_method'], wildcards.seed, 'slf')}/metrics.json"


def match_cfg():
    return as_json({"finetune": study.finetune_slice(config, "slf"), "match": config["match"]})


def report_inputs():
    """The files of the job graph (`Grid.jobs`) the report reads, by stage."""
    return GRID.report_inputs()


def final_outputs():
    """Every file of the report rule: Snakemake reruns a job for a missing output only when that output is requested."""
    return list(rules.report.output)


# ---- decode helpers (moved from decode.smk: `snakemake --lint` wants no functions next to rules) ----
from pipeline.datasets import check_layout


def all_cores(wildcards):
    """Threads of a job that may use the whole machine: --cores N, or 1 without --cores.

    `threads: workflow.cores` fails whenever Snakemake runs without --cores (--unlock,
    --report, --lint): reading `workflow.cores` then raises "Workflow requires a total
    number of cores". A job never needs more threads than --cores anyway (Snakemake caps them).
    """
    return workflow.resource_settings.cores or 1


def check_dataset_layouts():
    """A user dataset not decoded yet must be where its root says: fail before any job, naming it.

    Embedded datasets come from the embed rule; a decoded one no longer needs its raw files.
    """
    for ds in DATASETS:
        section = config["decode"][ds]
        embedded = section["root"].startswith(f"{RESULTS}/embed/")
        if section["source"] == "sklearn_digits" or embedded or os.path.exists(f"{decode_dir(ds)}/meta.json"):
            continue
        try:
            check_layout(section["source"], section["root"], section["fold"], section["download"])
        except FileNotFoundError as error:
            config_error(f"decode.{ds}.root", str(error))


check_dataset_layouts()


def decoded_arrays(splits=("train", "test")):
    """Input function: the decode arrays a stage reads besides meta.json, declared so that a
    replaced or damaged array reruns the stage, whose checksum check then names the file."""

    def arrays(wildcards):
        return [f"{decode_dir(wildcards.dataset)}/{s}_{part}.npy" for s in splits for part in ("x", "y")]

    return arrays


# ---- the HTML report's first screen ----------------------------------------------------------
def report_description():
    """The `snakemake --report` landing page: workflow/report/workflow.rst, followed by the primary claims'
    verdicts when results/report/claims.csv exists (written next to the run's metadata, .snakemake/)."""
    base = os.path.join(workflow.basedir, "workflow/report/workflow.rst")
    claims = Path(RESULTS) / "report" / "claims.csv"
    if not claims.is_file():
        return base
    from pipeline.readme_results import landing_rst

    try:
        verdicts = landing_rst(claims.parent)
    except (OSError, ValueError, KeyError) as error:  # an unreadable table: the page without it, and why
        verdicts = f"\n(The claims table {claims} could not be read: {error}.)\n"
    landing = Path(".snakemake") / "report" / "landing.rst"
    landing.parent.mkdir(parents=True, exist_ok=True)
    question, _, rest = Path(base).read_text().partition("\n\n")  # the question, its verdicts, then what ran
    partial = landing.with_name(f".landing.{os.getpid()}.rst")  # every job parses this file: no torn page
    partial.write_text(f"{question}\n{verdicts}\n{rest}")
    os.replace(partial, landing)
    return str(landing.resolve())


# ---- warm interpreter (pipeline/warm/) -------------------------------------------------------
# A local run starts one server that has imported torch once; each job's
# `python -m pipeline.warm pipeline.<stage>` forks from it instead of paying ~3.5 s of imports.
# Dry runs, --touch, cluster executors and jobs on other hosts run fresh, as does PIPELINE_WARM=0.
from pipeline import warm as warm_interpreter  # torch-free

# ---- the terminal (pipeline/terminal.py) ---------------------------------------------------------
# One line per job start and end with an ETA instead of Snakemake's per-job banners; dry runs keep them.
from pipeline import terminal  # torch-free

if workflow.is_main_process and not getattr(workflow.output_settings, "dryrun", True):  # workflow.dryrun is unset at parse time
    terminal.install(Path(RESULTS) / "benchmarks")


onstart:
    if not IN_CONDA:  # the server runs Snakemake's interpreter, not the rules' environment
        warm_interpreter.start_for_workflow(workflow, PYTHON)


onsuccess:
    warm_interpreter.stop()
    if not workflow.dryrun:  # where to look, once everything is built
        print(
            f"\nDone. Results: {RESULTS}/report/report.md (claims first; tables and plots beside it in {RESULTS}/report/).\n"
            "One HTML file with everything: snakemake --report report.html",
            file=sys.stderr,
        )


onerror:
    warm_interpreter.stop()
    print(
        f"\nA job failed: its log is named above (the first line of each log is the job's command; {RESULTS}/logs/).", file=sys.stderr
    )
