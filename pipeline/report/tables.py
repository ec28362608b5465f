"""Markdown tables for the report (shared by the report and its claims section): the table renderers
of accuracy, gap, representation, corruption, mining and cost rows, with their number formats."""

from __future__ import annotations

import math
from collections import defaultdict

from pipeline.budget import eps_text
from pipeline.grid import Grid


def mean_std(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std, n


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body]) + "\n"


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


def method_cost_markdown(rows: list[dict], grid: Grid) -> str:
    """Pretraining CPU/GPU seconds per seed and method; a mined method also pays its warm-up run and the mining."""
    def mean_of(prefix: str, stage: str) -> float:
        secs = [r["seconds"] for r in rows if r["stage"] == stage and r["job"].startswith(prefix)]
        return sum(secs) / len(secs) if secs else math.nan

    body = []
    for dataset in grid.datasets:
        for method in grid.methods:
            own = mean_of(f"{dataset}/{method}/", "pretrain")
            if math.isnan(own):
                continue
            if grid.uses_mined(method):
                warm, mine = mean_of(f"{dataset}/{grid.warmup_method}/", "pretrain"), mean_of(f"{dataset}/", "mine")
                body.append([dataset, method, f"{own:.1f}", f"{warm:.1f} + {mine:.1f}", f"{own + warm + mine:.1f}"])
            else:
                body.append([dataset, method, f"{own:.1f}", "—", f"{own:.1f}"])
    return markdown_table(["dataset", "method", "pretrain s per seed", "+ warm-up + mining s", "total s per seed"], body)


def mining_markdown(mining: list[dict]) -> str:
    """Precision and recall of every mining algorithm on the same warm-up embeddings; * = the one pretraining used."""
    body = [[m["dataset"], str(m["seed"]), m["algorithm"] + (" *" if m["used"] else ""), f"{m['pair_precision']:.3f}",
             f"{m['pair_recall']:.3f}", f"{m['x_chance']:.1f}x", f"{m['chance']:.3f}"] for m in mining]
    return markdown_table(["dataset", "seed", "algorithm", "pair precision", "pair recall", "precision / chance", "chance"], body)


def fmt(mean: float, std: float, n: int = 2) -> str:
    """Mean ± std over seeds in %; one seed has no spread, so it shows n = 1 instead."""
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f} (n=1)" if n == 1 else f"{100 * mean:.1f} ± {100 * std:.1f}"


def column_name(attack: str, eps: float, cascade: bool, order: list[str]) -> str:
    """What the number is: an attack alone, an attack after the ones before it in the cascade, or the
    per-sample worst case over all attacks of a norm."""
    budget = eps_label(attack, eps)
    if attack in ("any", "any_l2"):
        return f"worst case {budget}"
    before = order[: order.index(attack)] if cascade and attack in order else []
    return f"{attack} after {'+'.join(before)} {budget}" if before else f"{attack} {budget}"


def eps_label(attack: str, eps: float) -> str:
    """Linf budgets are in units of 1/255; L2 attacks (names ending in _l2) use input units."""
    return f"L2 {eps:g}" if attack.endswith("_l2") else eps_text(eps)


def corruption_markdown(rows: list[dict], dataset: str, grid: Grid) -> str:
    """Mean corruption accuracy per method, then per corruption and per severity (mean ± std over seeds)."""
    rows = [r for r in rows if r["dataset"] == dataset]
    corruptions = list(dict.fromkeys(r["corruption"] for r in rows))
    severities = sorted({r["severity"] for r in rows})

    def cell(method: str, protocol: str, keep) -> str:  # mean over the matching cells per seed, then over seeds
        seeds = defaultdict(list)
        for r in rows:
            if r["method"] == method and r["protocol"] == protocol and keep(r):
                seeds[r["seed"]].append(r["accuracy"])
        return fmt(*mean_std([sum(v) / len(v) for v in seeds.values()]))

    header = ["method", "protocol", "mean"] + corruptions + [f"severity {s}" for s in severities]
    body = [[m, p, cell(m, p, lambda r: True)] + [cell(m, p, lambda r, c=c: r["corruption"] == c) for c in corruptions]
            + [cell(m, p, lambda r, s=s: r["severity"] == s) for s in severities]
            for m in grid.evaluated_methods() for p in grid.protocols_of(m) if any(r["method"] == m for r in rows)]
    return markdown_table(header, body)


def accuracy_markdown(summary: dict, dataset: str, grid: Grid, cascade: tuple[bool, list[str]] = (False, [])) -> str:
    summary = defaultdict(lambda: (math.nan, math.nan, 0), summary)
    # columns: the (attack, eps) pairs that exist (L2 attacks have their own eps), L2 and worst cases last
    cols = sorted({(k[3], k[4]) for k in summary if k[0] == dataset and k[3] != "clean"},
                  key=lambda c: (c[0].endswith("_l2"), c[0].startswith("any"), c))
    header = ["method", "protocol", "seeds", "clean"] + [column_name(a, e, *cascade) for a, e in cols]
    body = []
    for method in grid.evaluated_methods():
        for protocol in grid.protocols_of(method):
            clean = summary[(dataset, method, protocol, "clean", 0.0)]
            cells = [fmt(*summary[(dataset, method, protocol, a, e)]) for a, e in cols]
            body.append([method, protocol, str(clean[2]), fmt(*clean), *cells])
    return markdown_table(header, body)


def share_text(g: dict) -> str:
    """The share closed, with its per-seed spread (n=1 says so), or why there is none."""
    if not g.get("gap_established", True):
        return "n/a (gap not established, C1a)"
    if math.isnan(g["share_closed"]):
        return "n/a (gap < 0.5%)"
    spread = "(n=1)" if g["seeds"] < 2 else f"± {100 * g['share_closed_std']:.0f}"
    return f"{100 * g['share_closed']:.0f}% {spread}"


def gap_markdown(gaps: list[dict], dataset: str, rep: list[dict]) -> str:
    unif = defaultdict(list)
    for r in rep:
        if r["dataset"] == dataset:
            unif[r["method"]].append(r["uniformity"])
    header = ["method", "protocol", "attack", "eps/255", "RA sup", "RA csl", "RA method", "gap closed", "uniformity (test)"]
    body = [[g["method"], g["protocol"], "worst case" if g["attack"] == "any" else g["attack"],
             f"{g['eps']:g}", f"{100 * g['ra_supervised']:.1f}", f"{100 * g['ra_csl']:.1f}",
             f"{100 * g['ra_method']:.1f}",
             share_text(g),
             f"{mean_std(unif[g['method']])[0]:.3f}"]
            for g in gaps if g["dataset"] == dataset and g["attack"] in ("pgd", "any")]
    return markdown_table(header, body)


def representation_markdown(rep: list[dict], dataset: str, grid: Grid) -> str:
    """Mean ± std over seeds per method; uniformity and margins in every feature space (the claims read the centred one)."""
    columns = [("alignment", "alignment"), ("uniformity_backbone", "unif. backbone"), ("uniformity_centred", "unif. centred"),
               ("uniformity_projection", "unif. projection"), ("within_class_uniformity_centred", "within-class unif. centred"),
               ("margin_backbone", "margin backbone"), ("margin_centred", "margin centred"), ("margin_projection", "margin projection"),
               ("intra_class_distance", "intra-class dist"), ("inter_class_distance", "inter-class dist")]
    body = []
    for method in grid.evaluated_methods():
        rs = [r for r in rep if r["dataset"] == dataset and r["method"] == method]
        if not rs:
            continue
        cells = []
        for key, _ in columns:
            mean, std, n = mean_std([r[key] for r in rs if not math.isnan(r[key])])
            cells.append("—" if n == 0 else f"{mean:.3f} (n=1)" if n == 1 else f"{mean:.3f} ± {std:.3f}")
        body.append([method] + cells)
    note = ("Test split; uniformity is Wang and Isola's (t = 2, lower = more uniform), margins the leave-one-out centroid "
            "margin (cosine). Spaces: backbone (normalised, after the final ReLU), centred (backbone minus its mean, "
            "normalised: what a linear head with a bias sees; the claims' space), projection (the pretraining head's "
            "output; none for CE). Mean ± std over seeds.\n\n")
    return note + markdown_table(["method"] + [label for _, label in columns], body)
