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

    def jobs(self) -> list[tuple[str, str]]:
        """Every job as (stage, job id); the id is the path of its log and benchmark under the stage."""
        out = [("embed", name) for name in self.embeds]
        for ds in self.datasets:
            out.append(("decode", ds))
            out += [("pretrain", f"{ds}/{m}/seed{s}") for m, s in self.runs()]
            out += [("mine", f"{ds}/seed{s}") for s in self.mined_seeds()]
            out += [("finetune", f"{ds}/{m}/seed{s}/{p}") for m, s, p in self.protocol_runs()]
            out += [("match", f"{ds}/seed{s}") for s in self.matched_seeds]
            out += [("evaluate", f"{ds}/{m}/seed{s}/{p}") for m, s, p in self.evaluate_runs()]
            out.append(("analyse", ds))
        out.append(("report", "report"))
        return out

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
    return {"matched_method": f"{sup}_matched", "matched_seeds": seeds}


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


# ---- cross-key checks -------------------------------------------------------------------
def check_references(config: dict) -> None:
    """Cross-key checks the JSON schema cannot express; each error names the offending key."""
    methods_cfg = config["pretrain"]["methods"]
    methods = list(methods_cfg)
    seeds = config["seeds"]
    for i, ds in enumerate(config["datasets"]):
        if ds not in config["decode"]:
            config_error(f"datasets[{i}]", f"'{ds}' has no entry under decode: (have {sorted(config['decode'])})")
    if not methods:
        config_error("pretrain.methods", "no pretraining method configured")
    for key in ("supervised_method", "csl_method"):
        if config["report"][key] not in methods:
            config_error(f"report.{key}", f"'{config['report'][key]}' is not one of pretrain.methods {methods}")
    for name, m in methods_cfg.items():
        if (m.get("fn_recall", 1) != 1 or m.get("fn_precision", 1) != 1) and m.get("false_negatives") != "oracle":
            config_error(f"pretrain.methods.{name}.fn_recall",
                         "fn_recall / fn_precision thin and dilute the oracle's mask: they need false_negatives: oracle")
    _check_mining(config, methods_cfg, seeds)
    _check_claims(config, methods)
    for ds in config["datasets"]:
        root = config["decode"][ds]["root"]
        name = embedded_name(root)
        if name is not None and name not in config["embed"]:
            config_error(f"decode.{ds}.root", f"{root} is under {RESULTS}/embed but embed: has no '{name}'")
    run_seeds = {s for m in methods_cfg.values() for s in m.get("seeds") or seeds}
    for name, entry in config["finetune"]["protocols"].items():
        unknown = [m for m in entry.get("methods", []) if m not in methods]
        if unknown:
            config_error(f"finetune.protocols.{name}.methods", f"{unknown} are not pretrain.methods {methods}")
        unused = set(entry.get("seeds", [])) - run_seeds
        if unused:
            config_error(f"finetune.protocols.{name}.seeds", f"seeds {sorted(unused)} are not run by any pretraining method")


def _check_mining(config: dict, methods_cfg: dict, seeds: list[int]) -> None:
    """Mined methods need a warm-up method that is configured, not itself mined, and runs their seeds."""
    if not any(m.get("false_negatives") == "mined" for m in methods_cfg.values()):
        return
    warmup = config["mine"]["warmup_method"]
    if warmup not in methods_cfg:
        config_error("mine.warmup_method", f"'{warmup}' is not one of pretrain.methods {list(methods_cfg)}")
    if methods_cfg[warmup].get("false_negatives") == "mined":
        config_error("mine.warmup_method", f"'{warmup}' itself uses mined false negatives (a cycle)")
    warm_seeds = set(methods_cfg[warmup].get("seeds") or seeds)
    for name, m in methods_cfg.items():
        missing = set(m.get("seeds") or seeds) - warm_seeds
        if m.get("false_negatives") == "mined" and missing:
            config_error(f"pretrain.methods.{name}.seeds", f"seeds {sorted(missing)} have no {warmup} warm-up run to mine from")


def _check_claims(config: dict, methods: list[str]) -> None:
    """The claims' roles name configured methods; the match stage has snapshots to match from."""
    report = config["report"]
    for key in ("oracle_methods", "mined_methods"):
        for i, m in enumerate(report[key]):
            if m not in methods:
                config_error(f"report.{key}[{i}]", f"'{m}' is not one of pretrain.methods {methods}")
    for variant, base in report["adversarial_pairs"].items():
        for m in (variant, base):
            if m not in methods:
                config_error(f"report.adversarial_pairs.{variant}", f"'{m}' is not one of pretrain.methods {methods}")
    for key in ("supcon_method", "random_init_method"):
        if report.get(key) is not None and report[key] not in methods:
            config_error(f"report.{key}", f"'{report[key]}' is not one of pretrain.methods {methods}")
    protocol = report.get("adversarial_protocol")
    if protocol is not None and protocol not in config["finetune"]["protocols"]:
        config_error("report.adversarial_protocol",
                     f"'{protocol}' is not one of finetune.protocols {list(config['finetune']['protocols'])}")
    if report["claims_protocol"] not in config["finetune"]["protocols"]:
        config_error("report.claims_protocol", f"'{report['claims_protocol']}' is not one of finetune.protocols "
                                               f"{list(config['finetune']['protocols'])}")
    sup = report["supervised_method"]
    if config["match"]["enabled"]:
        if config["pretrain"]["methods"][sup].get("snapshots", 0) < 2:
            config_error(f"pretrain.methods.{sup}.snapshots", "the match stage (match.enabled) needs at least 2 snapshots of the "
                                                              "supervised pretraining to choose from")
        if "slf" not in config["finetune"]["protocols"]:
            config_error("match.enabled", "the match stage compares SLF clean accuracies: finetune.protocols needs slf")
        if f"{sup}_matched" in methods:
            config_error(f"pretrain.methods.{sup}_matched", "the name is taken by the match stage's pseudo-method")
