"""Report tables from hand-made metrics files: values, mean/std, gap arithmetic, plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ReportConfig
from pipeline.grid import Grid
from pipeline.io import IntegrityError, sealed
from pipeline.report import MIN_GAP, gap_rows, load_rows, run
from pipeline.report.tables import share_text

# RA at PGD eps 8 per (method, seed); clean is 0.9 everywhere.
RA = {("supervised", 0): 0.60, ("supervised", 1): 0.70, ("simclr", 0): 0.20, ("simclr", 1): 0.30,
      ("simclr_oracle_elim", 0): 0.40, ("simclr_oracle_elim", 1): 0.45}
METHODS = ["supervised", "simclr", "simclr_oracle_elim"]


def toy_grid(protocol_methods: dict | None = None, protocol_seeds: dict | None = None) -> Grid:
    protocol_methods = protocol_methods or {"slf": METHODS}
    return Grid(datasets={"toy": "image"}, embeds=[], methods=METHODS, seeds=[0, 1], method_seeds={m: [0, 1] for m in METHODS},
                protocols=list(protocol_methods), protocol_methods=protocol_methods,
                protocol_seeds=protocol_seeds or {p: [] for p in protocol_methods}, mined_methods=[], warmup_method="simclr")


GRID = toy_grid()
CFG = ReportConfig(supervised_method="supervised", csl_method="simclr", claims_protocol="slf", oracle_methods=["simclr_oracle_elim"],
                   mined_methods=[], adversarial_pairs={}, primary_eps={}, random_init_method=None, plateau_fraction=0.2,
                   plateau_tolerance=0.1)


def write(path: Path, data: dict) -> None:
    """Results as the stages write them, sealed (evaluate, analyse, pretrain, finetune, match and mine seal theirs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sealed(data) if path.suffix == ".json" else data))


@pytest.fixture()
def results(tmp_path):
    r = tmp_path / "results"
    ok = {"within_eps": True, "in_range": True, "max_linf": 0.0, "samples": 100, "clean_accuracy": 0.9}
    encoders = {}
    for (method, seed), ra in RA.items():
        base = f"toy/{method}/seed{seed}"
        write(r / f"evaluate/{base}/slf/robustness.json", {
            "clean_accuracy": 0.9, "samples": 100, "warnings": ["pgd: made-up warning"] if method == "simclr" and seed == 1 else [],
            "attacks": {"pgd": {"4.0": {"accuracy": ra + 0.1, **ok}, "8.0": {"accuracy": ra, **ok}}}})
        write(r / f"pretrain/{base}/metrics.json", {"train_seconds": 1.5, "peak_memory_mb": 0.0, "runtime": {"device_name": "cpu"},
                                                    "history": [{"epoch": 1, "loss": 5.0}, {"epoch": 2, "loss": 4.0}]})
        bench = r / f"benchmarks/pretrain/{base}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                         f"{2.0 + seed}\t0:00:02\t{100 + seed}\t1\t1\t1\t0\t0\t50\t1.5\n")
        write(r / f"finetune/{base}/slf/metrics.json", {"seconds": 0.5, "runtime": {"device_name": "cpu"}})
        stats = {"uniformity": -2.0 - seed, "alignment": 0.2, "intra_class_distance": 0.1, "inter_class_distance": 0.5,
                 "margin": {"mean": 0.1, "negative_share": 0.0}, "class_distances": [[0.1, 0.5], [0.5, 0.1]]}
        encoders[f"{method}:{seed}"] = {"train": stats, "test": stats}
    write(r / "analyse/toy/representation.json", {"encoders": encoders})
    return r


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tables_and_gap_arithmetic(tmp_path, results):
    out = tmp_path / "report"
    summary = run(CFG, GRID, results, out)
    rows = read_csv(out / "summary.csv")
    pgd8 = {r["method"]: r for r in rows if r["attack"] == "pgd" and float(r["eps"]) == 8.0}
    assert float(pgd8["supervised"]["mean"]) == pytest.approx(0.65)
    assert float(pgd8["supervised"]["std"]) == pytest.approx(math.sqrt(0.005))  # sample std of 0.6, 0.7
    assert pgd8["simclr"]["seeds"] == "2"
    gap = [g for g in gap_rows(load_rows(results, GRID)[0], GRID, CFG) if g["eps"] == 8.0 and g["attack"] == "pgd"][0]
    # (0.425 - 0.25) / (0.65 - 0.25) from means; per seed (0.2/0.4, 0.15/0.4)
    assert gap["share_closed"] == pytest.approx(0.175 / 0.4)
    assert gap["share_closed_std"] == pytest.approx(math.sqrt(((0.5 - 0.4375) ** 2 + (0.375 - 0.4375) ** 2) / 1))
    # ... but these toy results have no per-sample outcomes, so no claim establishes the gap: the report shows no share
    assert all(g["share_closed"] == "nan" and g["gap_established"] == "False" for g in read_csv(out / "gap.csv"))
    md = (out / "report.md").read_text()
    assert "n/a (gap not established, C1a)" in md and "% ±" not in md and "65.0 ± 7.1" in md
    assert "made-up warning" in md and summary["checks"]
    # cost: 6 pretrain jobs of 2 s (seed 0) and 3 s (seed 1): total 15 s, max RSS 101 MB
    assert "| pretrain | 6 | 15.0 | 2.5 | 3.0 | 101 | 0.000 | 0 |" in md
    for name in ("toy_accuracy_vs_eps.png", "toy_gap_closed.png", "toy_uniformity.png", "toy_training.png"):
        assert (out / name).stat().st_size > 2000


def test_tiny_gap_is_not_reported(tmp_path, results):
    for seed in (0, 1):
        p = results / f"evaluate/toy/supervised/seed{seed}/slf/robustness.json"
        d = json.loads(p.read_text())
        d["attacks"]["pgd"]["8.0"]["accuracy"] = RA[("simclr", seed)] + MIN_GAP / 10
        write(p, d)  # as evaluate would write it (sealed)
    gap = [g for g in gap_rows(load_rows(results, GRID)[0], GRID, CFG) if g["eps"] == 8.0 and g["attack"] == "pgd"][0]
    assert math.isnan(gap["share_closed"])
    assert share_text({**gap, "gap_established": True}) == "n/a (gap < 0.5%)"


def test_fewer_seeds_than_configured_is_flagged(tmp_path, results):
    (results / "evaluate/toy/simclr_oracle_elim/seed1/slf/robustness.json").unlink()
    summary = run(CFG, GRID, results, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert any("simclr_oracle_elim/seed1/slf: missing" in c for c in summary["checks"])
    assert "simclr_oracle_elim/slf pgd@8.0: 1 seeds, 2 configured" in md


def test_protocol_covering_some_methods(tmp_path, results):
    """An ALF protocol run on supervised and simclr, seed 0 only: no missing-file checks, rows only where it ran."""
    ok = {"within_eps": True, "in_range": True, "max_linf": 0.0, "samples": 100, "clean_accuracy": 0.8}
    for (method, seed), ra in RA.items():
        if method in ("supervised", "simclr") and seed == 0:
            write(results / f"evaluate/toy/{method}/seed{seed}/alf/robustness.json", {
                "clean_accuracy": 0.8, "samples": 100, "warnings": [],
                "attacks": {"pgd": {"4.0": {"accuracy": ra + 0.2, **ok}, "8.0": {"accuracy": ra + 0.1, **ok}}}})
            bench = results / f"benchmarks/finetune/toy/{method}/seed{seed}/alf.tsv"
            bench.parent.mkdir(parents=True, exist_ok=True)
            bench.write_text("s\tmax_rss\tcpu_time\n9.0\t50\t8.0\n")
    grid = toy_grid({"slf": METHODS, "alf": ["supervised", "simclr"]}, {"slf": [], "alf": [0]})
    summary = run(CFG, grid, results, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert not any("alf" in c for c in summary["checks"])
    assert "| supervised | alf | 1 | 80.0 (n=1) |" in md and "| simclr_oracle_elim | alf |" not in md
    assert {g["protocol"] for g in read_csv(tmp_path / "rep" / "gap.csv")} == {"slf"}  # alf has no variant to score
    assert "| finetune_alf | 2 | 18.0 | 9.0 | 9.0 | 50 |" in md


def test_corruption_tables_and_l2_columns(tmp_path, results):
    """Corruption accuracies (evaluate's `corruptions`) become a table and a plot; L2 attacks get their own columns."""
    ok = {"within_eps": True, "in_range": True, "max_norm": 0.0, "samples": 100, "clean_accuracy": 0.9}
    for (method, seed), ra in RA.items():
        p = results / f"evaluate/toy/{method}/seed{seed}/slf/robustness.json"
        d = json.loads(p.read_text())
        d["attacks"]["pgd_l2"] = {"0.5": {"accuracy": ra / 2, **ok}}
        d["corruptions"] = {"jpeg": {"1": {"accuracy": 0.8}, "5": {"accuracy": 0.4 + 0.1 * seed}}, "contrast": {"1": {"accuracy": 0.6}}}
        write(p, d)  # as evaluate would write it (sealed)
    run(CFG, GRID, results, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "pgd_l2 L2 0.5" in md and "pgd 8/255" in md and "pgd_l2 8/255" not in md
    # mean per seed (0.8 + 0.4 + 0.6)/3 = 0.6, (0.8 + 0.5 + 0.6)/3 = 0.633; jpeg per seed 0.6, 0.65; severity 5: 0.4, 0.5
    assert "| supervised | slf | 61.7 ± 2.4 | 62.5 ± 3.5 | 60.0 ± 0.0 | 70.0 ± 0.0 | 45.0 ± 7.1 |" in md
    assert len(read_csv(tmp_path / "rep" / "corruptions.csv")) == 3 * len(RA)
    assert (tmp_path / "rep" / "toy_corruptions.png").stat().st_size > 2000


def test_robust_above_clean_on_the_same_samples_is_flagged(tmp_path, results):
    """An attack's accuracy is compared with the clean accuracy of its own samples (not the full split's)."""
    p = results / "evaluate/toy/simclr/seed0/slf/robustness.json"
    d = json.loads(p.read_text())
    d["attacks"]["pgd"]["8.0"].update(accuracy=0.5, samples=8, clean_accuracy=0.25)  # impossible on those 8 samples
    write(p, d)  # as evaluate would write it (sealed)
    summary = run(CFG, GRID, results, tmp_path / "rep")
    assert any("above the clean accuracy 0.2500 of the same 8 samples" in c for c in summary["checks"])


def test_a_method_keeps_its_colour_in_every_plot():
    from pipeline.report import study_colours
    from pipeline.report.plots import method_colours

    colours = study_colours(GRID)
    assert colours == method_colours(METHODS) and len(set(colours.values())) == len(METHODS)
    from pipeline.report import plot_grid

    assert plot_grid(GRID)["colours"] == colours  # the plots' styles carry the same colours


def test_one_epoch_training_curve_shows_a_point(tmp_path, results):
    """A one-epoch history is drawn with a marker (a line of one point is invisible)."""
    import matplotlib.pyplot as plt

    from pipeline.report import plots as report_plots

    for (method, seed) in RA:
        p = results / f"pretrain/toy/{method}/seed{seed}/metrics.json"
        d = json.loads(p.read_text())
        d["history"] = d["history"][:1]
        write(p, d)  # as evaluate would write it (sealed)
    captured = []
    real_save = report_plots._save
    report_plots._save = lambda fig, path: (captured.append(fig), real_save(fig, path))
    try:
        report_plots.training_curves(results, "toy", GRID, report_plots.method_colours(METHODS), tmp_path / "t.png")
    finally:
        report_plots._save = real_save
    lines = [line for ax in captured[0].axes for line in ax.get_lines()]
    assert lines and all(line.get_marker() not in (None, "None", "") for line in lines)
    plt.close("all")


# ---- training checks (pipeline.report.trained) ------------------------------------------------------
def history(losses, knn=None):
    """Per-epoch records as pretrain writes them; knn: {epoch: accuracy}."""
    return [{"epoch": e + 1, "loss": float(v), **({"knn_acc": knn[e + 1]} if knn and e + 1 in knn else {})} for e, v in enumerate(losses)]


def test_a_run_that_has_flattened_is_levelled_and_one_still_falling_is_not():
    from pipeline.report import trained

    flat = 4.0 + 1.5 * np.exp(-np.arange(30) / 4)  # falls 1.5, then stays: the last 6 epochs move < 1 % of the fall
    p = trained.plateau(history(flat, {24: 0.93, 30: 0.94}), 0.94)
    assert p.levelled and p.reason == "" and p.last_drop_share < 0.05 and p.knn_gain == pytest.approx(0.01)
    falling = 5.0 - 0.05 * np.arange(30)  # linear: the windows 6 epochs apart differ by 0.3, the total fall is 1.325
    p = trained.plateau(history(falling), None)
    assert not p.levelled and "loss still fell" in p.reason and p.last_drop_share == pytest.approx(0.3 / 1.325, rel=1e-6)


def test_a_rising_knn_accuracy_or_a_short_run_is_not_levelled():
    from pipeline.report import trained

    flat = 4.0 + 1.5 * np.exp(-np.arange(30) / 4)
    p = trained.plateau(history(flat, {24: 0.80, 30: 0.90}), 0.90)
    assert not p.levelled and "kNN accuracy still rose 10.0 points" in p.reason
    p = trained.plateau(history([5.0]), None)
    assert not p.levelled and "too few" in p.reason
    assert not trained.plateau([], None).levelled  # an untrained encoder (epochs 0) shows no plateau


def test_beating_random_init_needs_an_interval_above_zero_on_three_seeds():
    from pipeline.report import trained

    rng = np.random.default_rng(0)
    good = rng.random((3, 500)) < 0.9
    random = rng.random((3, 500)) < 0.6
    iv, beats = trained.beats_random_init(good, random)
    assert beats and iv.low > 0
    assert not trained.beats_random_init(random, good)[1]
    assert not trained.beats_random_init(good[:2], random[:2])[1]  # 2 seeds: no verdict, so not shown to beat it


@pytest.mark.parametrize("name", ["pretrain/toy/simclr/seed0/metrics.json", "finetune/toy/simclr/seed0/slf/metrics.json"])
def test_an_edited_metrics_file_stops_the_report_naming_it(tmp_path, results, name):
    path = results / name
    record = json.loads(path.read_text())
    record["edited"] = True  # a hand edit, or a producer bug, after the stage sealed it
    path.write_text(json.dumps(record))
    with pytest.raises(IntegrityError, match=rf"{name}: its content differs from the checksum rule '{name.split('/')[0]}'"):
        run(CFG, GRID, results, tmp_path / "report")


def test_an_edited_or_truncated_result_stops_the_report_naming_the_file(tmp_path, results):
    path = results / "evaluate/toy/simclr/seed0/slf/robustness.json"
    original = path.read_text()
    path.write_text(original.replace('"clean_accuracy": 0.9', '"clean_accuracy": 0.99', 1))  # a hand edit
    with pytest.raises(IntegrityError, match=r"robustness.json: its content differs from the checksum rule 'evaluate'"):
        run(CFG, GRID, results, tmp_path / "report")
    path.write_text(original[: len(original) // 2])
    with pytest.raises(IntegrityError, match=r"robustness.json: not valid JSON"):
        run(CFG, GRID, results, tmp_path / "report")
    assert not (tmp_path / "report" / "report.md").exists()  # nothing downstream written


def test_a_share_is_kept_only_where_c1a_establishes_the_gap():
    from types import SimpleNamespace

    from pipeline.report import mask_unestablished_shares
    from pipeline.report import statistics as st

    def c1a(eps, low, seeds=5):
        return SimpleNamespace(claim="C1a", eps=eps, interval=st.Interval(0.1, low, 0.2, 0.95, 0.02, 4.0, seeds, 540, True))

    claims_rows = {"toy": [c1a(8.0, 0.05), c1a(16.0, -0.01), c1a(32.0, 0.05, seeds=2)]}
    gaps = [{"dataset": "toy", "eps": e, "share_closed": 0.4, "share_closed_std": 0.1} for e in (8.0, 16.0, 32.0)]
    mask_unestablished_shares(gaps, claims_rows)
    assert [g["gap_established"] for g in gaps] == [True, False, False]  # 16: interval touches 0; 32: two seeds
    assert gaps[0]["share_closed"] == 0.4 and all(math.isnan(g["share_closed"]) for g in gaps[1:])


def test_thirteen_or_more_methods_never_share_a_hue_and_style():
    from matplotlib.colors import to_hex

    from pipeline.report.plots import method_styles

    methods = [f"m{i}" for i in range(16)]
    styles = method_styles(methods)
    looks = {(to_hex(s["color"]), s["ls"], s["marker"]) for s in styles.values()}
    assert len(looks) == 16
    hues = {to_hex(s["color"]) for s in styles.values()}
    assert len(hues) == 10  # tab10's distinct hues, never tab20's light/dark pairs


def captured_figures(monkeypatch):
    """Every figure a report_plots function saves, kept open for the test to read what it drew."""
    from pipeline.report import plots as report_plots

    figures = []
    monkeypatch.setattr(report_plots, "_save", lambda fig, path: figures.append(fig))
    return figures


def test_a_one_seed_method_is_drawn_without_a_band_and_named_n1(monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.container import BarContainer

    from pipeline.report import plots as report_plots

    figures = captured_figures(monkeypatch)
    summary = {("toy", "a", "slf", "clean", 0.0): (0.9, 0.02, 3), ("toy", "a", "slf", "pgd", 8.0): (0.5, 0.05, 3),
               ("toy", "b", "slf", "clean", 0.0): (0.8, 0.0, 1), ("toy", "b", "slf", "pgd", 8.0): (0.3, 0.0, 1)}
    grid = {"protocols": ["slf"], "methods": ["a", "b"], "colours": report_plots.method_colours(["a", "b"]),
            "styles": report_plots.method_styles(["a", "b"])}
    report_plots.accuracy_vs_eps(summary, "toy", grid, Path("unused.png"))
    ax = figures[0].axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b (n=1)"]
    assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 1  # a's band only
    assert [y for y in ax.get_lines()[1].get_ydata()] == [80.0, 30.0]

    gaps = [{"dataset": "toy", "attack": "any", "method": m, "eps": 8.0, "share_closed": s, "share_closed_std": sd, "seeds": n}
            for m, s, sd, n in (("a", 0.4, 0.1, 3), ("b", 0.2, math.nan, 1))]
    report_plots.gap_closed(gaps, "toy", grid["colours"], Path("unused.png"))
    ax = figures[1].axes[0]
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert set(bars) == {"a", "b (n=1)"}
    assert bars["a"].errorbar is not None and bars["b (n=1)"].errorbar is None  # no "± 0" whisker
    assert [round(p.get_height()) for p in bars["a"].patches + bars["b (n=1)"].patches] == [40, 20]
    plt.close("all")


def test_corruption_severities_get_whole_number_ticks_and_n1_has_no_error_bar(monkeypatch):
    import matplotlib.pyplot as plt

    from pipeline.report import plots as report_plots

    figures = captured_figures(monkeypatch)
    rows = [{"dataset": "toy", "protocol": "slf", "method": m, "seed": s, "severity": sev, "accuracy": 0.9 - 0.1 * sev}
            for m, seeds in (("a", (0, 1)), ("b", (0,))) for s in seeds for sev in (1, 2, 3, 4, 5)]
    grid = {"protocols": ["slf"], "methods": ["a", "b"], "colours": report_plots.method_colours(["a", "b"]),
            "styles": report_plots.method_styles(["a", "b"])}
    report_plots.corruption_severity(rows, "toy", grid, Path("unused.png"))
    ax = figures[0].axes[0]
    figures[0].canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_xticks())
    bars = {c.get_label(): c for c in ax.containers}
    assert bars["a"].has_yerr and not bars["b (n=1)"].has_yerr
    plt.close("all")
