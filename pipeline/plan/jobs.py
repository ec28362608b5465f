"""The study's jobs and their dependencies, from the workflow's own grid (`pipeline.grid`)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pipeline.grid import RESULTS, Grid, expand_mechanism
from pipeline.plan.anchors import SCHEMA


# ---- the study grid -----------------------------------------------------------------------------
def load_study(path: str | Path) -> dict:
    """The study file with the schema's defaults filled in, as the Snakefile validates it
    (`snakemake.utils.validate(..., set_default=True)`; without Snakemake, e.g. on a bare GPU
    node, the same defaults through jsonschema alone)."""
    config = yaml.safe_load(Path(path).read_text())
    try:
        from snakemake.utils import validate
    except ImportError:
        fill_defaults(config)
    else:
        validate(config, str(SCHEMA), set_default=True)
    expand_mechanism(config)  # the mechanism's levers are methods of their own, as the Snakefile sees them
    return config


def fill_defaults(config: dict, schema: str | Path = SCHEMA, set_default: bool = True) -> None:
    """Validate `config` against the schema in place, inserting every missing key's `default`
    before descending into it (what Snakemake's set_default does); set_default=False only validates."""
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict) and set_default:
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base(validator, props, instance, schema)

    cls = validators.extend(Draft202012Validator, {"properties": properties})
    cls(yaml.safe_load(Path(schema).read_text())).validate(config)


def method_seeds(config: dict, method: str) -> list[int]:
    return config["pretrain"]["methods"][method]["seeds"] or config["seeds"]


def matched_method(config: dict) -> str | None:
    return Grid.from_config(config).matched_method


def study_jobs(config: dict) -> list[dict]:
    """Every job of the study, from the workflow's own grid (`pipeline.grid`): dicts with `stage`,
    `dataset`, `method`, `seed`, `protocol` (None where a stage has no such wildcard) and `deps`
    (ids of the jobs it needs, as the rules' inputs); the id is `stage:dataset:method:seed:protocol`."""
    grid = Grid.from_config(config)
    jobs: list[dict] = []

    def add(stage, dataset=None, method=None, seed=None, protocol=None, deps=()):
        job = {"stage": stage, "dataset": dataset, "method": method, "seed": seed, "protocol": protocol, "deps": list(deps)}
        job["id"] = ":".join("" if v is None else str(v) for v in (stage, dataset, method, seed, protocol))
        jobs.append(job)
        return job["id"]

    pid = lambda d, m, s: f"pretrain:{d}:{m}:{s}:"  # noqa: E731
    fid = lambda d, m, s, p: f"finetune:{d}:{m}:{s}:{p}"  # noqa: E731
    report_deps = []
    for name in grid.embeds:
        add("embed", name)
    for d in grid.datasets:
        root = config["decode"][d].get("root", "")
        decode = add("decode", d, deps=[f"embed:{n}:::" for n in grid.embeds if root == f"{RESULTS}/embed/{n}"])
        for s in grid.mined_seeds():
            report_deps.append(add("mine", d, seed=s, deps=[pid(d, grid.warmup_method, s)]))
        for m, s in grid.runs():
            deps = [decode] + ([f"mine:{d}::{s}:"] if grid.uses_mined(m) else [])
            report_deps.append(add("pretrain", d, m, s, deps=deps))
        for m, s, p in grid.protocol_runs():
            report_deps.append(add("finetune", d, m, s, p, deps=[pid(d, m, s)]))
        sup, csl = config["report"]["supervised_method"], config["report"]["csl_method"]
        for s in grid.matched_seeds:
            report_deps.append(add("match", d, seed=s, deps=[pid(d, sup, s), fid(d, csl, s, "slf")]))
        for m, s, p in grid.evaluate_runs():
            model = f"match:{d}::{s}:" if m == grid.matched_method else fid(d, m, s, p)
            report_deps.append(add("evaluate", d, m, s, p, deps=[model]))
        report_deps.append(add("analyse", d, deps=[pid(d, m, s) for m, s in grid.runs()]))
    add("report", deps=report_deps)
    return jobs
