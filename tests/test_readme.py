"""The README's cheap commands run exactly as written (no added --cores) after a run.

A copy of the workflow whose default study (config/config.yaml) is the tiny one runs
`snakemake --cores all` as the README says; then every README command that only plans, reports
or unlocks (`-n`, `--report`, `--unlock`, the `--config` examples) runs verbatim in a shell.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.workflow
COPIED = ["Snakefile", "workflow", "pipeline", "config", ".test"]
ENV = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}  # this venv's snakemake
CHEAP = re.compile(r"(^|\s)(-n|--report|--unlock)(\s|$)")


def readme_commands() -> list[str]:
    """Every `snakemake ...` command of README.md, from code spans and from bash blocks (comments cut)."""
    text = (REPO / "README.md").read_text()
    spans = re.findall(r"`(snakemake[^`]*)`", text)
    blocks = [line.split("  #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
              for line in block.splitlines() if line.strip().startswith("snakemake")]
    return list(dict.fromkeys(spans + blocks))


def cheap_commands() -> list[str]:
    return [c for c in readme_commands() if CHEAP.search(c) and "…" not in c and "<" not in c]


def test_readme_lists_the_commands_the_issue_names():
    commands = cheap_commands()
    for expected in ("snakemake --report report.html", "snakemake -n", "snakemake --unlock", "snakemake -n --config seeds=[0]"):
        assert expected in commands, commands


@pytest.fixture(scope="module")
def tiny_default(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("readme")
    for name in COPIED:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
    for cache in workdir.rglob("__pycache__"):
        shutil.rmtree(cache)
    shutil.copy(workdir / ".test" / "config.yaml", workdir / "config" / "config.yaml")  # the tiny study is the default
    proc = subprocess.run("snakemake --cores all", shell=True, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


@pytest.mark.parametrize("command", cheap_commands())
def test_readme_command_runs_verbatim(tiny_default, command):
    proc = subprocess.run(command, shell=True, cwd=tiny_default, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    if "--report" in command:
        assert (tiny_default / "report.html").stat().st_size > 50_000


def test_every_job_log_starts_with_its_command(tiny_default):
    logs = sorted((tiny_default / "results" / "logs").rglob("*.log"))
    assert logs
    for log in logs:
        first = log.read_text().splitlines()[0]
        assert re.match(r"# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  \S+ -m pipeline\.\w+ ", first), (log, first)
