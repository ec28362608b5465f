"""The README's results block is the one `pipeline.readme_results` renders from docs/default_study/claims.csv.

Regenerate it with `python -m pipeline.readme_results docs/default_study --write README.md`.
"""

from __future__ import annotations

import subprocess
import sys

from pipeline.readme_results import END, START, current_block, main, replace_block, results_block
from tests.conftest import REPO

CLAIMS = """\
dataset,claim,statement,comparison,eps,primary,direction,estimate,low,high,verdict,p_holm,n_seeds,samples,se,df,seed_sd,extra,needs,flags
digits,C1a,robust accuracy,supervised - simclr,16.0,True,1,0.12870,0.09418,0.16444,supported,0.001,5,540,0.01,4.2,0.035,,,
digits,C1a,robust accuracy,supervised - simclr,8.0,False,1,0.5,0.4,0.6,supported (uncorrected),,5,540,0.01,4.2,0.03,,,
digits,C2a,uniformity,simclr - supervised,,True,-1,0.74436,0.54828,0.95146,contradicted,0.0,5,540,0.1,4.0,,,,
digits,C3,o,oracle - simclr,16.0,True,1,-0.0333,-0.086,0.021,inconclusive,0.8,5,540,0.02,4.1,nan,share: 26%,,"share outside [0, 1]; flat"
moving_digits,C5,adversarial,acl_mined_elim - acl,8.0,True,1,0.064,-0.007,0.136,"estimate only, 1 seed",,1,140,,,,,,
moving_digits,C1b,relative,supervised - simclr,4.0,False,1,0.1,0.0,0.2,inconclusive (uncorrected),,1,140,,,,,,
"""


def table_rows(block: str) -> list[list[str]]:
    """The body cells of every Markdown table row of `block` (header and rule lines left out)."""
    rows = [line.strip("|").split(" | ") for line in block.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row] for row in rows if row[0].strip() != "claim"]


def test_readme_block_matches_the_default_study():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    expected = results_block(REPO / "docs" / "default_study")
    assert current_block(readme) == expected, (
        "README.md's results block is stale: run `python -m pipeline.readme_results docs/default_study --write README.md`")
    assert readme.count(START) == 1 and readme.count(END) == 1
    assert replace_block(readme, expected) == readme  # --write would change nothing


def test_rendering_of_a_small_claims_table(tmp_path):
    (tmp_path / "claims.csv").write_text(CLAIMS, encoding="utf-8")
    block = results_block(tmp_path)
    assert block == results_block(tmp_path)  # deterministic
    # per-dataset headings, in file order, each followed by its table
    head = "| claim | comparison | eps | estimate [95% CI] | verdict | Holm p | seeds x samples | seed sd | notes |"
    assert block.startswith(f"**digits**\n\n{head}")
    assert block.index("**digits**") < block.index("**moving_digits**")
    rows = table_rows(block)
    assert rows == [
        ["C1a", "`supervised - simclr`", "16/255", "+12.9 [+9.4, +16.4]", "**supported**", "0.001", "5 x 540", "3.5", ""],
        ["C2a", "`simclr - supervised`", "—", "+0.744 [+0.548, +0.951]", "**contradicted**", "0.000", "5 x 540", "—", ""],
        ["C3", "`oracle - simclr`", "16/255", "-3.3 [-8.6, +2.1]", "**inconclusive**", "0.800", "5 x 540", "—",
         "share: 26%; share outside [0, 1]; flat"],
        ["C5", "`acl_mined_elim - acl`", "8/255", "+6.4 [-0.7, +13.6]", "**estimate only, 1 seed**", "—", "1 x 140", "—", ""],
    ]
    assert "uncorrected" not in block  # only the primary rows


def test_old_format_without_optional_columns(tmp_path):
    (tmp_path / "claims.csv").write_text(
        "dataset,claim,comparison,eps,primary,estimate,low,high,verdict,n_seeds,samples\n"
        "digits,C2b,simclr - supervised,,True,-0.1294,-0.1621,-0.0968,supported,2,540\n", encoding="utf-8")
    assert table_rows(results_block(tmp_path)) == [
        ["C2b", "`simclr - supervised`", "—", "-0.129 [-0.162, -0.097]", "**supported**", "—", "2 x 540", "—", ""]]


def test_write_replaces_only_the_block(tmp_path):
    (tmp_path / "claims.csv").write_text(CLAIMS, encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n\n{START}\nold text\n{END}\n\nafter\n", encoding="utf-8")
    assert main([str(tmp_path), "--write", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(f"# title\n\nbefore\n\n{START}\n**digits**\n") and text.endswith(f"{END}\n\nafter\n")
    assert "old text" not in text and current_block(text) == results_block(tmp_path)
    assert main([str(tmp_path), "--write", str(readme)]) == 0 and readme.read_text(encoding="utf-8") == text


def test_write_without_markers_fails_naming_the_file(tmp_path):
    (tmp_path / "claims.csv").write_text(CLAIMS, encoding="utf-8")
    readme = tmp_path / "NOTES.md"
    readme.write_text("# no markers here\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pipeline.readme_results", str(tmp_path), "--write", str(readme)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert str(readme) in proc.stderr and START in proc.stderr
    assert readme.read_text(encoding="utf-8") == "# no markers here\n"  # left as it was


def test_a_flag_the_extra_text_states_is_not_repeated(tmp_path):
    (tmp_path / "claims.csv").write_text(
        "dataset,claim,comparison,eps,primary,estimate,low,high,verdict,n_seeds,samples,extra,flags\n"
        'digits,C3,a - b,8.0,True,0.03,-0.02,0.09,inconclusive,3,540,"share 26% (share 1.2 outside [0, 1])",'
        '"share 1.2 outside [0, 1]; seed 2 did not level off"\n', encoding="utf-8")
    assert table_rows(results_block(tmp_path))[0][-1] == "share 26% (share 1.2 outside [0, 1]); seed 2 did not level off"


def test_landing_page_table_has_a_row_per_claim_and_a_column_per_dataset(tmp_path):
    """The HTML report's first screen: one compact list-table, the verdict and estimate per dataset, primary rows only."""
    from pipeline.readme_results import landing_rst

    (tmp_path / "claims.csv").write_text(CLAIMS, encoding="utf-8")
    rst = landing_rst(tmp_path)
    rows = [block.strip().splitlines() for block in rst.split("   * - ")[1:]]
    cells = [[row[0]] + [line.strip().removeprefix("- ") for line in row[1:]] for row in rows]
    assert cells[0] == ["claim", "A - B", "digits (16/255)", "moving\\_digits (8/255)"]  # RST-escaped underscore
    assert cells[1] == ["C1a", "supervised - simclr", "supported: +12.9 [+9.4, +16.4]", "—"]
    assert cells[-1] == ["C5", "acl\\_mined\\_elim - acl", "—", "estimate only, 1 seed: +6.4 [-0.7, +13.6]"]
    assert len(cells) == 1 + 4 and "uncorrected" not in rst  # header + the 4 primary claims
