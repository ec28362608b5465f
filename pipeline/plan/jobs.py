"""The study's jobs and their dependencies, from the workflow's own grid (`pipeline.grid`)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pipeline.grid import Grid, expand_mechanism
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
    """Every job of the study, from the workflow's own job graph (`pipeline.grid.Grid.jobs`), as dicts
    with `stage`, `dataset`, `method`, `seed`, `protocol` (None where a stage has no such wildcard),
    `deps` (ids of the jobs it needs) and `id` (`stage:dataset:method:seed:protocol`)."""
    return [{"stage": j.stage, "dataset": j.dataset, "method": j.method, "seed": j.seed, "protocol": j.protocol,
             "deps": list(j.deps), "id": j.id} for j in Grid.from_config(config).jobs()]
