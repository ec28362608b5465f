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

import argparse
import csv
import io
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

from pipeline.config import ReportConfig, from_json
from pipeline.io import atomic_path, read_json
from pipeline.logs import log_header

MIN_GAP = 0.005  # below this supervised-vs-CSL gap, "share closed" is not reported


def mean_std(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std, n


def seeds_of(grid: dict, method: str, protocol: str | None = None) -> list[int]:
    """A method's configured seeds (the study's seeds unless the method sets its own), restricted
    to a fine-tuning protocol's own `seeds` when it sets them (expensive ALF/AFF on fewer seeds)."""
    seeds = grid.get("method_seeds", {}).get(method) or grid["seeds"]
    chosen = grid.get("protocol_seeds", {}).get(protocol) if protocol else None
    return [s for s in seeds if s in chosen] if chosen else seeds


def methods_of(grid: dict, protocol: str) -> list[str]:
    """The methods a fine-tuning protocol covers (ALF/AFF may cover only some), in grid order."""
    return grid.get("protocol_methods", {}).get(protocol) or grid["methods"]


def plot_grid(grid: dict) -> dict:
    """The grid the plots read (they show `protocols[0]`): the first protocol covering every method,
    so each method keeps its colour; else the first protocol with only its own methods."""
    full = [p for p in grid["protocols"] if set(methods_of(grid, p)) >= set(grid["methods"])]
    first = full[0] if full else grid["protocols"][0]
    return {**grid, "protocols": [first], "methods": methods_of(grid, first)}


def eval_path(results: Path, dataset: str, method: str, seed: int, protocol: str) -> Path:
    return results / "evaluate" / dataset / method / f"seed{seed}" / protocol / "robustness.json"


def load_rows(results: Path, grid: dict) -> tuple[list[dict], list[str]]:
    """Long-format accuracy rows and the evaluate-stage warnings, for every job of the grid."""
    rows, warnings = [], []
    for dataset in grid["datasets"]:
        for method in grid["methods"]:
            for protocol in [p for p in grid["protocols"] if method in methods_of(grid, p)]:
                for seed in seeds_of(grid, method, protocol):
                    path = eval_path(results, dataset, method, seed, protocol)
                    if not path.exists():  # a run by hand on a partial grid: flagged, not fatal
                        warnings.append(f"{dataset}/{method}/seed{seed}/{protocol}: missing {path}")
                        continue
                    r = read_json(path)
                    base = {"dataset": dataset, "method": method, "protocol": protocol, "seed": seed}
                    rows.append({**base, "attack": "clean", "eps": 0.0, "accuracy": r["clean_accuracy"]})
                    for attack, per_eps in r["attacks"].items():
                        rows += [{**base, "attack": attack, "eps": float(e), "accuracy": v["accuracy"]} for e, v in per_eps.items()]
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


def gap_rows(rows: list[dict], grid: dict, cfg: ReportConfig) -> list[dict]:
    """Share of the CSL-to-supervised gap each other method closes, per attack and eps."""
    summary: dict = defaultdict(lambda: (math.nan, math.nan, 0), summarise(rows))
    seeded: dict = defaultdict(lambda: math.nan, per_seed(rows))
    out = []
    keys = sorted({(r["dataset"], r["protocol"], r["attack"], r["eps"]) for r in rows if r["attack"] != "clean"})
    for dataset, protocol, attack, eps in keys:
        if not {cfg.supervised_method, cfg.csl_method} <= set(methods_of(grid, protocol)):
            continue  # this protocol does not run both ends of the gap
        sup = summary[(dataset, cfg.supervised_method, protocol, attack, eps)][0]
        csl = summary[(dataset, cfg.csl_method, protocol, attack, eps)][0]
        for method in methods_of(grid, protocol):
            if method in (cfg.supervised_method, cfg.csl_method):
                continue
            var = summary[(dataset, method, protocol, attack, eps)][0]
            share = (var - csl) / (sup - csl) if abs(sup - csl) >= MIN_GAP else math.nan
            seed_shares = []
            ends = (method, cfg.csl_method, cfg.supervised_method)
            for s in set.intersection(*(set(seeds_of(grid, m, protocol)) for m in ends)):
                ra_csl = seeded[(dataset, cfg.csl_method, protocol, attack, eps, s)]
                g = seeded[(dataset, cfg.supervised_method, protocol, attack, eps, s)] - ra_csl
                if abs(g) >= MIN_GAP:  # False for NaN (a missing seed) too
                    seed_shares.append((seeded[(dataset, method, protocol, attack, eps, s)] - ra_csl) / g)
            out.append({"dataset": dataset, "protocol": protocol, "attack": attack, "eps": eps, "method": method,
                        "ra_supervised": sup, "ra_csl": csl, "ra_method": var, "gap": sup - csl,
                        "share_closed": share, "share_closed_std": mean_std(seed_shares)[1], "seeds": len(seed_shares)})
    return out


def representation_rows(results: Path, grid: dict) -> list[dict]:
    out = []
    for dataset in grid["datasets"]:
        stats = read_json(results / "analyse" / dataset / "representation.json")["encoders"]
        for key, s in stats.items():
            method, seed = key.split(":")
            t = s["test"]
            out.append({"dataset": dataset, "method": method, "seed": int(seed), "alignment": t["alignment"],
                        "uniformity": t["uniformity"], "uniformity_train": s["train"]["uniformity"],
                        "intra_class_distance": t["intra_class_distance"], "inter_class_distance": t["inter_class_distance"],
                        "margin_mean": t["margin"]["mean"], "margin_negative_share": t["margin"]["negative_share"]})
    return out


def tsv_number(record: dict[str, str], key: str) -> float:
    """A number from a Snakemake benchmark row; NaN where Snakemake wrote NA or -."""
    value = record.get(key, "NA")
    return math.nan if value in ("NA", "-") else float(value)


def job_device(results: Path, stage: str, job: str) -> str:
    """The device a job ran on, from its own result file (Snakemake's benchmark does not know it)."""
    for name in ("metrics.json", "robustness.json", "quality.json"):
        path = results / stage / job / name
        if path.exists():
            return read_json(path).get("runtime", {}).get("device", "cpu")
    return "cpu"


def cost_rows(results: Path) -> list[dict]:
    """One row per job from Snakemake's `benchmark:` files: wall time, max RSS, CPU time, device."""
    rows = []
    for tsv in sorted((results / "benchmarks").rglob("*.tsv")):
        stage = tsv.relative_to(results / "benchmarks").parts[0]
        job = str(tsv.relative_to(results / "benchmarks" / stage).with_suffix(""))
        # finetune: one line per protocol in the cost table (ALF/AFF cost far more than SLF)
        label = f"finetune_{Path(job).name}" if stage == "finetune" else stage
        header, *lines = tsv.read_text().splitlines()
        rec = dict(zip(header.split("\t"), lines[-1].split("\t"), strict=True))
        rows.append({"stage": label, "job": job, "seconds": tsv_number(rec, "s"), "max_rss_mb": tsv_number(rec, "max_rss"),
                     "cpu_seconds": tsv_number(rec, "cpu_time"), "device": job_device(results, stage, job)})
    return rows


def peak_gpu_memory(results: Path, grid: dict) -> dict[str, float]:
    """Largest `peak_memory_mb` per stage over the pretrain/finetune metrics (0 on CPU)."""
    peaks: dict[str, float] = defaultdict(float)
    for stage in ("pretrain", "finetune"):
        for path in (results / stage).rglob("metrics.json"):
            peaks[stage] = max(peaks[stage], float(read_json(path).get("peak_memory_mb", 0.0)))
    return peaks


def cost_markdown(rows: list[dict], peaks: dict[str, float]) -> str:
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    body = []
    for stage in stages:
        rs = [r for r in rows if r["stage"] == stage]
        secs = [r["seconds"] for r in rs]
        gpu_hours = sum(r["seconds"] for r in rs if r["device"].startswith("cuda")) / 3600
        body.append([stage, str(len(rs)), f"{sum(secs):.1f}", f"{sum(secs) / len(secs):.1f}", f"{max(secs):.1f}",
                     f"{max(r['max_rss_mb'] for r in rs):.0f}", f"{gpu_hours:.3f}", f"{peaks.get(stage.split('_')[0], 0.0):.0f}"])
    return markdown_table(["stage", "jobs", "total s", "mean s", "max s", "max RSS MB", "GPU-hours", "peak GPU MB"], body)


def mining_rows(results: Path, grid: dict) -> list[dict]:
    out = []
    for dataset in grid["datasets"]:
        for seed in grid["seeds"]:
            path = results / "mine" / dataset / f"seed{seed}" / "quality.json"
            if grid.get("mined") and path.exists():
                q = read_json(path)
                out.append({"dataset": dataset, "seed": seed, "algorithm": q["algorithm"], "pair_precision": q["pair_precision"],
                            "pair_recall": q["pair_recall"], "purity": q["purity"], "nmi": q["nmi"],
                            "pairs_lost_per_anchor": q["pairs_lost_per_anchor"]["mean"]})
    return out


def checks(rows: list[dict], eval_warnings: list[str], grid: dict) -> list[str]:
    """Suspicious results, shown in the report instead of being hidden."""
    found = list(eval_warnings)
    summary = summarise(rows)
    for (dataset, method, protocol, attack, eps), (_, _, n) in summary.items():
        if n < len(seeds_of(grid, method, protocol)):
            found.append(f"{dataset}/{method}/{protocol} {attack}@{eps}: {n} seeds, {len(seeds_of(grid, method, protocol))} configured")
    return found


def fmt(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body]) + "\n"


def eps_label(attack: str, eps: float) -> str:
    """Linf budgets are in units of 1/255; L2 attacks (names ending in _l2) use input units."""
    return f"L2 {eps:g}" if attack.endswith("_l2") else f"{eps:g}/255"


def corruption_rows(results: Path, grid: dict) -> list[dict]:
    """Long-format corruption accuracies from the evaluate outputs (absent when none were run)."""
    rows = []
    for dataset in grid["datasets"]:
        for method in grid["methods"]:
            for protocol in [p for p in grid["protocols"] if method in methods_of(grid, p)]:
                for seed in seeds_of(grid, method, protocol):
                    path = eval_path(results, dataset, method, seed, protocol)
                    per = read_json(path).get("corruptions", {}) if path.exists() else {}
                    rows += [{"dataset": dataset, "method": method, "protocol": protocol, "seed": seed, "corruption": name,
                              "severity": int(sev), "accuracy": r["accuracy"]} for name, by_sev in per.items() for sev, r in by_sev.items()]
    return rows


def corruption_markdown(rows: list[dict], dataset: str, grid: dict) -> str:
    """Mean corruption accuracy per method, then per corruption and per severity (mean ± std over seeds)."""
    rows = [r for r in rows if r["dataset"] == dataset]
    corruptions = list(dict.fromkeys(r["corruption"] for r in rows))
    severities = sorted({r["severity"] for r in rows})

    def cell(method: str, protocol: str, keep) -> str:  # mean over the matching cells per seed, then over seeds
        seeds = defaultdict(list)
        for r in rows:
            if r["method"] == method and r["protocol"] == protocol and keep(r):
                seeds[r["seed"]].append(r["accuracy"])
        return fmt(*mean_std([sum(v) / len(v) for v in seeds.values()])[:2])

    header = ["method", "protocol", "mean"] + corruptions + [f"severity {s}" for s in severities]
    body = [[m, p, cell(m, p, lambda r: True)] + [cell(m, p, lambda r, c=c: r["corruption"] == c) for c in corruptions]
            + [cell(m, p, lambda r, s=s: r["severity"] == s) for s in severities]
            for m in grid["methods"] for p in grid["protocols"] if m in methods_of(grid, p) and any(r["method"] == m for r in rows)]
    return markdown_table(header, body)


def accuracy_markdown(summary: dict, dataset: str, grid: dict) -> str:
    summary = defaultdict(lambda: (math.nan, math.nan, 0), summary)
    # columns: the (attack, eps) pairs that exist (L2 attacks have their own eps), L2 and worst cases last
    cols = sorted({(k[3], k[4]) for k in summary if k[0] == dataset and k[3] != "clean"},
                  key=lambda c: (c[0].endswith("_l2"), c[0].startswith("any"), c))
    header = ["method", "protocol", "seeds", "clean"] + [f"{a} {eps_label(a, e)}" for a, e in cols]
    body = []
    for method in grid["methods"]:
        for protocol in [p for p in grid["protocols"] if method in methods_of(grid, p)]:
            clean = summary[(dataset, method, protocol, "clean", 0.0)]
            cells = [fmt(*summary[(dataset, method, protocol, a, e)][:2]) for a, e in cols]
            body.append([method, protocol, str(clean[2]), fmt(*clean[:2]), *cells])
    return markdown_table(header, body)


def gap_markdown(gaps: list[dict], dataset: str, rep: list[dict]) -> str:
    unif = defaultdict(list)
    for r in rep:
        if r["dataset"] == dataset:
            unif[r["method"]].append(r["uniformity"])
    header = ["method", "protocol", "attack", "eps/255", "RA sup", "RA csl", "RA method", "gap closed", "uniformity (test)"]
    body = [[g["method"], g["protocol"], g["attack"], f"{g['eps']:g}", f"{100 * g['ra_supervised']:.1f}", f"{100 * g['ra_csl']:.1f}",
             f"{100 * g['ra_method']:.1f}",
             "n/a (gap < 0.5%)" if math.isnan(g["share_closed"]) else f"{100 * g['share_closed']:.0f}% ± {100 * g['share_closed_std']:.0f}",
             f"{mean_std(unif[g['method']])[0]:.3f}"]
            for g in gaps if g["dataset"] == dataset and g["attack"] in ("pgd", "any")]
    return markdown_table(header, body)


def representation_markdown(rep: list[dict], dataset: str, grid: dict) -> str:
    header = ["method", "alignment", "uniformity", "intra-class dist", "inter-class dist", "margin mean", "negative-margin share"]
    keys = ("alignment", "uniformity", "intra_class_distance", "inter_class_distance", "margin_mean", "margin_negative_share")
    body = []
    for method in grid["methods"]:
        rs = [r for r in rep if r["dataset"] == dataset and r["method"] == method]
        stats = [mean_std([r[k] for r in rs]) for k in keys]
        body.append([method] + [f"{mean:.3f} ± {std:.3f}" for mean, std, *_ in stats])
    return markdown_table(header, body)


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def run(cfg: ReportConfig, grid: dict, results: Path, out: Path) -> dict:
    from pipeline import report_plots

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
    write_csv(out / "gap.csv", gaps)
    write_csv(out / "representation.csv", rep)
    costs = cost_rows(results)
    write_csv(out / "cost.csv", costs)
    md = [f"# Results\n\nSupervised baseline: `{cfg.supervised_method}`; CSL method: `{cfg.csl_method}`. "
          "Accuracies in %, mean ± std over seeds.\n"]
    for dataset, modality in grid["datasets"].items():
        md.append(f"\n## {dataset} ({modality})\n\n### Accuracy under attack\n\n{accuracy_markdown(summary, dataset, grid)}")
        md.append(f"\n### Share of the {cfg.csl_method}-to-{cfg.supervised_method} gap closed\n\n{gap_markdown(gaps, dataset, rep)}")
        md.append(f"\n### Representation\n\n{representation_markdown(rep, dataset, grid)}")
        report_plots.accuracy_vs_eps(summary, dataset, plot_grid(grid), out / f"{dataset}_accuracy_vs_eps.png")
        report_plots.corruption_severity(corrupted, dataset, plot_grid(grid), out / f"{dataset}_corruptions.png")  # empty if none ran
        if any(r["dataset"] == dataset for r in corrupted):
            md.append(f"\n### Common corruptions (accuracy; mean over corruptions and severities, per corruption over "
                      f"severities, per severity over corruptions)\n\n{corruption_markdown(corrupted, dataset, grid)}")
        report_plots.gap_closed(gaps, dataset, out / f"{dataset}_gap_closed.png")
        report_plots.uniformity_vs_robust(rep, rows, dataset, plot_grid(grid), out / f"{dataset}_uniformity.png")
        report_plots.training_curves(results, dataset, grid, out / f"{dataset}_training.png")
    if mining:
        md.append("\n## False-negative mining quality\n\n" + markdown_table(
            ["dataset", "seed", "algorithm", "pair precision", "pair recall", "purity", "NMI", "pairs lost / anchor"],
            [[m["dataset"], str(m["seed"]), m["algorithm"], f"{m['pair_precision']:.3f}", f"{m['pair_recall']:.3f}",
              "n/a" if m["purity"] is None else f"{m['purity']:.3f}", "n/a" if m["nmi"] is None else f"{m['nmi']:.3f}",
              f"{m['pairs_lost_per_anchor']:.1f}"] for m in mining]))
    if costs:
        md.append("\n## Cost (Snakemake benchmark files; wall seconds per job)\n\n" + cost_markdown(costs, peak_gpu_memory(results, grid)))
    md.append("\n## Checks\n\n" + ("\n".join(f"- {c}" for c in found) if found else "No suspicious results.") + "\n")
    write_text(out / "report.md", "".join(md))
    return {"rows": len(rows), "checks": found}


def main(argv: list[str] | None = None) -> None:
    log_header("report", argv)  # the log starts with the command and a timestamp
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="JSON of the `report` section")
    parser.add_argument("--grid", required=True, help="JSON: datasets {name: modality}, methods, seeds, protocols, mined")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    summary = run(from_json(ReportConfig, args.cfg, "report"), json.loads(args.grid), args.results, args.out)
    print(f"report: {summary['rows']} rows, {len(summary['checks'])} checks", file=sys.stderr)


if __name__ == "__main__":
    main()
