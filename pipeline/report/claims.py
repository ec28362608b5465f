"""The paper's claims, each with an estimate, a 95 % interval, a verdict and what it rests on.

Per dataset, on the claims protocol (`report.claims_protocol`, SLF by default: the paper's
linear evaluation), under the strongest attack run at each eps (the per-sample worst case
over the Linf attacks, `any` in robustness.json):

    C1a  CSL is less robust than supervised learning: RA(sup) - RA(csl) > 0
    C1b  ... also relative to clean accuracy: conditional robustness CR(sup) - CR(csl) > 0, where
         CR is the share of a model's clean-correct samples that stay correct under attack
         (1 - attack success rate), so a learner is not penalised for samples it never got right
    C1c  ... also at matched clean accuracy: RA(sup matched) - RA(csl) > 0, the supervised
         pretraining snapshot whose clean accuracy matches the CSL model's (stage `match`)
    C2a  CSL features are more uniform: U(csl) - U(sup) < 0 (per-sample Wang-Isola uniformity)
    C2b  CSL features have smaller class margins: M(csl) - M(sup) < 0 (per-sample leave-one-out centroid margin)
         Both in analyse's primary space, the centred backbone features (pipeline.analyse.PRIMARY_SPACE):
         the features the linear head and the attacks act through, without the common offset the
         head's bias ignores; the report's Representation table adds the other spaces.
    C2c, C2d  the same at matched clean accuracy: against the supervised snapshot of the match stage
    C3   oracle false-negative elimination closes part of the gap: RA(oracle) - RA(csl) > 0
    C4   mined elimination / attraction close part of it: RA(mined) - RA(csl) > 0, next to the
         mining's pair precision and recall
    C5   false-negative removal improves adversarial CSL: RA(X + mined) - RA(X) > 0, X = RoCL, ACL, scored
         under `report.adversarial_protocol` (default: the claims protocol; ACL reports AFF with TRADES)
    C6   CSL is less robust to common corruptions: CA(sup) - CA(csl) > 0, CA the per-sample accuracy
         averaged over every corruption and severity (the abstract's second robustness)
    C7   SupCon (the same contrastive loss, true positives, no false negatives) is more robust than
         CSL: RA(supcon) - RA(csl) > 0 (the paper's Fig. 1 contrast; `report.supcon_method`)

Statistics (`pipeline.report.statistics`): each claim's statistic is taken seed by seed on the shared test
samples (seeds paired by number), and its 95 % interval is a t interval over the seeds that also
carries the test set's item variance (Welch-Satterthwaite df). Verdicts are read at the primary eps
(`report.primary_eps`, else the largest) with Holm's correction over the dataset's claims that rest
on >= 3 seeds; a claim on fewer seeds reads "estimate only, n seeds". The other eps are shown with
uncorrected intervals. A share of the gap is given only where the gap (C1a) is established.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.budget import eps_text
from pipeline.grid import Grid
from pipeline.io import read_sealed
from pipeline.report import statistics as st
from pipeline.report.outcomes import WORST_CASE, Outcomes, bits_array, common_seeds, pair
from pipeline.report.power import needed_size
from pipeline.report.tables import markdown_table

ACCURACY_WITHOUT_EPS = ("C6",)  # accuracy differences read at no eps (corruptions): shown in points like the attack claims


@dataclass(frozen=True)
class Roles:
    """Which methods play which part in the claims (report config)."""

    supervised: str
    csl: str
    matched: str | None  # the matched-clean-accuracy supervised pseudo-method, when the study runs it
    oracle: list[str]
    mined: list[str]
    adversarial: dict[str, str]  # variant with false-negative removal -> its plain adversarial CSL method
    protocol: str
    primary_eps: dict[str, float] = field(default_factory=dict)  # dataset -> eps the verdicts are read at (absent: the largest)
    match_tolerance: float = 0.02  # largest matched clean-accuracy difference (fraction) before C1c is flagged
    supcon: str | None = None  # SupCon (true positives, no false negatives), for C7 against the CSL method
    adversarial_protocol: str | None = None  # the protocol C5 is scored under (None: `protocol`); ACL reports AFF with TRADES


@dataclass
class ClaimRow:
    dataset: str
    claim: str
    statement: str
    comparison: str  # "a - b" in words
    eps: float | None  # None: not an attack number (C2)
    direction: int
    interval: st.Interval
    seeds: list[int]
    primary: bool
    verdict: str = "inconclusive"
    p_holm: float = float("nan")
    alpha: float = 0.05  # the level Holm compares this claim's raw p with
    extra: str = ""  # gap share, mining quality, matched clean accuracy
    needs: str = ""  # the size a decisive verdict would need (inconclusive primary claims)
    flags: list[str] = field(default_factory=list)


# ---- one comparison -------------------------------------------------------------------------
def robust_values(outcomes: Outcomes, a: str, b: str, eps_key: str, seeds: list[int]) -> np.ndarray:
    """(S, n) per-sample paired difference of robust correctness, A - B."""
    ra, rb = pair(outcomes.matrix(a, seeds, WORST_CASE, eps_key), outcomes.matrix(b, seeds, WORST_CASE, eps_key))
    return st.paired_difference(ra, rb)


def conditional_values(outcomes: Outcomes, a: str, b: str, eps_key: str, seeds: list[int]) -> np.ndarray:
    """(S, n) linearised per-sample difference of conditional robustness, A - B."""
    ra, rb = pair(outcomes.matrix(a, seeds, WORST_CASE, eps_key), outcomes.matrix(b, seeds, WORST_CASE, eps_key))
    n = ra.shape[1]
    ca, cb = outcomes.matrix(a, seeds, None, None)[:, :n], outcomes.matrix(b, seeds, None, None)[:, :n]
    return st.conditional_robustness_values(ca, ra) - st.conditional_robustness_values(cb, rb)


# ---- the claims of one dataset ---------------------------------------------------------------
def primary_key(keys: list[str], primary_eps: float | None) -> str:
    """The eps key the verdicts are read at: `primary_eps` when run, else the largest."""
    if primary_eps is not None:
        for key in keys:
            if abs(float(key) - primary_eps) < 1e-9:
                return key
    return keys[-1]


def attack_claims(outcomes: Outcomes, roles: Roles, adversarial: Outcomes | None = None) -> list[ClaimRow]:
    """C1a, C1b, C1c, C3, C4, C5, C7 at every eps (primary: `roles.primary_eps`, else the largest).

    C5 reads `adversarial` (the outcomes under `roles.adversarial_protocol`) when given."""
    rows: list[ClaimRow] = []
    sup, csl = roles.supervised, roles.csl
    specs: list[tuple[str, str, str, str, Callable]] = [
        ("C1a", "CSL is less robust than supervised learning (robust accuracy)", sup, csl, robust_values),
        ("C1b", "CSL is less robust than supervised learning, relative to clean accuracy (conditional robustness)",
         sup, csl, conditional_values),
    ]
    if roles.matched:
        specs.append(("C1c", "CSL is less robust than supervised learning at matched clean accuracy", roles.matched, csl,
                      robust_values))
    specs += [("C3", "oracle false-negative elimination closes part of the gap", m, csl, robust_values) for m in roles.oracle]
    specs += [("C4", f"mined false negatives ({m}) close part of the gap", m, csl, robust_values) for m in roles.mined]
    specs += [("C5", f"false-negative removal improves adversarial CSL ({base} -> {v})", v, base, robust_values)
              for v, base in roles.adversarial.items()]
    if roles.supcon:
        specs.append(("C7", "supervised contrastive learning (no false negatives) is more robust than CSL", roles.supcon, csl,
                      robust_values))
    for claim, statement, a, b, fn in specs:
        source = adversarial if claim == "C5" and adversarial is not None else outcomes
        seeds = common_seeds(source, a, b)
        if not seeds:
            continue
        keys = source.eps_keys(a, seeds)
        primary = primary_key(keys, roles.primary_eps.get(outcomes.dataset)) if keys else None
        for key in keys:
            iv = st.mean_interval(fn(source, a, b, key, seeds))
            row = ClaimRow(outcomes.dataset, claim, statement, f"{a} - {b}", float(key), +1, iv, seeds, key == primary)
            if not np.isfinite(iv.estimate):  # e.g. conditional robustness of a model with no clean-correct sample
                row.extra = "undefined on these samples (a model has no clean-correct sample among them)"
            rows.append(row)
    return rows


def representation_claims(results: Path, dataset: str, roles: Roles) -> list[ClaimRow]:
    """C2a (uniformity) and C2b (class margins) against the supervised model, and C2c / C2d against the
    supervised snapshot at the CSL model's clean accuracy (accuracy shapes geometry: a better classifier
    has tighter classes); per-sample on the test split in analyse's primary space, paired by seed and sample."""
    path = results / "analyse" / dataset / "representation.json"
    if not path.exists():
        return []
    encoders = read_sealed(path, "analyse")["encoders"]

    def values(method: str, seeds: list[int], key: str) -> np.ndarray:
        return np.array([encoders[f"{method}:{s}"]["test"]["per_sample"][key] for s in seeds], dtype=np.float64)

    def seeds_of(method: str | None) -> set[int]:
        return {int(k.split(":")[1]) for k in encoders if k.split(":")[0] == method}

    specs = [("C2a", "CSL features are more uniform (lower uniformity loss)", "uniformity", roles.supervised),
             ("C2b", "CSL features have smaller class margins", "margin", roles.supervised)]
    if roles.matched:
        specs += [("C2c", "CSL features are more uniform at matched clean accuracy", "uniformity", roles.matched),
                  ("C2d", "CSL features have smaller class margins at matched clean accuracy", "margin", roles.matched)]
    rows = []
    for claim, statement, key, other in specs:
        seeds = sorted(seeds_of(roles.csl) & seeds_of(other))
        if not seeds or "per_sample" not in encoders[f"{roles.csl}:{seeds[0]}"]["test"]:
            continue
        d = st.paired_difference(values(roles.csl, seeds, key), values(other, seeds, key))
        d = d[:, np.isfinite(d).all(axis=0)]  # margins: a sample alone in its class has none (null)
        if d.shape[1] < 2:
            continue
        iv = st.mean_interval(d)
        rows.append(ClaimRow(dataset, claim, statement, f"{roles.csl} - {other}", None, -1, iv, seeds, True))
    return rows


def corruption_values(outcomes: Outcomes, method: str, seeds: list[int]) -> np.ndarray | None:
    """(S, n) per-sample accuracy averaged over every corruption and severity that ran; None without per-sample outcomes."""
    rows = []
    for seed in seeds:
        per = outcomes.record(method, seed).get("corruptions", {})
        cells = [bits_array(r["outcomes"]) for sev in per.values() for r in sev.values() if "outcomes" in r]
        if not cells or len(cells) != sum(len(sev) for sev in per.values()):
            return None
        rows.append(np.mean(np.stack([c[: min(map(len, cells))] for c in cells]), axis=0))
    n = min(map(len, rows))
    return np.stack([r[:n] for r in rows])


def corruption_claims(outcomes: Outcomes, roles: Roles) -> list[ClaimRow]:
    """C6: the abstract's robustness to common corruptions, supervised minus CSL, per sample paired by seed."""
    seeds = common_seeds(outcomes, roles.supervised, roles.csl)
    if not seeds:
        return []
    sup, csl = corruption_values(outcomes, roles.supervised, seeds), corruption_values(outcomes, roles.csl, seeds)
    if sup is None or csl is None:
        return []
    a, b = pair(sup, csl)
    if a.shape[1] < 2:
        return []
    iv = st.mean_interval(st.paired_difference(a, b))
    return [ClaimRow(outcomes.dataset, "C6", "CSL is less robust to common corruptions than supervised learning "
                     "(accuracy averaged over the corruptions and severities)", f"{roles.supervised} - {roles.csl}", None, +1,
                     iv, seeds, True)]


def add_gap_shares(rows: list[ClaimRow], outcomes: Outcomes, roles: Roles) -> None:
    """C3/C4: the share of the gap closed, only where the gap itself (C1a at that eps) is established."""
    for row in rows:
        if row.claim not in ("C3", "C4"):
            continue
        variant = row.comparison.split(" - ")[0]
        seeds = common_seeds(outcomes, variant, roles.csl, roles.supervised)
        if not seeds:
            continue
        key = next(k for k in outcomes.eps_keys(variant, seeds) if float(k) == row.eps)
        arrays = [outcomes.matrix(m, seeds, WORST_CASE, key) for m in (variant, roles.csl, roles.supervised)]
        n = min(a.shape[1] for a in arrays)
        share = st.gap_share(*(a[:, :n] for a in arrays))
        # whether the gap is established is C1a's verdict at this eps (one answer for every variant)
        c1a = next((r for r in rows if r.claim == "C1a" and r.eps == row.eps), None)
        gap = c1a.interval if c1a is not None else share.gap
        if not gap.decidable():
            row.extra = f"share of the gap: undefined: the gap rests on {gap.n_seeds} seed(s), fewer than {st.MIN_SEEDS}"
        elif gap.high < 0:  # CSL is the more robust one here: there is no gap to close
            row.extra = (f"share of the gap: undefined: {roles.csl} is more robust than {roles.supervised} here "
                         f"(gap {gap.estimate:+.3f} [{gap.low:+.3f}, {gap.high:+.3f}])")
        elif gap.low <= 0 or share.share is None:
            row.extra = f"share of the gap: undefined: the gap {gap.estimate:+.3f} [{gap.low:+.3f}, {gap.high:+.3f}] is not established"
        else:
            row.extra = f"share of the gap: {share.text()}"
            row.flags += list(share.flags)


def add_mining_quality(rows: list[ClaimRow], results: Path, grid: Grid, roles: Roles) -> None:
    """C4 rows name the mining's pair precision and recall (mean over the seeds mined)."""
    paths = [results / "mine" / rows[0].dataset / f"seed{s}" / "quality.json" for s in grid.mined_seeds()] if rows else []
    quality = [read_sealed(p, "mine") for p in paths if p.exists()]
    if not quality:
        return
    precision = np.mean([q["pair_precision"] for q in quality])
    recall = np.mean([q["pair_recall"] for q in quality])
    chance = np.mean([q.get("chance", np.nan) for q in quality])
    text = f"mining ({quality[0]['algorithm']}): pair precision {precision:.2f}" + (
        f" ({precision / chance:.1f}x chance)" if np.isfinite(chance) and chance > 0 else "") + f", recall {recall:.2f}"
    for row in rows:
        if row.claim == "C4":
            row.extra = f"{row.extra}; {text}" if row.extra else text


def add_matched_accuracy(rows: list[ClaimRow], outcomes: Outcomes, roles: Roles) -> None:
    """C1c rows say how close the matched clean accuracies are, and flag the seeds that miss the tolerance."""
    for row in rows:
        if row.claim != "C1c":
            continue
        a = outcomes.matrix(roles.matched, row.seeds, None, None).mean(1)
        b = outcomes.matrix(roles.csl, row.seeds, None, None).mean(1)
        row.extra = f"clean accuracy {100 * a.mean():.1f} (matched supervised) vs {100 * b.mean():.1f} ({roles.csl})"
        missed = [f"seed {s}: {100 * (x - y):+.1f} points" for s, x, y in zip(row.seeds, a, b, strict=True)
                  if abs(x - y) > roles.match_tolerance + 1e-9]
        if missed:
            row.flags.append(f"match outside the tolerance of {100 * roles.match_tolerance:.1f} points ({', '.join(missed)})")


def decide(rows: list[ClaimRow]) -> None:
    """Holm-corrected verdicts over the dataset's primary claims on >= 3 seeds; the others read "estimate only"."""
    primary = [r for r in rows if r.primary]
    if primary:
        verdicts, adjusted = st.holm_verdicts([r.interval for r in primary], [r.direction for r in primary])
        tested = [r for r in primary if r.interval.decidable()]
        levels = dict(zip(map(id, tested), st.holm_levels([r.interval.p_value() for r in tested]), strict=True))
        for row, v, p in zip(primary, verdicts, adjusted, strict=True):
            row.verdict, row.p_holm, row.alpha = v, float(p), float(levels.get(id(row), 0.05))
    for row in rows:
        if not row.primary:
            row.verdict = (st.verdict(row.interval, row.direction) + " (uncorrected)" if row.interval.decidable()
                           else st.estimate_only(row.interval.n_seeds))


def roles_from(cfg, matched: str | None, match_tolerance: float = 0.02) -> Roles:
    """The claims' roles from the report config (`pipeline.config.ReportConfig`)."""
    return Roles(supervised=cfg.supervised_method, csl=cfg.csl_method, matched=matched, oracle=list(cfg.oracle_methods),
                 mined=list(cfg.mined_methods), adversarial=dict(cfg.adversarial_pairs), protocol=cfg.claims_protocol,
                 primary_eps=dict(cfg.primary_eps), match_tolerance=match_tolerance, supcon=cfg.supcon_method,
                 adversarial_protocol=cfg.adversarial_protocol)


def dataset_claims(results: Path, grid: Grid, dataset: str, roles: Roles) -> list[ClaimRow]:
    """Every claim of one dataset, verdicts decided (deterministic: no resampling)."""
    outcomes = Outcomes(results, grid, dataset, roles.protocol)
    adversarial = Outcomes(results, grid, dataset, roles.adversarial_protocol) if roles.adversarial_protocol else None
    rows = attack_claims(outcomes, roles, adversarial) + representation_claims(results, dataset, roles) + corruption_claims(outcomes, roles)
    add_gap_shares(rows, outcomes, roles)
    add_mining_quality(rows, results, grid, roles)
    add_matched_accuracy(rows, outcomes, roles)
    decide(rows)
    add_needed_sizes(rows, outcomes, results, roles, adversarial)
    order = {c: i for i, c in enumerate(("C1a", "C1b", "C1c", "C2a", "C2b", "C2c", "C2d", "C3", "C4", "C5", "C6", "C7"))}
    return sorted(rows, key=lambda r: (not r.primary, order[r.claim], r.comparison, r.eps or 0.0))


def add_needed_sizes(rows: list[ClaimRow], outcomes: Outcomes, results: Path, roles: Roles,
                     adversarial: Outcomes | None = None) -> None:
    """For undecided primary attack claims: the seeds x samples that would decide the observed effect."""
    for row in rows:
        if not row.primary or row.verdict in ("supported", "contradicted") or row.eps is None:
            continue
        source = adversarial if row.claim == "C5" and adversarial is not None else outcomes
        a, b = row.comparison.split(" - ")
        key = next(k for k in source.eps_keys(a, row.seeds) if float(k) == row.eps)
        fn = conditional_values if row.claim == "C1b" else robust_values
        values = fn(source, a, b, key, row.seeds)
        row.needs = needed_size(values, row.interval.estimate, row.alpha, row.interval.n_samples)


# ---- output ---------------------------------------------------------------------------------
def as_record(row: ClaimRow) -> dict:
    iv = row.interval
    return {"dataset": row.dataset, "claim": row.claim, "statement": row.statement, "comparison": row.comparison,
            "eps": "" if row.eps is None else row.eps, "primary": row.primary, "direction": row.direction,
            "estimate": iv.estimate, "low": iv.low, "high": iv.high, "verdict": row.verdict, "p_holm": row.p_holm,
            "seeds": " ".join(map(str, row.seeds)), "n_seeds": iv.n_seeds, "samples": iv.n_samples, "se": iv.se, "df": iv.df,
            "seed_sd": iv.seed_sd, "seed_level": iv.seed_level, "note": iv.note, "extra": row.extra, "needs": row.needs,
            "flags": "; ".join(row.flags)}


def fmt_points(row: ClaimRow, value: float | None = None) -> str:
    """Accuracy differences (attack claims and C6) in points (x100); representation differences as they are;
    `value`: one number only."""
    accuracy = row.eps is not None or row.claim in ACCURACY_WITHOUT_EPS
    iv, scale = row.interval, (100 if accuracy else 1)
    digits = 1 if accuracy else 3
    if value is not None:
        return f"{scale * value:.{digits}f}" if np.isfinite(value) else "—"
    return f"{scale * iv.estimate:+.{digits}f} [{scale * iv.low:+.{digits}f}, {scale * iv.high:+.{digits}f}]"


def rests_on(row: ClaimRow) -> str:
    seeds = f"n = 1 seed ({row.seeds[0]})" if len(row.seeds) == 1 else f"{len(row.seeds)} seeds ({', '.join(map(str, row.seeds))})"
    return f"{seeds} x {row.interval.n_samples:,} test samples"


def fmt_p(p: float) -> str:
    return f"{p:.3f}" if np.isfinite(p) else "not tested"


def markdown(rows: list[ClaimRow]) -> str:
    """The claims table of one dataset (primary eps), then the other eps, then the power notes."""
    primary = [r for r in rows if r.primary]
    k = sum(r.interval.decidable() for r in primary)
    head = ["claim", "statement", "comparison", "eps", "estimate [95% CI]", "verdict", "Holm p", "seed sd", "rests on", "notes"]
    body = [[r.claim, r.statement, f"`{r.comparison}`", "—" if r.eps is None else eps_text(r.eps), fmt_points(r),
             f"**{r.verdict}**", fmt_p(r.p_holm), fmt_points(r, r.interval.seed_sd), rests_on(r),
             "; ".join(x for x in (r.extra, *r.flags, r.interval.note) if x)] for r in primary]
    text = (f"{k} claims tested at the primary eps (those on >= {st.MIN_SEEDS} seeds), Holm-corrected; accuracy differences in "
            "points (robust accuracy under the per-sample worst case of the Linf attacks), uniformity and margins in their own "
            "units. Intervals: 95 % t intervals over the per-seed paired differences plus the test set's item variance "
            "(Welch-Satterthwaite df); `seed sd` is the sd of the per-seed differences, the training randomness a rerun "
            "with other seeds would see.\n\n") + markdown_table(head, body)
    others = [r for r in rows if not r.primary]
    if others:
        text += "\nAt the other eps (uncorrected intervals, for the trend):\n\n" + markdown_table(
            ["claim", "comparison", "eps", "estimate [95% CI]", "verdict", "rests on", "notes"],
            [[r.claim, f"`{r.comparison}`", eps_text(r.eps), fmt_points(r), r.verdict, rests_on(r),
              r.extra] for r in others])
    needs = [r for r in primary if r.needs]
    if needs:
        text += ("\nWhat a decisive verdict would need (from the measured between-seed and test-set variance, at the claim's "
                 "Holm level):\n\n") + "\n".join(f"- {r.claim} `{r.comparison}`: {r.needs}" for r in needs) + "\n"
    return text
