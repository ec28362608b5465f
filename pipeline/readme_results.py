"""The README's results block, rendered from a study's claims table so that it cannot drift.

    python -m pipeline.readme_results docs/default_study                     # print the block
    python -m pipeline.readme_results docs/default_study --write README.md   # replace it in README.md

`results_block` reads `<study_dir>/claims.csv` (written by the report stage) and renders, per
dataset, one Markdown table of the primary claims (the ones whose verdicts are read, at the
dataset's primary eps). Accuracy claims (eps given) are shown in points (x 100, one decimal),
representation claims (no eps) as they are (three decimals). Columns a claims table of an older
format lacks (seed_sd, extra, flags, ...) show "—". `--write` replaces the text between the lines
`<!-- results:start -->` and `<!-- results:end -->` of the given file. Pure Python (csv only): no
torch, no pandas, deterministic.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from pipeline.budget import eps_text

START = "<!-- results:start -->"
END = "<!-- results:end -->"
DASH = "—"
HEAD = ["claim", "comparison", "eps", "estimate [95% CI]", "verdict", "Holm p", "seeds x samples", "seed sd", "notes"]


def _number(text: str | None) -> float | None:
    """A finite float from a CSV cell; None when empty, missing, not a number or not finite."""
    try:
        value = float(text) if text not in (None, "") else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _cell(text: str) -> str:
    """A table cell: pipes escaped, line breaks flattened."""
    return " ".join(text.replace("|", "\\|").split())


def _eps(row: dict) -> str:
    eps = _number(row.get("eps"))
    return DASH if eps is None else eps_text(eps)


def _units(row: dict) -> tuple[float, int]:
    """(scale, decimals): accuracy claims (eps given, or C6: corruptions) in points, representation claims as they are."""
    accuracy = _number(row.get("eps")) is not None or row.get("claim") in ("C6",)
    return (100.0, 1) if accuracy else (1.0, 3)


def _estimate(row: dict) -> str:
    scale, digits = _units(row)
    est, low, high = (_number(row.get(k)) for k in ("estimate", "low", "high"))
    if est is None:
        return DASH
    text = f"{scale * est:+.{digits}f}"
    if low is not None and high is not None:
        text += f" [{scale * low:+.{digits}f}, {scale * high:+.{digits}f}]"
    return text


def _seed_sd(row: dict) -> str:
    scale, digits = _units(row)
    sd = _number(row.get("seed_sd"))
    return DASH if sd is None else f"{scale * sd:.{digits}f}"


def _holm_p(row: dict) -> str:
    """The Holm-adjusted p the verdict reads (a 95 % interval that excludes 0 may still be inconclusive)."""
    p = _number(row.get("p_holm"))
    return DASH if p is None else f"{p:.3f}"


def _rests_on(row: dict) -> str:
    seeds, samples = _number(row.get("n_seeds")), _number(row.get("samples"))
    return f"{DASH if seeds is None else int(seeds)} x {DASH if samples is None else f'{int(samples):,}'}"


def _notes(row: dict) -> str:
    """`extra` and `flags` joined by "; " (a flag the extra text already states is not repeated)."""
    extra = (row.get("extra") or "").strip()
    flags = [f.strip() for f in (row.get("flags") or "").split("; ") if f.strip()]
    return "; ".join([extra] * bool(extra) + [f for f in flags if f not in extra])


def _table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for row in rows:
        verdict = (row.get("verdict") or "").strip()
        cells = [row.get("claim") or DASH, f"`{row.get('comparison') or ''}`", _eps(row), _estimate(row),
                 f"**{verdict}**" if verdict else DASH, _holm_p(row), _rests_on(row), _seed_sd(row), _notes(row)]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def read_claims(study_dir: Path) -> list[dict]:
    """The rows of `<study_dir>/claims.csv`, in file order."""
    path = Path(study_dir) / "claims.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no claims table (the report stage writes results/report/claims.csv)")
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def results_block(study_dir: Path) -> str:
    """Per dataset (in file order), "**<dataset>**" and a Markdown table of its primary claims."""
    datasets: dict[str, list[dict]] = {}
    for row in read_claims(study_dir):
        if (row.get("primary") or "").strip().lower() == "true":
            datasets.setdefault(row.get("dataset") or "", []).append(row)
    return "\n".join(f"**{name}**\n\n{_table(rows)}" for name, rows in datasets.items())


def _rst_cell(text: str) -> str:
    """A cell of an RST list-table: one line, markup characters escaped."""
    text = " ".join(str(text).split()).replace("\\", "\\\\")
    for char in "*`|_":
        text = text.replace(char, "\\" + char)
    return text or DASH


def landing_rst(study_dir: Path) -> str:
    """The primary claims' verdicts as one compact RST list-table, for the HTML report's first screen.

    A row per claim, a column per dataset (verdict and estimate [95% CI]; the dataset's primary eps in its
    header): Snakemake's landing page centres its content vertically, so a page taller than the window
    loses its top. report.md has every column (Holm p, seeds x samples, notes).
    """
    rows = [r for r in read_claims(study_dir) if (r.get("primary") or "").strip().lower() == "true"]
    datasets = list(dict.fromkeys(r.get("dataset") or "" for r in rows))
    claims = list(dict.fromkeys((r.get("claim") or DASH, r.get("comparison") or DASH) for r in rows))
    cell = {(r.get("claim") or DASH, r.get("comparison") or DASH, r.get("dataset") or ""): r for r in rows}
    eps = {d: next((_eps(r) for r in rows if r.get("dataset") == d and _eps(r) != DASH), "") for d in datasets}
    head = ["claim", "A - B"] + [f"{d} ({e})" if e else d for d, e in eps.items()]
    def verdict(row: dict) -> str:
        return f"{(row.get('verdict') or DASH).strip()}: {_estimate(row)}"

    body = [[claim, comparison] + [verdict(cell[(claim, comparison, d)]) if (claim, comparison, d) in cell else DASH for d in datasets]
            for claim, comparison in claims]
    out = ["", ".. list-table:: The primary claims: verdict and estimate [95% CI] (report.md has every column)",
           "   :header-rows: 1", ""]
    for cells in [head] + body:
        out.append("   * - " + _rst_cell(cells[0]))
        out += [f"     - {_rst_cell(c)}" for c in cells[1:]]
    return "\n".join(out) + "\n\n"


def replace_block(text: str, block: str, name: str = "README.md") -> str:
    """`text` with the lines between the START and END marker lines replaced by `block`."""
    lines = text.splitlines(keepends=True)
    marks = [k for k, line in enumerate(lines) if line.strip() in (START, END)]
    kinds = [lines[k].strip() for k in marks]
    if kinds != [START, END]:
        raise ValueError(f"{name}: needs one line '{START}' followed by one line '{END}' (found {kinds or 'neither'})")
    begin, end = marks
    body = block if block.endswith("\n") or not block else block + "\n"
    return "".join(lines[: begin + 1]) + body + "".join(lines[end:])


def current_block(text: str, name: str = "README.md") -> str:
    """The text between the START and END marker lines of `text`."""
    lines = text.splitlines(keepends=True)
    marks = [k for k, line in enumerate(lines) if line.strip() in (START, END)]
    if [lines[k].strip() for k in marks] != [START, END]:
        raise ValueError(f"{name}: needs one line '{START}' followed by one line '{END}'")
    return "".join(lines[marks[0] + 1: marks[1]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.readme_results", description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path, help="folder holding claims.csv (e.g. docs/default_study or results/report)")
    parser.add_argument("--write", type=Path, metavar="FILE",
                        help=f"replace the block between '{START}' and '{END}' in FILE instead of printing it")
    args = parser.parse_args(argv)
    try:
        block = results_block(args.study_dir)
        if args.write is None:
            sys.stdout.write(block)
            return 0
        if not args.write.is_file():
            raise FileNotFoundError(f"{args.write}: no such file")
        text = args.write.read_text(encoding="utf-8")
        new = replace_block(text, block, str(args.write))
        if new != text:
            args.write.write_text(new, encoding="utf-8")
        print(f"{args.write}: results block {'updated' if new != text else 'already up to date'} from {args.study_dir / 'claims.csv'}")
        return 0
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
