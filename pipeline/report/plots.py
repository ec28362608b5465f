"""The report's matplotlib figures; one colour per method across every plot."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipeline.budget import eps_text
from pipeline.grid import Grid  # noqa: E402
from pipeline.io import atomic_path  # noqa: E402

LEGEND = {"fontsize": 7, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}  # outside the data


LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")


def method_styles(methods: list[str]) -> dict[str, dict]:
    """Colour, line style and marker per method, built once from every method of the study so that a method
    looks the same in every plot.

    The first ten methods get tab10's ten distinct hues with solid lines and circles; the next ten reuse the
    hues dashed with squares, and so on: no two methods share hue and style, and no two hues are shades of
    one colour (tab20's pairs made supervised / supcon and simclr / its variants look alike).
    """
    cmap = plt.get_cmap("tab10")
    return {m: {"color": cmap(i % 10), "ls": LINESTYLES[(i // 10) % 4], "marker": MARKERS[(i // 10) % 4]}
            for i, m in enumerate(methods)}


def method_colours(methods: list[str]) -> dict[str, tuple]:
    """The colour of each method (`method_styles`)."""
    return {m: style["color"] for m, style in method_styles(methods).items()}


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def accuracy_vs_eps(summary: dict, dataset: str, grid: dict, path: Path) -> None:
    """One panel per attack: accuracy (mean, shaded std over seeds) vs eps, a line per method."""
    attacks = sorted({k[3] for k in summary if k[0] == dataset and k[3] != "clean"}, key=lambda a: (a == "any", a))
    colours = grid["colours"]
    protocol = grid["protocols"][0]
    fig, axes = plt.subplots(1, len(attacks), figsize=(4.2 * len(attacks), 3.6), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks, strict=True):
        for method in grid["methods"]:
            pts = sorted((k[4], v) for k, v in summary.items() if k[:4] == (dataset, method, protocol, attack))
            clean = summary[(dataset, method, protocol, "clean", 0.0)]
            eps = [0.0] + [p[0] for p in pts]
            mean = [100 * clean[0]] + [100 * p[1][0] for p in pts]
            std = [100 * clean[1]] + [100 * p[1][1] for p in pts]
            style = grid["styles"][method]
            single = clean[2] < 2  # one seed: no spread to draw, and the legend says so
            ax.plot(eps, mean, marker=style["marker"], ls=style["ls"], ms=3, color=colours[method],
                    label=f"{method} (n=1)" if single else method)
            if not single:
                low = [m - s for m, s in zip(mean, std, strict=True)]
                high = [m + s for m, s in zip(mean, std, strict=True)]
                ax.fill_between(eps, low, high, color=colours[method], alpha=0.15)
        ax.set_title(f"{attack.upper() if attack != 'any' else 'worst case over attacks'}")
        ax.set_xlabel("eps (L2, input units)" if attack.endswith("_l2") else "eps (x 1/255, Linf)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test accuracy (%), {protocol}")
    axes[0][-1].legend(**LEGEND)
    fig.suptitle(f"{dataset}: robust accuracy vs perturbation size (mean ± std over seeds)", fontsize=10)
    _save(fig, path)


def gap_closed(gaps: list[dict], dataset: str, colours: dict[str, tuple], path: Path) -> None:
    """Bars: share of the CSL-to-supervised worst-case gap each variant closes, per eps (descriptive; the
    claims section has the intervals)."""
    rows = [g for g in gaps if g["dataset"] == dataset and g["attack"] == "any" and not math.isnan(g["share_closed"])]
    methods = list(dict.fromkeys(g["method"] for g in rows))
    eps_list = sorted({g["eps"] for g in rows})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 1.1 * len(eps_list) * max(1, len(methods)) / 2), 3.6))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        vals = {g["eps"]: g for g in rows if g["method"] == method}
        xs = [j + i * width for j in range(len(eps_list))]
        ys = [0 if math.isnan(vals[e]["share_closed"]) else 100 * vals[e]["share_closed"] for e in eps_list]
        single = all(vals[e]["seeds"] < 2 for e in eps_list)  # one seed: a bar without an error bar, "(n=1)"
        err = None if single else [0 if math.isnan(vals[e]["share_closed_std"]) else 100 * vals[e]["share_closed_std"]
                                   for e in eps_list]
        ax.bar(xs, ys, width, yerr=err, color=colours[method], label=f"{method} (n=1)" if single else method, capsize=2)
    if rows:  # 0 % and 100 % (as robust as supervised) as reference lines
        ax.axhline(0, color="black", lw=0.8)
        ax.axhline(100, color="grey", lw=0.8, ls="--")
    ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(eps_list))], [eps_text(e) for e in eps_list])
    ax.set_ylabel("gap closed (%)")
    ax.set_title(f"{dataset}: share of the worst-case robustness gap closed (100% = supervised; mean ± sd over seeds)",
                 fontsize=10)
    if not rows:  # no eps at which the claims establish the gap: no share to draw
        ax.text(0.5, 0.5, "the gap (claim C1a) is not established at any eps:\nno share of it is defined",
                ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    if methods:
        ax.legend(**LEGEND)
    _save(fig, path)


def uniformity_vs_robust(rep: list[dict], rows: list[dict], dataset: str, grid: dict, path: Path, primary_eps: float | None = None) -> None:
    """Scatter: test uniformity (the claims' centred space) vs worst-case robust accuracy at the primary eps
    (else the middle one), one point per encoder."""
    attacks = {r["attack"] for r in rows if r["dataset"] == dataset}
    attack = "any" if "any" in attacks else "pgd"  # the worst case; a hand-made grid may have PGD only
    pgd = [r for r in rows if r["dataset"] == dataset and r["attack"] == attack and r["protocol"] == grid["protocols"][0]]
    eps_list = sorted({r["eps"] for r in pgd})
    if not eps_list:
        fig, ax = plt.subplots(figsize=(5, 3.8))
        ax.text(0.5, 0.5, "no Linf attack ran", ha="center", va="center")
        ax.axis("off")
        _save(fig, path)
        return
    eps = primary_eps if primary_eps in eps_list else eps_list[len(eps_list) // 2]
    acc = {(r["method"], r["seed"]): r["accuracy"] for r in pgd if r["eps"] == eps}
    colours = grid["colours"]
    fig, ax = plt.subplots(figsize=(5, 3.8))
    seen = defaultdict(bool)
    for r in rep:
        if r["dataset"] != dataset or (r["method"], r["seed"]) not in acc:
            continue
        ax.scatter(r["uniformity"], 100 * acc[(r["method"], r["seed"])], color=colours[r["method"]],
                   marker=grid["styles"][r["method"]]["marker"],
                   label=None if seen[r["method"]] else r["method"], s=25)
        seen[r["method"]] = True
    ax.set_xlabel(f"uniformity of test features, {rep[0].get('space', 'backbone') if rep else 'backbone'} space (lower = more uniform)")
    ax.set_ylabel(f"{'worst-case' if attack == 'any' else attack.upper()} accuracy at {eps_text(eps)} (%)")
    ax.set_title(f"{dataset}: uniformity vs robustness", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(**LEGEND)
    _save(fig, path)


def training_curves(results: Path, dataset: str, grid: Grid, colours: dict[str, tuple], path: Path) -> None:
    """Small multiples: pretraining loss per epoch for each method, one thin line per seed (a marker per
    epoch, so a one-epoch run shows a point)."""
    from pipeline.io import read_sealed

    def trained(method: str) -> bool:  # an untrained baseline (epochs 0) has no curve to draw
        paths = [results / "pretrain" / dataset / method / f"seed{s}" / "metrics.json" for s in grid.method_seeds[method]]
        return any(p.exists() and read_sealed(p, "pretrain")["history"] for p in paths)

    methods = [m for m in grid.methods if trained(m)] or grid.methods[:1]
    cols = min(4, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, method in zip(axes.flat, methods, strict=False):  # the last row may have spare axes
        seeds = grid.method_seeds[method]
        for seed in seeds:
            metrics = results / "pretrain" / dataset / method / f"seed{seed}" / "metrics.json"
            if metrics.exists():
                history = read_sealed(metrics, "pretrain")["history"]
                ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], color=colours[method], lw=1, alpha=0.8,
                        marker="o", ms=3)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    axes[0][0].set_ylabel("training loss", fontsize=8)
    fig.suptitle(f"{dataset}: pretraining loss (one line per seed)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def corruption_severity(rows: list[dict], dataset: str, grid: dict, path: Path) -> None:
    """Accuracy (mean over corruptions, then mean ± std over seeds) vs corruption severity, a line per method."""
    rows = [r for r in rows if r["dataset"] == dataset and r["protocol"] == grid["protocols"][0]]
    colours = grid["colours"]
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for method in grid["methods"]:
        per = defaultdict(lambda: defaultdict(list))  # severity -> seed -> accuracies
        for r in rows:
            if r["method"] == method:
                per[r["severity"]][r["seed"]].append(r["accuracy"])
        sev = sorted(per)
        seed_means = [[100 * sum(v) / len(v) for v in per[s].values()] for s in sev]
        mean = [sum(m) / len(m) for m in seed_means]
        std = [math.sqrt(sum((x - mu) ** 2 for x in m) / (len(m) - 1)) if len(m) > 1 else 0.0
               for m, mu in zip(seed_means, mean, strict=True)]
        if sev:
            style = grid["styles"][method]
            single = all(len(m) < 2 for m in seed_means)  # one seed: no error bar, "(n=1)"
            ax.errorbar(sev, mean, yerr=None if single else std, marker=style["marker"], ls=style["ls"], ms=3, capsize=2,
                        color=colours[method], label=f"{method} (n=1)" if single else method)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # severities are whole numbers
    ax.set_xlabel("corruption severity")
    ax.set_ylabel(f"accuracy (%), mean over corruptions, {grid['protocols'][0]}")
    ax.set_title(f"{dataset}: common corruptions" + ("" if rows else " (none configured)"), fontsize=10)
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(**LEGEND)
    _save(fig, path)


CURVE_METRICS = ("uniformity", "margin", "displacement", "radius", "robust")  # the chain, left to right


def _curve(curves: list[dict], dataset: str, manipulation: str, metric: str) -> list[dict]:
    """The rows of one panel, by level."""
    rows = [r for r in curves if (r["dataset"], r["manipulation"], r["metric"]) == (dataset, manipulation, metric)]
    return sorted(rows, key=lambda r: r["level"])


def _chain_slope(slopes: list[dict], dataset: str, manipulation: str) -> dict | None:
    """The slope of robust accuracy on uniformity along one manipulation, if it has an interval."""
    for r in slopes:
        if (r["dataset"], r["manipulation"], r["y"], r["x"]) == (dataset, manipulation, "robust", "uniformity"):
            return r if math.isfinite(r["low"]) else None
    return None


def _error_bars(rows: list[dict]) -> list[list[float]]:
    """Asymmetric error bars from each row's interval (0 where it has none, e.g. one seed)."""
    below = [r["estimate"] - r["low"] if math.isfinite(r["low"]) else 0.0 for r in rows]
    above = [r["high"] - r["estimate"] if math.isfinite(r["high"]) else 0.0 for r in rows]
    return [below, above]


def dose_response(curves: list[dict], slopes: list[dict], dataset: str, labels: dict[str, tuple[str, str]], eps_text: str,
                  path: Path) -> None:
    """Rows: the manipulations; columns: the links of the chain. Mean with its 95 % interval at each level."""
    manipulations = [m for m in ("temperature", "dose") if _curve(curves, dataset, m, "robust") or _curve(curves, dataset, m, "uniformity")]
    n_rows = max(1, len(manipulations))
    fig, axes = plt.subplots(n_rows, len(CURVE_METRICS), figsize=(3.0 * len(CURVE_METRICS), 2.8 * n_rows), squeeze=False)
    for i, manipulation in enumerate(manipulations):
        for j, metric in enumerate(CURVE_METRICS):
            ax, rows = axes[i][j], _curve(curves, dataset, manipulation, metric)
            if not rows:
                ax.set_axis_off()
                continue
            x = [r["level"] for r in rows]
            ax.errorbar(x, [r["estimate"] for r in rows], yerr=_error_bars(rows), marker="o", ms=4, capsize=3, color="tab:blue")
            seeds = sorted({r["seeds"] for r in rows})
            title = labels[metric][0] + (f"\n(n={seeds[0]} seed{'s' if seeds[0] > 1 else ''})" if len(seeds) == 1 else "")
            chain = _chain_slope(slopes, dataset, manipulation) if metric == "robust" else None
            if chain:
                title = f"{labels[metric][0]}\nslope on uniformity {chain['estimate']:+.0f} [{chain['low']:+.0f}, {chain['high']:+.0f}]"
            ax.set_title(title, fontsize=8)
            if manipulation == "temperature":
                ax.set_xscale("log")
                ax.set_xticks(x)
                ax.set_xticklabels([f"{v:g}" for v in x])
                ax.minorticks_off()
            ax.set_xlabel("NT-Xent temperature" if manipulation == "temperature" else "false-negative dose f (share removed)", fontsize=8)
            ax.set_ylabel(labels[metric][1], fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle(f"{dataset}: the chain along each manipulation (mean, 95 % interval over seeds and samples; robust accuracy: "
                 f"worst case at {eps_text})", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def miner_grid(rows: list[dict], dataset: str, base: str, eps_text: str, path: Path) -> None:
    """Simulated miners on the (recall, precision) plane, coloured by their robust-accuracy effect; real miners as stars."""
    rows = [r for r in rows if r["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(7.6, 5.4))
    if not rows:
        ax.text(0.5, 0.5, "no miner ran", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        _save(fig, path)
        return
    limit = max(1.0, max(abs(r["effect"]) for r in rows if math.isfinite(r["effect"])))
    norm = matplotlib.colors.TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)
    for r in rows:
        x = r["recall_set"] if r["kind"] == "simulated" else r["recall_measured"]
        y = r["precision_set"] if r["kind"] == "simulated" else r["precision_measured"]
        if x is None or y is None:
            continue
        marker, size = ("o", 180) if r["kind"] == "simulated" else ("*", 320)
        sc = ax.scatter([x], [y], c=[r["effect"]], cmap="coolwarm_r", norm=norm, marker=marker, s=size, edgecolors="black", linewidths=0.6)
        interval = f"[{r['low']:+.1f}, {r['high']:+.1f}]" if math.isfinite(r["low"]) else "(n=1)"
        label = f"{r['effect']:+.1f}\n{interval}" + (f"\n{r['method']}" if r["kind"] == "real" else "")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(0, -12), fontsize=6.5, ha="center", va="top")
    fig.colorbar(sc, ax=ax, label=f"robust accuracy minus {base} (points)")
    ax.set_xlim(-0.05, 1.15)
    ax.set_ylim(-0.05, 1.1)
    ax.set_xlabel("recall of the flags (share of each anchor's false negatives)")
    ax.set_ylabel("precision of the flags")
    ax.grid(alpha=0.3)
    ax.set_title(f"{dataset}: simulated miners (circles) and real miners (stars)\n"
                 f"worst case at {eps_text}, 95 % interval over seeds and samples", fontsize=9)
    _save(fig, path)


def class_distance_grid(stats: dict, dataset: str, path: Path, columns: int = 4) -> None:
    """Class-pair mean cosine distances of the test features, one panel per method (its first seed), in a grid.

    stats: representation.json's `encoders` ("method:seed" -> statistics). One colour scale for all panels.
    """
    first: dict[str, dict] = {}
    for key, s in stats.items():
        first.setdefault(key.split(":")[0], s)
    if not first:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, "no encoder analysed", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, path)
        return
    cols = min(columns, len(first))
    rows = math.ceil(len(first) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols + 1.0, 3.0 * rows), squeeze=False)
    vmax = max(max(max(r) for r in s["test"]["class_distances"]) for s in first.values())
    image = None
    for ax, (method, s) in zip(list(axes.flat)[: len(first)], first.items(), strict=True):
        image = ax.imshow(s["test"]["class_distances"], vmin=0, vmax=vmax, cmap="viridis")
        ax.set_title(f"{method}\nuniformity {s['test']['uniformity']:.2f}", fontsize=8)
        classes = len(s["test"]["class_distances"])
        ax.set_xticks(range(classes))  # integer class ticks, not matplotlib's 0.0 / 2.5 / 5.0
        ax.set_yticks(range(classes))
        ax.tick_params(labelsize=6)
        ax.set_xlabel("class", fontsize=7)
        ax.set_ylabel("class", fontsize=7)
    for ax in list(axes.flat)[len(first):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="mean cosine distance")
    fig.suptitle(f"{dataset}: class-pair distances of the test features (first seed; diagonal = within class)", fontsize=10)
    _save(fig, path)
