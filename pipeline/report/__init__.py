"""Stage `report`: the study's tables, gap analysis, plots and sanity checks.

Reads every evaluate / finetune / pretrain / mine / analyse output of the grid (paths
follow the workflow's layout) and writes into `--out`:
    robustness.csv     long table: dataset, method, protocol, seed, attack, eps, accuracy
    corruptions.csv    long table: dataset, method, protocol, seed, corruption, severity, accuracy
    summary.csv        mean, std and seed count per (dataset, method, protocol, attack, eps)
    gap.csv            share of the CSL-to-supervised robust-accuracy gap each variant closes
    representation.csv alignment, uniformity, class distances and margins per encoder
    cost.csv           wall time, max RSS, CPU time and device per job (Snakemake's benchmark files)
    report.md          all tables in Markdown, plus the checks section
    <dataset>_accuracy_vs_eps.png, <dataset>_gap_closed.png, <dataset>_uniformity.png,
    <dataset>_training.png (pretraining loss curves), <dataset>_corruptions.png (empty when no corruption ran)

Gap closed for a variant V at one attack and eps:
    (RA_V - RA_CSL) / (RA_SUP - RA_CSL)
computed from the seed means; the +- is the std over seeds of the same ratio computed
per seed (seeds paired by number). It is left empty where |RA_SUP - RA_CSL| < 0.5 %,
where the ratio is meaningless.

    python -m pipeline.report --cfg '<json of report>' --grid '<json>' --results results --out results/report
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline import grid as grid_paths
from pipeline.budget import eps_text
from pipeline.config import ReportConfig, from_json
from pipeline.grid import Grid
from pipeline.io import atomic_path, read_sealed
from pipeline.logs import stage_cli
from pipeline.report import claims, mechanism, trained
from pipeline.report import statistics as st
from pipeline.report.costs import cost_rows, peak_gpu_memory
from pipeline.report.tables import (
    accuracy_markdown,
    corruption_markdown,
    cost_markdown,
    gap_markdown,
    markdown_table,
    mean_std,
    method_cost_markdown,
    mining_markdown,
    representation_markdown,
)

MIN_GAP = 0.005  # below this supervised-vs-CSL gap, "share closed" is not reported


def plot_grid(grid: Grid) -> dict:
    """What the plots read: the protocol they show and its methods (`Grid.plot_view`), and the seeds."""
    protocol, methods = grid.plot_view()
    from pipeline.report.plots import method_styles

    styles = method_styles(grid.methods + ([grid.matched_method] if grid.matched_method else []))
    return {"protocols": [protocol], "methods": methods, "seeds": grid.seeds, "method_seeds": grid.method_seeds,
            "colours": {m: s["color"] for m, s in styles.items()}, "styles": styles}


def study_colours(grid: Grid) -> dict[str, tuple]:
    """One colour per method of the study (the matched supervised pseudo-method included), shared by every plot."""
    from pipeline.report.plots import method_colours

    return method_colours(grid.methods + ([grid.matched_method] if grid.matched_method else []))


def eval_path(results: Path, dataset: str, method: str, seed: int, protocol: str) -> Path:
    return Path(grid_paths.eval_path(dataset, method, seed, protocol, results))


def load_rows(results: Path, grid: Grid) -> tuple[list[dict], list[str]]:
    """Long-format accuracy rows and the evaluate-stage warnings, for every job of the grid."""
    rows, warnings = [], []
    for dataset in grid.datasets:
        for method in grid.evaluated_methods():
            for protocol in grid.protocols_of(method):
                for seed in grid.seeds_of(method, protocol):
                    path = eval_path(results, dataset, method, seed, protocol)
                    if not path.exists():  # a run by hand on a partial grid: flagged, not fatal
                        warnings.append(f"{dataset}/{method}/seed{seed}/{protocol}: missing {path}")
                        continue
                    r = read_sealed(path, "evaluate")
                    base = {"dataset": dataset, "method": method, "protocol": protocol, "seed": seed}
                    rows.append({**base, "attack": "clean", "eps": 0.0, "accuracy": r["clean_accuracy"], "samples": r["samples"],
                                 "clean_same_samples": r["clean_accuracy"]})
                    for attack, per_eps in r["attacks"].items():
                        rows += [{**base, "attack": attack, "eps": float(e), "accuracy": v["accuracy"], "samples": v["samples"],
                                  "clean_same_samples": v["clean_accuracy"]} for e, v in per_eps.items()]
                    warnings += [f"{dataset}/{method}/seed{seed}/{protocol}: {w}" for w in r["warnings"]]
    return rows, warnings


def summarise(rows: list[dict]) -> dict[tuple, tuple[float, float, int]]:
    """(dataset, method, protocol, attack, eps) -> (mean, std, seeds)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["method"], r["protocol"], r["attack"], r["eps"])].append(r["accuracy"])
    return {k: mean_std(v) for k, v in groups.items()}


def per_seed(rows: list[dict]) -> dict[tuple, float]:
    return {(r["dataset"], r["method"], r["protocol"], r["attack"], r["eps"], r["seed"]): r["accuracy"] for r in rows}


def gap_rows(rows: list[dict], grid: Grid, cfg: ReportConfig) -> list[dict]:
    """Share of the CSL-to-supervised gap each other method closes, per attack and eps."""
    summary: dict = defaultdict(lambda: (math.nan, math.nan, 0), summarise(rows))
    seeded: dict = defaultdict(lambda: math.nan, per_seed(rows))
    out = []
    keys = sorted({(r["dataset"], r["protocol"], r["attack"], r["eps"]) for r in rows if r["attack"] != "clean"})
    for dataset, protocol, attack, eps in keys:
        if not {cfg.supervised_method, cfg.csl_method} <= set(grid.methods_of(protocol)):
            continue  # this protocol does not run both ends of the gap
        sup = summary[(dataset, cfg.supervised_method, protocol, attack, eps)][0]
        csl = summary[(dataset, cfg.csl_method, protocol, attack, eps)][0]
        for method in grid.methods_of(protocol):
            if method in (cfg.supervised_method, cfg.csl_method, cfg.random_init_method):
                continue  # the two ends, and the untrained baseline, which closes no gap
            var = summary[(dataset, method, protocol, attack, eps)][0]
            share = (var - csl) / (sup - csl) if abs(sup - csl) >= MIN_GAP else math.nan
            seed_shares = []
            ends = (method, cfg.csl_method, cfg.supervised_method)
            for s in set.intersection(*(set(grid.seeds_of(m, protocol)) for m in ends)):
                ra_csl = seeded[(dataset, cfg.csl_method, protocol, attack, eps, s)]
                g = seeded[(dataset, cfg.supervised_method, protocol, attack, eps, s)] - ra_csl
                if abs(g) >= MIN_GAP:  # False for NaN (a missing seed) too
                    seed_shares.append((seeded[(dataset, method, protocol, attack, eps, s)] - ra_csl) / g)
            out.append({"dataset": dataset, "protocol": protocol, "attack": attack, "eps": eps, "method": method,
                        "ra_supervised": sup, "ra_csl": csl, "ra_method": var, "gap": sup - csl,
                        "share_closed": share, "share_closed_std": mean_std(seed_shares)[1], "seeds": len(seed_shares)})
    return out


def mask_unestablished_shares(gaps: list[dict], claim_rows: dict[str, list]) -> None:
    """A share of a gap is shown only where the claims establish the gap (C1a at that eps: >= 3 seeds, interval
    above 0); elsewhere it is undefined (a ratio over a gap indistinguishable from 0 is noise, e.g. -975 %)."""
    established = {(ds, r.eps) for ds, rows_ in claim_rows.items() for r in rows_
                   if r.claim == "C1a" and st.gap_established(r.interval)}
    for g in gaps:
        g["gap_established"] = (g["dataset"], g["eps"]) in established
        if not g["gap_established"]:
            g["share_closed"], g["share_closed_std"] = math.nan, math.nan


SPACES = ("backbone", "centred", "projection")


def representation_rows(results: Path, grid: Grid) -> list[dict]:
    """Per dataset and encoder: alignment, class distances and, per feature space, uniformity, within-class uniformity and margins."""
    out = []
    for dataset in grid.datasets:
        stats = read_sealed(results / "analyse" / dataset / "representation.json", "analyse")["encoders"]
        for key, s in stats.items():
            method, seed = key.split(":")
            t = s["test"]
            row = {"dataset": dataset, "method": method, "seed": int(seed), "space": t.get("space", "backbone"),
                   "alignment": math.nan if t["alignment"] is None else t["alignment"],
                   "uniformity": t["uniformity"], "uniformity_train": s["train"]["uniformity"],
                   "intra_class_distance": t["intra_class_distance"], "inter_class_distance": t["inter_class_distance"],
                   "margin_mean": t["margin"]["mean"], "margin_negative_share": t["margin"]["negative_share"]}
            for space in SPACES:
                sp = t.get("spaces", {}).get(space)
                row |= {f"uniformity_{space}": sp["uniformity"] if sp else math.nan,
                        f"within_class_uniformity_{space}": sp["within_class_uniformity"] if sp else math.nan,
                        f"margin_{space}": sp["margin"]["mean"] if sp else math.nan}
            out.append(row)
    return out


def mining_rows(results: Path, grid: Grid) -> list[dict]:
    out = []
    for dataset in grid.datasets:
        for seed in grid.mined_seeds():
            path = results / "mine" / dataset / f"seed{seed}" / "quality.json"
            if path.exists():
                q = read_sealed(path, "mine")
                candidates = q.get("candidates") or {q["algorithm"]: q}
                for algorithm, c in candidates.items():  # every algorithm measured on the same embeddings
                    out.append({"dataset": dataset, "seed": seed, "algorithm": algorithm, "used": algorithm == q["algorithm"],
                                "pair_precision": c["pair_precision"], "pair_recall": c["pair_recall"],
                                "x_chance": c.get("x_chance") or math.nan, "chance": q.get("chance", math.nan)})
    return out


def checks(rows: list[dict], eval_warnings: list[str], grid: Grid) -> list[str]:
    """Suspicious results, shown in the report instead of being hidden. Robust accuracy above the clean
    accuracy of the same samples is impossible and is flagged."""
    found = list(eval_warnings)
    found += [f"{r['dataset']}/{r['method']}/seed{r['seed']}/{r['protocol']} {r['attack']}@{r['eps']:g}: accuracy {r['accuracy']:.4f} "
              f"above the clean accuracy {r['clean_same_samples']:.4f} of the same {r['samples']} samples"
              for r in rows if r["accuracy"] > r["clean_same_samples"] + 1e-9]
    summary = summarise(rows)
    for (dataset, method, protocol, attack, eps), (_, _, n) in summary.items():
        if n < len(grid.seeds_of(method, protocol)):
            found.append(f"{dataset}/{method}/{protocol} {attack}@{eps}: {n} seeds, {len(grid.seeds_of(method, protocol))} configured")
    return found


def corruption_rows(results: Path, grid: Grid) -> list[dict]:
    """Long-format corruption accuracies from the evaluate outputs (absent when none were run)."""
    rows = []
    for dataset in grid.datasets:
        for method in grid.evaluated_methods():
            for protocol in grid.protocols_of(method):
                for seed in grid.seeds_of(method, protocol):
                    path = eval_path(results, dataset, method, seed, protocol)
                    per = read_sealed(path, "evaluate").get("corruptions", {}) if path.exists() else {}
                    rows += [{"dataset": dataset, "method": method, "protocol": protocol, "seed": seed, "corruption": name,
                              "severity": int(sev), "accuracy": r["accuracy"]} for name, by_sev in per.items() for sev, r in by_sev.items()]
    return rows


def cascade_of(results: Path, grid: Grid, dataset: str) -> tuple[bool, list[str]]:
    """Whether the dataset's attacks ran as a cascade, and in which order (from its first robustness file)."""
    for method in grid.evaluated_methods():
        for protocol in grid.protocols_of(method):
            for seed in grid.seeds_of(method, protocol):
                path = eval_path(results, dataset, method, seed, protocol)
                if path.exists():
                    r = read_sealed(path, "evaluate")
                    return bool(r.get("cascade")), list(r.get("cascade_order", []))
    return False, []


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        fields = list(dict.fromkeys(key for row in rows for key in row))  # every row's keys, first seen first
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def match_tolerance(results: Path, grid: Grid) -> float:
    """The match stage's tolerance, as recorded in its metrics (C1c flags seeds outside it); 0.02 when none ran."""
    for dataset in grid.datasets:
        for seed in grid.matched_seeds:
            path = results / "match" / dataset / f"seed{seed}" / "metrics.json"
            if path.exists():
                return float(read_sealed(path, "match")["tolerance"])
    return 0.02


def attack_strength_markdown(results: Path, grid: Grid, dataset: str, cfg: ReportConfig) -> str:
    """Do the attacks bite and converge? The steps check (the attack with twice its steps) per eps, over every model."""
    checks: dict[float, list[tuple[float, float]]] = defaultdict(list)
    attack, steps = "pgd", (0, 0)
    for method in grid.evaluated_methods():
        for seed in grid.seeds_of(method, cfg.claims_protocol):
            path = eval_path(results, dataset, method, seed, cfg.claims_protocol)
            if not path.exists():
                continue
            for label, rec in read_sealed(path, "evaluate").get("checks", {}).get("pgd_steps", {}).items():
                if isinstance(rec, dict) and "accuracy" in rec:
                    checks[float(label)].append(tuple(rec["accuracy"]))
                    attack, steps = rec.get("attack", "pgd"), tuple(rec["steps"])
    if not checks:
        return "No steps check ran (evaluate.pgd_steps_check.factor < 2).\n"
    name = {"pgd": "PGD", "apgd_ce": "APGD-CE"}.get(attack, attack)
    body = []
    for eps, pairs in sorted(checks.items()):
        changes = [abs(a - b) for a, b in pairs]
        body.append([eps_text(eps), f"{len(pairs)}", f"{100 * np.mean([a for a, _ in pairs]):.1f}",
                     f"{100 * np.mean([b for _, b in pairs]):.1f}", f"{100 * np.mean(changes):.2f}", f"{100 * max(changes):.1f}"])
    return (f"{name} with {steps[0]} steps against {steps[1]} steps with the same seed, on the same samples, for every model "
            f"of the claims protocol; the claims' numbers use {steps[0]}. A mean change under 1 point says the attack has "
            "converged; a model whose change exceeds the tolerance is listed under Checks.\n\n") + markdown_table(
        ["eps", "models", f"{name}-{steps[0]} accuracy (%)", f"{name}-{steps[1]} accuracy (%)", "mean change (points)",
         "largest change (points)"], body)


def run(cfg: ReportConfig, grid: Grid, results: Path, out: Path) -> dict:
    from pipeline.report import plots as report_plots

    rows, eval_warnings = load_rows(results, grid)
    summary = summarise(rows)
    gaps = gap_rows(rows, grid, cfg)
    rep = representation_rows(results, grid)
    mining = mining_rows(results, grid)
    found = checks(rows, eval_warnings, grid)
    write_csv(out / "robustness.csv", rows)
    corrupted = corruption_rows(results, grid)
    write_csv(out / "corruptions.csv", corrupted)
    key_names = ("dataset", "method", "protocol", "attack", "eps")
    write_csv(out / "summary.csv", [dict(zip(key_names, k, strict=True)) | {"mean": v[0], "std": v[1], "seeds": v[2]}
                                    for k, v in sorted(summary.items())])
    write_csv(out / "representation.csv", rep)
    costs = cost_rows(results, grid)
    write_csv(out / "cost.csv", costs)
    roles = claims.roles_from(cfg, grid.matched_method, match_tolerance(results, grid))
    claim_rows = {ds: claims.dataset_claims(results, grid, ds, roles) for ds in grid.datasets}
    training = trained.training_rows(results, grid, cfg)
    trained.flag_untrained_claims(claim_rows, trained.untrained_methods(training), grid, cfg.supervised_method)
    write_csv(out / "training.csv", training)
    mask_unestablished_shares(gaps, claim_rows)
    write_csv(out / "gap.csv", gaps)
    write_csv(out / "claims.csv", [claims.as_record(r) for rows_ in claim_rows.values() for r in rows_])
    mech = {ds: mechanism.section(results, grid, ds, cfg.claims_protocol, cfg.primary_eps.get(ds), cfg.csl_method) for ds in grid.datasets}
    for name, key in (("sensitivity", "sensitivity"), ("dose_response", "curves"), ("chain_slopes", "slopes"), ("miner_grid", "miners")):
        write_csv(out / f"{name}.csv", [r for sec in mech.values() for r in sec[key]])
    md = [f"# Results\n\nSupervised baseline: `{cfg.supervised_method}`; CSL method: `{cfg.csl_method}`.\n",
          "\n## Claims\n\nEach claim of the paper with its estimate, 95 % interval and verdict (supported / contradicted / "
          "inconclusive), per dataset; `claims.csv` has every row.\n"]
    for dataset, modality in grid.datasets.items():
        md.append(f"\n### {dataset} ({modality})\n\n" + (claims.markdown(claim_rows[dataset]) if claim_rows[dataset]
                                                         else "No claim could be computed (no per-sample outcomes).\n"))
    md.append(f"\n## Training checks\n\nEvery pretrained encoder must have levelled off (over the last {cfg.plateau_fraction:.0%} of its "
              f"epochs the loss fell by at most {cfg.plateau_tolerance:.0%} of its total fall, and the kNN accuracy rose by at most "
              "its measurement noise, max(2 points, one binomial se on the test split)) and beat the randomly initialised "
              f"encoder (`{cfg.random_init_method}`, same architecture and head) in "
              "clean accuracy, with a 95 % interval over seeds and test samples above 0. A failing encoder is flagged here and "
              "in every claim that uses it; `training.csv` has every seed.\n")
    for dataset in grid.datasets:
        md.append(f"\n### {dataset}\n\n{trained.training_markdown(training, dataset)}")
    md.append("\n## Mechanism\n\nThe paper's chain, link by link: false negatives -> uniform features with small class margins -> "
              "a representation that moves more under a perturbation -> lower robust accuracy.\n")
    for dataset in grid.datasets:
        eps = cfg.primary_eps.get(dataset)
        md.append(f"\n### {dataset}\n\n{mechanism.markdown(mech[dataset], dataset, eps)}")
        if grid.mechanism:
            at_eps = eps_text(eps) if eps is not None else "the largest eps"
            report_plots.dose_response(mech[dataset]["curves"], mech[dataset]["slopes"], dataset, mechanism.METRICS, at_eps,
                                       out / f"{dataset}_mechanism.png")
            report_plots.miner_grid(mech[dataset]["miners"], dataset, mech[dataset]["base"], at_eps, out / f"{dataset}_miner_grid.png")
    md.append("\n## Results by dataset\n\nAccuracies in %, mean ± std over seeds (n=1: one seed, no spread).\n")
    for dataset, modality in grid.datasets.items():
        cascade = cascade_of(results, grid, dataset)
        md.append(f"\n## {dataset} ({modality})\n\n### Accuracy under attack\n\n{accuracy_markdown(summary, dataset, grid, cascade)}")
        md.append(f"\n### Attack strength\n\n{attack_strength_markdown(results, grid, dataset, cfg)}")
        md.append(f"\n### Share of the {cfg.csl_method}-to-{cfg.supervised_method} gap closed (descriptive; the claims "
                  f"section has the intervals)\n\n{gap_markdown(gaps, dataset, rep)}")
        md.append(f"\n### Representation\n\n{representation_markdown(rep, dataset, grid)}")
        report_plots.accuracy_vs_eps(summary, dataset, plot_grid(grid), out / f"{dataset}_accuracy_vs_eps.png")
        report_plots.corruption_severity(corrupted, dataset, plot_grid(grid), out / f"{dataset}_corruptions.png")  # empty if none ran
        if any(r["dataset"] == dataset for r in corrupted):
            md.append(f"\n### Common corruptions (accuracy; mean over corruptions and severities, per corruption over "
                      f"severities, per severity over corruptions)\n\n{corruption_markdown(corrupted, dataset, grid)}")
        report_plots.gap_closed(gaps, dataset, study_colours(grid), out / f"{dataset}_gap_closed.png")
        representation = results / "analyse" / dataset / "representation.json"
        report_plots.class_distance_grid(read_sealed(representation, "analyse")["encoders"] if representation.exists() else {},
                                         dataset, out / f"{dataset}_heatmaps.png")
        report_plots.uniformity_vs_robust(rep, rows, dataset, plot_grid(grid), out / f"{dataset}_uniformity.png",
                                          cfg.primary_eps.get(dataset))
        report_plots.training_curves(results, dataset, grid, study_colours(grid), out / f"{dataset}_training.png")
    if mining:
        md.append("\n## False-negative mining quality (pair precision and recall against the true labels; "
                  "* = used for pretraining)\n\n" + mining_markdown(mining))
    if costs:
        md.append("\n## Cost (Snakemake benchmark files; wall seconds per job)\n\n" + cost_markdown(costs, peak_gpu_memory(results, grid)))
        md.append("\nPer method, the pretraining a seed costs; a mined method pays for its warm-up encoder and the mining too "
                  "(compare it with a base trained as long: `mechanism.compute_matched_method`).\n\n" + method_cost_markdown(costs, grid))
    md.append("\n## Checks\n\n" + ("\n".join(f"- {c}" for c in found) if found else "No suspicious results.") + "\n")
    write_text(out / "report.md", "".join(md))
    return {"rows": len(rows), "checks": found}


def main(argv: list[str] | None = None) -> None:
    parser = stage_cli("report", __doc__, argv, "JSON of the `report` section", threads=None)
    parser.add_argument("--grid", required=True, help="JSON of the study grid (pipeline.grid.Grid.to_json)")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    summary = run(from_json(ReportConfig, args.cfg, "report"), Grid.from_dict(json.loads(args.grid)), args.results, args.out)
    print(f"report: {summary['rows']} rows, {len(summary['checks'])} checks", file=sys.stderr)

