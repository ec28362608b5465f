"""The study grid, in one place: which jobs exist, what each job receives, and the cross-key checks.

Torch-free: the Snakefile (`workflow/rules/common.smk`) builds the DAG from it, the report stage reads
the same grid back from JSON, and `pipeline.plan` forecasts its cost.

A study runs, per dataset:
    pretrain   one job per (method, seed): a method's own `seeds`, else the study's `seeds`
    mine       one job per seed that a mined-false-negative method runs (warm-up encoder of that seed)
    finetune   one job per (method, seed, protocol) that the protocol covers (its `methods` and
    evaluate   `seeds`, else all), the same set for both stages
    analyse    one job per dataset (every encoder of that dataset)
plus one embed job per embedded dataset and one report job.

What a job receives (`*_slice`) is its own section of the config, minus the grid-only lists
(`GRID_ONLY`): which seeds a method runs and which methods and seeds a protocol covers decide which
jobs exist, not what a job computes, so editing them never reruns an existing job.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.errors import GridError
from pipeline.modalities import SOURCE_MODALITY

RESULTS = "results"

# Keys that only say which jobs exist; blanked in the per-job slices (an empty list means "all").
GRID_ONLY = {"pretrain.methods.<name>": ("seeds",), "finetune.protocols.<name>": ("methods", "seeds")}


def config_error(key: str, message: str) -> None:
    raise GridError(f"config error at '{key}': {message}")


def embedded_name(root: str) -> str | None:
    """The embed entry a decode root points into (results/embed/<name>), else None."""
    parts = Path(root).parts
    return parts[2] if len(parts) == 3 and parts[:2] == (RESULTS, "embed") else None


@dataclass(frozen=True)
class Job:
    """One job of the study's DAG. Embed jobs carry their entry's name in `dataset`."""

    stage: str
    dataset: str | None = None
    method: str | None = None
    seed: int | None = None
    protocol: str | None = None
    deps: tuple[str, ...] = ()  # ids of the jobs whose outputs it reads

    @property
    def id(self) -> str:
        """`stage:dataset:method:seed:protocol`, empty where the stage has no such wildcard."""
        return ":".join("" if v is None else str(v) for v in (self.stage, self.dataset, self.method, self.seed, self.protocol))

    @property
    def name(self) -> str:
        """The job's path under its stage, as its log and benchmark files are named."""
        if self.stage == "report":
            return "report"
        seed = None if self.seed is None else f"seed{self.seed}"
        return "/".join(v for v in (self.dataset, self.method, seed, self.protocol) if v is not None)

    def record(self, results: str | Path = RESULTS) -> str | None:
        """The file of this job that the report reads (None: embed and report)."""
        if self.stage in ("embed", "report"):
            return None
        files = {"decode": "meta.json", "mine": "quality.json", "analyse": "representation.json", "evaluate": "robustness.json"}
        return f"{results}/{self.stage}/{self.name}/{files.get(self.stage, 'metrics.json')}"


@dataclass(frozen=True)
class Grid:
    """Which dataset x method x seed x protocol jobs a study runs. Lists keep config order."""

    datasets: dict[str, str]  # name -> modality ("image" or "video")
    embeds: list[str]  # embed entries the datasets read (results/embed/<name>)
    methods: list[str]
    seeds: list[int]  # the study's seeds
    method_seeds: dict[str, list[int]]  # resolved: the seeds each method runs
    protocols: list[str]
    protocol_methods: dict[str, list[str]]  # resolved: the methods each protocol covers
    protocol_seeds: dict[str, list[int]]  # a protocol's own seed filter ([] = every seed of a method)
    mined_methods: list[str]  # methods that read mined false negatives
    warmup_method: str  # the encoder the mine stage reads
    matched_method: str | None = None  # supervised at the CSL model's clean accuracy (stage `match`), if run
    matched_seeds: list[int] = field(default_factory=list)
    mechanism: dict = field(default_factory=dict)  # the manipulations' methods (`mechanism_methods`); {} = none
    embed_of: dict[str, str] = field(default_factory=dict)  # dataset -> the embed entry its decode reads
    matched_from: list[str] = field(default_factory=list)  # [supervised, csl]: what the match stage reads

    @classmethod
    def from_config(cls, config: dict) -> Grid:
        """The grid of a validated config (schema defaults filled in)."""
        methods_cfg = config["pretrain"]["methods"]
        methods = list(methods_cfg)
        protocols_cfg = config["finetune"]["protocols"]
        return cls(
            datasets={ds: SOURCE_MODALITY[config["decode"][ds]["source"]] for ds in config["datasets"] if ds in config["decode"]},
            embeds=[name for ds in config["datasets"] if ds in config["decode"]
                    if (name := embedded_name(config["decode"][ds]["root"])) is not None],
            embed_of={ds: name for ds in config["datasets"] if ds in config["decode"]
                      if (name := embedded_name(config["decode"][ds]["root"])) is not None},
            methods=methods,
            seeds=list(config["seeds"]),
            method_seeds={m: list(methods_cfg[m].get("seeds") or config["seeds"]) for m in methods},
            protocols=list(protocols_cfg),
            protocol_methods={p: [m for m in methods if not protocols_cfg[p].get("methods") or m in protocols_cfg[p]["methods"]]
                              for p in protocols_cfg},
            protocol_seeds={p: list(protocols_cfg[p].get("seeds") or []) for p in protocols_cfg},
            mined_methods=[m for m in methods if methods_cfg[m].get("false_negatives") == "mined"],
            warmup_method=config["mine"]["warmup_method"],
            **matched_part(config),
            mechanism=mechanism_methods(config),
        )

    @classmethod
    def from_dict(cls, data: dict) -> Grid:
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    # ---- which jobs exist ----------------------------------------------------------------
    def evaluated_methods(self) -> list[str]:
        """Every method with evaluate results: the pretraining methods, then the matched supervised pseudo-method."""
        return self.methods + ([self.matched_method] if self.matched_method else [])

    def seeds_of(self, method: str, protocol: str | None = None) -> list[int]:
        """A method's seeds, restricted to a protocol's own `seeds` when it sets them."""
        if method == self.matched_method:
            return list(self.matched_seeds) if protocol in (None, "slf") else []
        seeds = self.method_seeds[method]
        chosen = self.protocol_seeds.get(protocol) if protocol else None
        return [s for s in seeds if s in chosen] if chosen else list(seeds)

    def methods_of(self, protocol: str) -> list[str]:
        return list(self.protocol_methods[protocol])

    def protocols_of(self, method: str) -> list[str]:
        if method == self.matched_method:
            return ["slf"]
        return [p for p in self.protocols if method in self.protocol_methods[p]]

    def uses_mined(self, method: str) -> bool:
        return method in self.mined_methods

    def runs(self) -> list[tuple[str, int]]:
        """Every (method, seed) pretraining run, in config order."""
        return [(m, s) for m in self.methods for s in self.method_seeds[m]]

    def protocol_runs(self) -> list[tuple[str, int, str]]:
        """Every (method, seed, protocol) finetune and evaluate job, protocols first."""
        return [(m, s, p) for p in self.protocols for m in self.protocol_methods[p] for s in self.seeds_of(m, p)]

    def mined_seeds(self) -> list[int]:
        return sorted({s for m, s in self.runs() if self.uses_mined(m)})

    def evaluate_runs(self) -> list[tuple[str, int, str]]:
        """Every evaluate job: the finetune jobs plus the matched supervised classifier (protocol slf)."""
        return self.protocol_runs() + [(self.matched_method, s, "slf") for s in self.matched_seeds if self.matched_method]

    def jobs(self) -> list[Job]:
        """The study's job graph, the one enumeration of it: every job the rules make, each with the ids
        of the jobs whose outputs it reads, in an order where a job follows its dependencies. The
        Snakefile's report inputs, the cost table and the forecast (`pipeline.plan`) all read it."""
        out = [Job("embed", name) for name in self.embeds]
        pid = lambda d, m, s: Job("pretrain", d, m, s).id  # noqa: E731
        for d in self.datasets:
            embed = [Job("embed", self.embed_of[d]).id] if d in self.embed_of else []
            out.append(decode := Job("decode", d, deps=tuple(embed)))
            out += [Job("pretrain", d, m, s, deps=(decode.id,)) for m, s in self.runs() if not self.uses_mined(m)]
            out += [Job("mine", d, seed=s, deps=(pid(d, self.warmup_method, s),)) for s in self.mined_seeds()]
            out += [Job("pretrain", d, m, s, deps=(decode.id, Job("mine", d, seed=s).id)) for m, s in self.runs() if self.uses_mined(m)]
            out += [Job("finetune", d, m, s, p, deps=(pid(d, m, s),)) for m, s, p in self.protocol_runs()]
            if self.matched_method:
                sup, csl = self.matched_from
                out += [Job("match", d, seed=s, deps=(pid(d, sup, s), Job("finetune", d, csl, s, "slf").id)) for s in self.matched_seeds]
            model = lambda d, m, s, p: Job("match", d, seed=s) if m == self.matched_method else Job("finetune", d, m, s, p)  # noqa: E731
            out += [Job("evaluate", d, m, s, p, deps=(model(d, m, s, p).id,)) for m, s, p in self.evaluate_runs()]
            matched = [Job("match", d, seed=s).id for s in self.matched_seeds] if self.matched_method else []
            out.append(Job("analyse", d, deps=tuple(pid(d, m, s) for m, s in self.runs()) + tuple(matched)))  # the matched snapshots too
        out.append(Job("report", deps=tuple(j.id for j in out if j.stage not in ("embed", "decode"))))
        return out

    def report_inputs(self, results: str | Path = RESULTS) -> dict[str, list[str]]:
        """stage -> the files of the graph's jobs the report reads (decode's meta.json: the test split's size)."""
        inputs: dict[str, list[str]] = {}
        for job in self.jobs():
            if (path := job.record(results)) is not None:
                inputs.setdefault(job.stage, []).append(path)
        return inputs

    def plot_view(self) -> tuple[str, list[str]]:
        """The protocol the plots show and its methods: the first protocol covering every method (so
        each method appears), else the first protocol."""
        full = [p for p in self.protocols if set(self.protocol_methods[p]) >= set(self.methods)]
        first = full[0] if full else self.protocols[0]
        return first, self.methods_of(first)


def matched_part(config: dict) -> dict:
    """The matched-clean-accuracy pseudo-method and its seeds (both ends of the gap ran them), when enabled."""
    if not config["match"]["enabled"]:
        return {}
    sup, csl = config["report"]["supervised_method"], config["report"]["csl_method"]
    methods_cfg = config["pretrain"]["methods"]
    seeds = [s for s in (methods_cfg[sup].get("seeds") or config["seeds"]) if s in (methods_cfg[csl].get("seeds") or config["seeds"])]
    return {"matched_method": f"{sup}_matched", "matched_seeds": seeds, "matched_from": [sup, csl]}


# ---- paths ------------------------------------------------------------------------------
def decode_dir(dataset: str, results: str | Path = RESULTS) -> str:
    return f"{results}/decode/{dataset}"


def encoder_path(dataset: str, method: str, seed: int, results: str | Path = RESULTS) -> str:
    return f"{results}/pretrain/{dataset}/{method}/seed{seed}/encoder.pt"


def run_dir(stage: str, dataset: str, method: str, seed: int, protocol: str, results: str | Path = RESULTS) -> str:
    return f"{results}/{stage}/{dataset}/{method}/seed{seed}/{protocol}"


def eval_path(dataset: str, method: str, seed: int, protocol: str, results: str | Path = RESULTS) -> str:
    return f"{run_dir('evaluate', dataset, method, seed, protocol, results)}/robustness.json"


def benchmark_path(stage: str, job: str, results: str | Path = RESULTS) -> str:
    return f"{results}/benchmarks/{stage}/{job}.tsv"


# ---- the mechanism study: manipulations as ordinary methods ----------------------------------
def number_tag(value: float) -> str:
    """A number as a method-name part: 0.25 -> '0p25', 1.0 -> '1' (names allow [A-Za-z0-9_] only)."""
    return f"{value:g}".replace(".", "p").replace("-", "m")


def base_temperature(config: dict, base: dict) -> float | None:
    """The base method's tau: its own, else its modalities' (None when the study's modalities disagree)."""
    if base.get("temperature") is not None:
        return float(base["temperature"])
    modalities = {SOURCE_MODALITY[config["decode"][ds]["source"]] for ds in config["datasets"] if ds in config["decode"]}
    values = {float(config["pretrain"].get(m, {}).get("temperature", 0.5)) for m in modalities}
    return values.pop() if len(values) == 1 else None


def mechanism_methods(config: dict) -> dict:
    """The methods of the `mechanism:` section's manipulations of `base_method`, with their levels.

    {"base": name, "temperature": [[tau, method], ...], "dose": [[f, method], ...],
     "miner": [[recall, precision, method], ...], "compute_matched": name or None}, {} without a base method. A level equal to the
    base's (its tau; dose 0) is the base method itself; a miner cell at precision 1 is the dose
    method of its recall (the same run, not a copy). Every list in config order.
    """
    section = config.get("mechanism") or {}
    base = section.get("base_method")
    if not base:
        return {}
    tau = base_temperature(config, config["pretrain"]["methods"].get(base, {}))
    temperature = [[t, base if tau is not None and abs(t - tau) < 1e-12 else f"{base}_tau{number_tag(t)}"]
                   for t in section.get("temperatures", [])]
    dose_name = lambda f: base if f == 0 else f"{base}_dose{number_tag(f)}"  # noqa: E731
    dose = [[f, dose_name(f)] for f in section.get("doses", [])]
    miner = [[r, p, dose_name(r) if p == 1 else f"{base}_sim_r{number_tag(r)}_p{number_tag(p)}"]
             for r in section.get("miner_recalls", []) for p in section.get("miner_precisions", [])]
    return {"base": base, "temperature": temperature, "dose": dose, "miner": miner,
            "compute_matched": section.get("compute_matched_method")}


def expand_mechanism(config: dict) -> None:
    """Add the mechanism's generated methods to `pretrain.methods` (in place; idempotent).

    Each is the base method (schema defaults filled in) with one lever moved: `temperature`,
    or the oracle false-negative mask thinned to the dose (`fn_recall`) and diluted to a
    precision (`fn_precision`, the simulated miner). Runs after the schema has filled defaults.
    """
    found = mechanism_methods(config)
    if not found:
        return
    methods = config["pretrain"]["methods"]
    base = found["base"]
    if base not in methods:
        config_error("mechanism.base_method", f"'{base}' is not one of pretrain.methods {list(methods)}")
    entry = methods[base]
    if entry.get("loss") != "nt_xent" or entry.get("false_negatives", "none") != "none":
        config_error("mechanism.base_method", f"'{base}' must be a plain SimCLR method (loss nt_xent, false_negatives none)")
    generated: dict[str, dict] = {}
    for t, name in found["temperature"]:
        if name != base:
            generated[name] = {**entry, "temperature": t}
    oracle = {"false_negatives": "oracle", "fn_mode": "eliminate"}
    for r, p, name in found["miner"] + [[f, 1.0, name] for f, name in found["dose"]]:
        if name != base:
            generated[name] = {**entry, **oracle, "fn_recall": r, "fn_precision": p}
    matched = found["compute_matched"]
    if matched is not None and matched not in methods:
        config_error("mechanism.compute_matched_method", f"'{matched}' is not one of pretrain.methods {list(methods)}")
    for name, cfg in generated.items():
        if name in methods and methods[name] != cfg:
            config_error(f"pretrain.methods.{name}", "this name is generated by mechanism: (rename the method)")
        methods[name] = cfg


# ---- what each job receives -------------------------------------------------------------
def pretrain_slice(config: dict, dataset: str, method: str) -> dict:
    """Device settings, the dataset's modality section and the method, without its grid-only `seeds`."""
    section = config["pretrain"]
    modality = SOURCE_MODALITY[config["decode"][dataset]["source"]]
    method_cfg = section["methods"][method]
    model = dict(section[modality])
    for key in ("epochs", "temperature"):  # a method's own schedule length and tau override the modality's
        if method_cfg.get(key) is not None:
            model[key] = method_cfg[key]
    return {"device": section["device"], "precision": section["precision"], "budget_mb": section["budget_mb"],
            "model": model, "method": {**method_cfg, "seeds": []}}


def finetune_slice(config: dict, protocol: str) -> dict:
    """The finetune section with `protocols` cut down to this job's entry, minus its grid-only lists:
    editing one protocol reruns only that protocol's jobs."""
    section = config["finetune"]
    entry = section["protocols"][protocol]
    return {**section, "protocols": {protocol: {**entry, "methods": [], "seeds": []}}}


def evaluate_slice(config: dict, dataset: str) -> dict:
    """The evaluate section as one dataset's job receives it: `pgd_steps_check.epsilons: primary` becomes
    the dataset's `report.primary_eps` (none listed: [], the largest eps). The check is read where the
    claims are; checking every eps would double the stage's cost for figures no claim reads."""
    section = copy.deepcopy(config["evaluate"])
    check = section["pgd_steps_check"]
    if check.get("epsilons") == "primary":
        primary = config["report"]["primary_eps"].get(dataset)
        check["epsilons"] = [primary] if primary is not None else []
    return section
