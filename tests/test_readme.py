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
COPIED = ["Snakefile", "workflow", "profiles", "pipeline", "config", ".test"]  # profiles: the default profile applies
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


def copy_tiny_default(workdir):
    """The workflow, with the tiny study as its default study (config/config.yaml)."""
    for name in COPIED:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
    for cache in workdir.rglob("__pycache__"):
        shutil.rmtree(cache)
    shutil.copy(workdir / ".test" / "config.yaml", workdir / "config" / "config.yaml")
    return workdir


def run_study(workdir, env):
    """`snakemake --cores all` as the README writes it; its terminal output is kept in run.out."""
    proc = subprocess.run("snakemake --cores all", shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    (workdir / "run.out").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_readme_stays_a_five_minute_read():
    """Everything beyond what it does, the two commands, where results land and how to read the claims goes to docs/."""
    assert (REPO / "README.md").stat().st_size < 12_000


@pytest.fixture(scope="module")
def tiny_default(tmp_path_factory):
    workdir = copy_tiny_default(tmp_path_factory.mktemp("readme"))
    run_study(workdir, ENV)
    return workdir


def test_the_terminal_shows_one_line_per_job_start_and_end_with_an_eta(tiny_default):
    out = (tiny_default / "run.out").read_text()
    jobs = int(re.search(r"^total\s+(\d+)$", out, re.M).group(1))
    done = re.findall(r"^\d\d:\d\d:\d\d  done   (\S+ ?\S*)  \[(\d+)/(\d+)\]( · ETA \d\d:\d\d \(.+ left\))?$", out, re.M)
    assert [int(d[1]) for d in done] == list(range(1, jobs + 1)) and all(d[3] for d in done)
    assert "    input: " not in out and "Select jobs to execute" not in out  # no banners, no scheduler chatter
    assert len(out.splitlines()) < 2 * jobs + 50  # Snakemake's header and job table, then two lines a job
    assert "Done. Results: results/report/report.md" in out and "snakemake --report report.html" in out
    banners = list((tiny_default / ".snakemake" / "log").glob("*.snakemake.log"))[0].read_text()
    assert banners.count("    input: ") >= jobs - 10  # Snakemake's own log keeps every banner


def test_a_dry_run_keeps_every_job_and_its_command(tiny_default):
    proc = subprocess.run("snakemake -n -p --forcerun report", shell=True, cwd=tiny_default, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0 and "-m pipeline.warm pipeline.report" in proc.stdout + proc.stderr


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


@pytest.mark.slow
def test_readme_commands_run_in_a_venv_with_only_the_install(tmp_path):
    """The README's install (`pip install -e .`, not the test extra) is all its commands need: a fresh venv gets
    exactly that, then runs the study (the tiny one as default) and every cheap command verbatim. pytest pulls in
    packages (pygments once) that the commands need and the install lacked; this venv has none of them."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "-e", str(REPO)], capture_output=True, text=True, timeout=2400)
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import pytest"], capture_output=True).returncode != 0  # no test extra
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    workdir = tmp_path / "study"
    workdir.mkdir()
    run_study(copy_tiny_default(workdir), env)
    for command in cheap_commands():
        proc = subprocess.run(command, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert (workdir / "report.html").stat().st_size > 50_000
