"""Replication check: do two runs of the study reach the same verdicts on the paper's claims?

    python -m pipeline.compare --claims A B [--strict]

A and B are each a claims.csv (written by pipeline.report.claims), a folder holding `claims.csv`
(docs/default_study/) or a results folder holding `report/claims.csv`. Only primary rows are
compared, matched by (dataset, claim, comparison). For each matched claim

    z = (estimate_a - estimate_b) / sqrt(se_a^2 + se_b^2)

with `se` the standard error column; files without it (older runs) get se = (high - low) / (2 x 1.959964)
from the 95 % interval, and the output says so. Flags: OPPOSITE (one run supported, the other
contradicted), |z|>1.96, and "decisive on <3 seeds" (a supported/contradicted verdict from fewer
than 3 seeds). The replication target: no opposite verdicts; >= 10 primary claims on >= 3 seeds in
both runs; at most 3 of those with |z| > 1.96; no decisive verdict on < 3 seeds.

Exit status: 1 when a verdict is opposite (with --strict also when the target is not met),
2 when an input is missing or unreadable, 0 otherwise.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ClaimsError

Z_95 = 1.959964  # two-sided 95 % normal quantile: the interval half-width in standard errors
MIN_SEEDS = 3  # a verdict on fewer seeds does not resample the seed level enough to be decisive
MIN_CLAIMS = 10  # the target: at least this many primary claims on >= MIN_SEEDS seeds in both runs
MAX_SHIFTED = 3  # ... of which at most this many with |z| > Z_95
DECISIVE = ("supported", "contradicted")
REQUIRED = ("dataset", "claim", "comparison", "primary", "estimate", "low", "high", "verdict", "n_seeds")
TARGET = (f"no opposite verdicts; >= {MIN_CLAIMS} primary claims on >= {MIN_SEEDS} seeds in both; at most {MAX_SHIFTED} "
          f"of those with |z| > 1.96; no decisive verdict on < {MIN_SEEDS} seeds")

Key = tuple[str, str, str]  # (dataset, claim, comparison)


@dataclass(frozen=True)
class Claim:
    """One primary row of a claims.csv."""

    dataset: str
    claim: str
    comparison: str
    eps: str  # "" for the representation claims (C2), which are not accuracy differences
    estimate: float
    low: float
    high: float
    se: float
    se_derived: bool  # se computed from the interval (no `se` value in the file)
    verdict: str
    n_seeds: int

    @property
    def key(self) -> Key:
        return (self.dataset, self.claim, self.comparison)

    @property
    def kind(self) -> str:
        """The verdict without qualifiers: supported, contradicted, inconclusive or estimate only."""
        verdict = self.verdict.removesuffix(" (uncorrected)").strip()
        return "estimate only" if verdict.startswith("estimate only") else verdict

    @property
    def decisive_on_few_seeds(self) -> bool:
        return self.kind in DECISIVE and self.n_seeds < MIN_SEEDS


@dataclass(frozen=True)
class Match:
    """The same claim in run A and run B."""

    a: Claim
    b: Claim

    @property
    def z(self) -> float:
        """(a - b) / sqrt(se_a^2 + se_b^2); 0 for equal estimates without spread, inf for unequal ones."""
        denominator = math.hypot(self.a.se, self.b.se)
        delta = self.a.estimate - self.b.estimate
        if denominator == 0:
            return 0.0 if delta == 0 else math.copysign(math.inf, delta)
        return delta / denominator

    @property
    def opposite(self) -> bool:
        return {self.a.kind, self.b.kind} == set(DECISIVE)

    @property
    def shifted(self) -> bool:
        return abs(self.z) > Z_95  # False for NaN

    @property
    def seeded(self) -> bool:
        """Both runs rest on >= MIN_SEEDS seeds."""
        return min(self.a.n_seeds, self.b.n_seeds) >= MIN_SEEDS

    def flags(self) -> list[str]:
        flags = ["OPPOSITE"] if self.opposite else []
        if self.shifted:
            flags.append("|z|>1.96")
        few = [run for run, c in (("A", self.a), ("B", self.b)) if c.decisive_on_few_seeds]
        if few:
            flags.append(f"decisive on <{MIN_SEEDS} seeds ({', '.join(few)})")
        return flags


def resolve(path: Path) -> Path:
    """The claims.csv that `path` names: the file itself, or `path`/claims.csv, or `path`/report/claims.csv."""
    if path.is_file():
        return path
    if not path.exists():
        raise ClaimsError(f"claims file not found: {path}")
    for candidate in (path / "claims.csv", path / "report" / "claims.csv"):
        if candidate.is_file():
            return candidate
    raise ClaimsError(f"no claims.csv in {path} (looked for {path / 'claims.csv'} and {path / 'report' / 'claims.csv'})")


def number(row: dict[str, str], column: str, where: str) -> float:
    text = (row.get(column) or "").strip()
    try:
        return float(text) if text else math.nan
    except ValueError:
        raise ClaimsError(f"{where}: {column} {text!r} is not a number") from None


def parse_row(row: dict[str, str], where: str) -> Claim:
    """A Claim from one CSV row; se from the interval when the row has no `se` value."""
    low, high = number(row, "low", where), number(row, "high", where)
    se = number(row, "se", where)
    derived = math.isnan(se)
    n_seeds = number(row, "n_seeds", where)
    return Claim(dataset=row["dataset"], claim=row["claim"], comparison=row["comparison"], eps=(row.get("eps") or "").strip(),
                 estimate=number(row, "estimate", where), low=low, high=high,
                 se=(high - low) / (2 * Z_95) if derived else se, se_derived=derived, verdict=row["verdict"].strip(),
                 n_seeds=0 if math.isnan(n_seeds) else int(n_seeds))


def read_claims(path: Path) -> dict[Key, Claim]:
    """The primary claims of a claims.csv (or a folder holding one), by (dataset, claim, comparison)."""
    file = resolve(path)
    try:
        with open(file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ClaimsError(f"{file}: not a claims table (missing column(s) {', '.join(missing)})")
            claims: dict[Key, Claim] = {}
            for line, row in enumerate(reader, start=2):
                if (row.get("primary") or "").strip().lower() not in ("true", "1"):
                    continue
                claim = parse_row(row, f"{file} line {line}")
                if claim.key in claims:
                    raise ClaimsError(f"{file} line {line}: primary claim {' / '.join(claim.key)} appears twice")
                claims[claim.key] = claim
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ClaimsError(f"cannot read {file}: {error}") from None
    return claims


def fmt_interval(c: Claim) -> str:
    """Accuracy differences in points (x100), representation differences as they are (as pipeline.report.claims)."""
    scale, digits = (100, 1) if c.eps else (1, 3)
    return f"{scale * c.estimate:+.{digits}f} [{scale * c.low:+.{digits}f}, {scale * c.high:+.{digits}f}]"


def fmt_z(z: float) -> str:
    return "—" if math.isnan(z) else f"{z:+.2f}"


def table(matches: list[Match]) -> str:
    head = ["dataset", "claim", "comparison", "A estimate [95% CI]", "A verdict", "B estimate [95% CI]", "B verdict",
            "seeds A/B", "z", "flags"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in matches:
        cells = [m.a.dataset, m.a.claim, f"`{m.a.comparison}`", fmt_interval(m.a), m.a.verdict, fmt_interval(m.b),
                 m.b.verdict, f"{m.a.n_seeds}/{m.b.n_seeds}", fmt_z(m.z), "; ".join(m.flags())]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")  # "|z|" inside a cell
    return "\n".join(lines)


def target_failures(matches: list[Match]) -> list[str]:
    """The parts of the replication target (TARGET) that the matched claims miss; empty when it is met."""
    seeded = [m for m in matches if m.seeded]
    failures = []
    if (opposite := sum(m.opposite for m in matches)):
        failures.append(f"{opposite} opposite verdict(s)")
    if len(seeded) < MIN_CLAIMS:
        failures.append(f"only {len(seeded)} primary claim(s) on >= {MIN_SEEDS} seeds in both (need >= {MIN_CLAIMS})")
    if (shifted := sum(m.shifted for m in seeded)) > MAX_SHIFTED:
        failures.append(f"{shifted} of those with |z| > 1.96 (at most {MAX_SHIFTED})")
    if (few := decisive_on_few_seeds(matches)):
        failures.append(f"{few} decisive verdict(s) on < {MIN_SEEDS} seeds")
    return failures


def decisive_on_few_seeds(matches: list[Match]) -> int:
    """Supported/contradicted verdicts (counting each run's separately) resting on fewer than MIN_SEEDS seeds."""
    return sum(m.a.decisive_on_few_seeds + m.b.decisive_on_few_seeds for m in matches)


def summary(matches: list[Match]) -> str:
    with_z = [m for m in matches if not math.isnan(m.z)]
    failures = target_failures(matches)
    verdict = "met" if not failures else "not met: " + "; ".join(failures)
    few_a, few_b = (sum(getattr(m, run).decisive_on_few_seeds for m in matches) for run in ("a", "b"))
    return "\n".join([
        f"- claims matched: {len(matches)}",
        f"- opposite verdicts: {sum(m.opposite for m in matches)}",
        f"- |z| > 1.96: {sum(m.shifted for m in with_z)} of {len(with_z)}",
        f"- claims on >= {MIN_SEEDS} seeds in both runs: {sum(m.seeded for m in matches)} of {len(matches)}",
        f"- decisive verdicts on < {MIN_SEEDS} seeds: {decisive_on_few_seeds(matches)} (A {few_a}, B {few_b})",
        f"- same verdict: {sum(m.a.kind == m.b.kind for m in matches)} of {len(matches)}",
        "",
        f"Replication target ({TARGET}): {verdict}",
    ])


def se_note(run: str, claims: dict[Key, Claim]) -> str | None:
    derived = sum(c.se_derived for c in claims.values())
    if not derived:
        return None
    share = "all claims (no `se` in the file)" if derived == len(claims) else f"{derived} of {len(claims)} claims (no `se` value)"
    return f"{run}: se derived from the 95% interval, (high - low) / (2 x {Z_95}), for {share}."


def one_sided(run: str, keys: list[Key]) -> list[str]:
    return [f"- only in {run}: {dataset} {claim} `{comparison}`" for dataset, claim, comparison in keys]


def report(path_a: Path, path_b: Path, claims_a: dict[Key, Claim], claims_b: dict[Key, Claim]) -> tuple[str, list[Match]]:
    """The Markdown report of the comparison and the matched claims (in A's order)."""
    matches = [Match(claims_a[k], claims_b[k]) for k in claims_a if k in claims_b]
    parts = [f"# Claims replication\n\nA: {resolve(path_a)} ({len(claims_a)} primary claims)\n"
             f"B: {resolve(path_b)} ({len(claims_b)} primary claims)\n"
             "Estimates: accuracy differences in points, representation differences in their own units."]
    notes = [n for n in (se_note("A", claims_a), se_note("B", claims_b)) if n]
    if notes:
        parts.append("\n".join(notes))
    parts.append(table(matches))
    only = one_sided("A", [k for k in claims_a if k not in claims_b]) + one_sided("B", [k for k in claims_b if k not in claims_a])
    if only:
        parts.append("\n".join(only))
    parts.append("## Summary\n\n" + summary(matches))
    return "\n\n".join(parts), matches


def check(path_a: Path, path_b: Path, strict: bool = False) -> int:
    """Print the replication report of two claims tables; the exit status (see the module docstring)."""
    claims_a, claims_b = read_claims(path_a), read_claims(path_b)
    text, matches = report(path_a, path_b, claims_a, claims_b)
    print(text)
    if any(m.opposite for m in matches):
        return 1
    return 1 if strict and target_failures(matches) else 0
