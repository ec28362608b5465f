"""The profiles, and the tiny study on a real single-node SLURM cluster.

The first tests read the profiles (every run). The cluster tests bring up munge, MariaDB,
slurmdbd, slurmctld and slurmd with tests/slurm/cluster.sh (installing the Debian packages
when they are missing), run the tiny study through `--workflow-profile workflow/profiles/slurm`
with snakemake-executor-plugin-slurm, check in SLURM's accounting that every job ran there
(GPU stages with a GPU), run the multi-GPU self-check as a 2-GPU SLURM job, and tear the
cluster down. They skip, saying why, where they cannot run: not root, no apt-get and no
SLURM, the package registry unreachable, the plugin not installed, or SLURM_TEST=0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

CLUSTER_SH = REPO / "tests" / "slurm" / "cluster.sh"
PROFILES = REPO / "workflow" / "profiles"
GPU_STAGES = {"pretrain", "mine", "finetune", "match", "evaluate", "analyse"}
COPIED = ["Snakefile", "workflow", "pipeline", "config", ".test"]


def profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def rules_defined() -> set[str]:
    text = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    return set(re.findall(r"^rule (\w+):", text, re.M))


# ---- the profiles (no cluster needed) --------------------------------------------------------
def test_profiles_give_exactly_the_gpu_stages_a_gpu():
    assert GPU_STAGES <= rules_defined()
    for name in ("default", "slurm"):
        resources = profile(name)["set-resources"]
        assert set(resources) <= rules_defined(), f"{name}: set-resources names a rule that does not exist"
        assert {rule for rule, r in resources.items() if r.get("gpu") == 1} == GPU_STAGES, name


def test_slurm_profile_requeues_and_retries():
    slurm = profile("slurm")
    assert slurm["executor"] == "slurm" and slurm["slurm-requeue"] is True and slurm["retries"] >= 1
    for rule in GPU_STAGES:
        r = slurm["set-resources"][rule]
        assert r["cpus_per_gpu"] == slurm["set-threads"][rule]  # torch gets the CPUs the job holds
        assert r["mem_mb"] > 0 and r["runtime"] > 0


def test_default_profile_is_picked_up_at_the_repository_root(tmp_path):
    """`snakemake` at the root finds profiles/default (a link to workflow/profiles/default) by itself."""
    for name in COPIED:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    os.symlink(os.readlink(REPO / "profiles"), tmp_path / "profiles")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", ".test/config.yaml",
                           "--replace-workflow-config"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Using workflow specific profile profiles/default" in out
    jobs = {m.group(1): m.group(2) for m in re.finditer(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", out, re.M)}
    assert "gpu=1" in jobs["pretrain"] and "gpu=1" in jobs["evaluate"] and "gpu" not in jobs["decode"]


# ---- a real cluster ---------------------------------------------------------------------------
def why_not_here() -> str | None:
    """Why the cluster tests cannot run on this machine, or None."""
    if os.environ.get("SLURM_TEST") == "0":
        return "SLURM_TEST=0"
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "needs root on Linux: the test starts munged, MariaDB and the SLURM daemons"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install it (Debian/Ubuntu only)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return 'snakemake-executor-plugin-slurm is not installed: pip install -e ".[slurm]"'
    if Path("/etc/slurm/slurm.conf").exists() and "cluster.sh" not in Path("/etc/slurm/slurm.conf").read_text():
        return "this machine has its own SLURM configuration (/etc/slurm/slurm.conf); not touching it"
    return None


def cluster_sh(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=timeout)


def daemon_logs(state: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted((state / "log").glob("*.log")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node cluster; always torn down, even when a test fails."""
    reason = why_not_here()
    if reason:
        pytest.skip(reason)
    try:
        installed = cluster_sh("install", timeout=700)
    except subprocess.TimeoutExpired:
        pytest.skip("apt-get install of the SLURM packages timed out (package registry slow or unreachable)")
    if installed.returncode != 0:
        pytest.skip(f"could not install the SLURM packages (no package registry?): {installed.stderr[-800:]}")
    state = tmp_path_factory.mktemp("slurm")
    try:
        up = cluster_sh("up", str(state), timeout=180)
        assert up.returncode == 0, f"the cluster did not come up:\n{up.stderr[-2000:]}\n{daemon_logs(state)}"
        yield state
    finally:
        cluster_sh("down", str(state), timeout=120)


def start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for `proc`; past `timeout`, SIGINT first (Snakemake then cancels its SLURM jobs), SIGKILL last."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def snakemake_slurm(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--workflow-profile", "workflow/profiles/slurm", *args]


def fit_profile_to_node(workdir: Path) -> None:
    """The copied slurm profile, with CPUs, memory and runtime cut to the test node; checks faster."""
    path = workdir / "workflow" / "profiles" / "slurm" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["cores"] = 2
    cfg["set-threads"] = {rule: 1 for rule in cfg["set-threads"]}
    cfg["default-resources"] = {"mem_mb": 1000, "runtime": 10}
    for res in cfg["set-resources"].values():
        res.update({"mem_mb": 1000, "runtime": 10}, **({"cpus_per_gpu": 1} if "cpus_per_gpu" in res else {}))
    # the plugin waits 40 s before its first status query by default; `sacct` answers at once here
    cfg.update({"slurm-init-seconds-before-status-checks": 1, "slurm-keep-successful-logs": True})
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def sacct_jobs(since: str) -> list[dict]:
    fields = ["JobID", "State", "AllocTRES", "Comment"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", since, "-o", ",".join(fields)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [dict(zip(fields, line.split("|", 3), strict=True)) for line in out.splitlines() if line]


def tiny_study_config() -> str:
    """.test/config.yaml cut to the methods that reach every rule (the supervised baseline, the CSL
    method and mining's warm-up, one mined variant) and to the `slf` protocol, for time.

    It becomes config/config.yaml of the copy: Snakemake 9.27 does not pass
    --replace-workflow-config on to the jobs it submits, which would then merge the tiny
    config into the default one (other methods, other settings).
    """
    cfg = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    methods = cfg["pretrain"]["methods"]
    keep = {cfg.get("report", {}).get("supervised_method", "supervised"), cfg.get("report", {}).get("csl_method", "simclr"),
            cfg.get("mine", {}).get("warmup_method", "simclr"),
            next(name for name, m in methods.items() if m.get("false_negatives") == "mined")}
    cfg["pretrain"]["methods"] = {name: m for name, m in methods.items() if name in keep}
    report = cfg.setdefault("report", {})
    for role in ("oracle_methods", "mined_methods"):  # the claims name only methods that still run
        report[role] = [m for m in report.get(role, []) if m in keep]
    if report.get("random_init_method") not in keep:
        report["random_init_method"] = None
    cfg.pop("mechanism", None)  # its levers would add methods
    protocols = cfg.get("finetune", {}).get("protocols")
    if protocols:
        cfg["finetune"]["protocols"] = {"slf": protocols.get("slf", {})}
    return yaml.safe_dump(cfg, sort_keys=False)


@pytest.fixture(scope="module")
def slurm_study(cluster, tmp_path_factory) -> tuple[Path, str, list[dict]]:
    workdir = tmp_path_factory.mktemp("slurm_study")
    for name in COPIED:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
    for cache in workdir.rglob("__pycache__"):
        shutil.rmtree(cache)
    (workdir / "config" / "config.yaml").write_text(tiny_study_config())
    fit_profile_to_node(workdir)
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    rc = finish(start(snakemake_slurm(), workdir, workdir / "run.log"), timeout=600)
    log = (workdir / "run.log").read_text(errors="replace")
    assert rc == 0, log[-6000:]
    return workdir, log, sacct_jobs(since)


@pytest.mark.slurm
@pytest.mark.timeout(1800)  # the first cluster test also pays for apt-get, the cluster and the study
def test_tiny_study_runs_through_slurm(slurm_study):
    workdir, log, _ = slurm_study
    md = (workdir / "results" / "report" / "report.md").read_text()
    assert "digits (image)" in md and "moving_digits (video)" in md
    assert "Using workflow specific profile workflow/profiles/slurm" in log
    assert "SLURM run ID" in log  # the executor plugin submitted the jobs


@pytest.mark.slurm
def test_every_job_ran_as_a_slurm_job_and_gpu_stages_got_a_gpu(slurm_study):
    workdir, _, jobs = slurm_study
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        by_rule.setdefault(job["Comment"].split("_wildcards")[0].removeprefix("rule_"), []).append(job)
    assert set(by_rule) == GPU_STAGES | {"embed", "decode"}  # report is a local rule
    assert all(j["State"] == "COMPLETED" for js in by_rule.values() for j in js)
    encoders = list((workdir / "results" / "pretrain").rglob("encoder.pt"))
    assert len(by_rule["pretrain"]) == len(encoders) == 6  # 3 methods x 2 datasets
    assert len(by_rule["finetune"]) == 6 and len(by_rule["match"]) == 2  # match: 1 seed x 2 datasets
    assert len(by_rule["evaluate"]) == 6 + 2  # the finetuned classifiers and the matched supervised ones
    for rule, js in by_rule.items():
        assert all(("gres/gpu=1" in j["AllocTRES"]) == (rule in GPU_STAGES) for j in js), (rule, js)
    logs = list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert len(logs) == len(jobs)  # one SLURM log per job (kept by slurm-keep-successful-logs)


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_two_gpu_job_runs_data_parallel_under_torchrun(cluster):
    """`srun --gpus=2 python -m pipeline.distributed` relaunches itself as 2 ranks (gloo on this CPU node)
    and checks that the data-parallel step equals the single-process one."""
    cmd = ["srun", "--gpus=2", "--cpus-per-gpu=1", "--mem=2000", "-t", "5", f"--chdir={REPO}",
           sys.executable, "-m", "pipeline.distributed"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # no line anchors: the two ranks write to the job's one stdout concurrently
    assert sorted(re.findall(r"rank (\d)/2: \|DDP - single process\| = \S+ \(ok\)", proc.stdout)) == ["0", "1"], proc.stdout + proc.stderr


def requeue_when(path: Path, comment: str, proc: subprocess.Popen, timeout_s: float) -> str:
    """Once `path` exists, `scontrol requeue` the running SLURM job whose comment is `comment`."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)
    queue = subprocess.run(["squeue", "-h", "-o", "%i %k"], capture_output=True, text=True, timeout=30).stdout
    ids = [line.split()[0] for line in queue.splitlines() if line.split()[1:] == [comment]]
    assert len(ids) == 1, f"no running job {comment} to requeue (finished too early?): {queue}"
    subprocess.run(["scontrol", "requeue", ids[0]], check=True, timeout=30)
    return ids[0]


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_requeued_pretrain_job_resumes_from_its_checkpoint(slurm_study):
    """Preemption on the cluster: SLURM requeues a running pretrain job, which the test cluster
    (JobRequeue=0) allows only because the profile's slurm-requeue submitted it with --requeue;
    the job runs again and the stage resumes from its epoch checkpoint."""
    workdir, epochs = slurm_study[0], 10
    out = workdir / "results" / "pretrain" / "digits" / "simclr" / "seed0"
    # a complete study file (--configfile replaces config/config.yaml in the main process and the jobs
    # alike; --config would pass "10" as a string): the study's own config with longer image pretraining
    study = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    study["pretrain"]["image"]["epochs"] = epochs
    (workdir / "longer.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    cmd = snakemake_slurm(str(out.relative_to(workdir) / "encoder.pt"), "--configfile", "longer.yaml")
    proc = start(cmd, workdir, workdir / "requeue.log")
    try:
        job_id = requeue_when(out / "checkpoint.pt", "rule_pretrain_wildcards_digits_simclr_0", proc, timeout_s=300)
    except BaseException:
        finish(proc, timeout=0)  # interrupt now: Snakemake cancels its job
        raise
    rc = finish(proc, timeout=400)
    assert rc == 0, (workdir / "requeue.log").read_text(errors="replace")[-5000:]
    states = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True,
                            text=True, timeout=30).stdout.split()
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
    stage_log = (workdir / "results" / "logs" / "pretrain" / "digits" / "simclr" / "seed0.log").read_text()
    assert "resumed from" in stage_log, stage_log[-2000:]
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))


@pytest.mark.slurm
@pytest.mark.timeout(400)
def test_pretrain_rule_with_two_gpus_trains_data_parallel(slurm_study):
    """`pretrain: gpu: 2` in a profile: the rule's SLURM job gets 2 GPUs, the stage relaunches
    itself under torchrun as 2 ranks (gloo on this CPU node) and rank 0 writes the encoder."""
    workdir = slurm_study[0]
    target = "results/pretrain/digits/supervised/seed0/encoder.pt"
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    cmd = snakemake_slurm(target, "--forcerun", target, "--set-resources", "pretrain:gpu=2", "pretrain:cpus_per_gpu=1")
    rc = finish(start(cmd, workdir, workdir / "two_gpus.log"), timeout=350)
    assert rc == 0, (workdir / "two_gpus.log").read_text(errors="replace")[-5000:]
    metrics = json.loads((workdir / target).with_name("metrics.json").read_text())
    assert metrics["world_size"] == 2, metrics
    jobs = [j for j in sacct_jobs(since) if j["Comment"].startswith("rule_pretrain")]
    assert len(jobs) == 1 and "gres/gpu=2" in jobs[0]["AllocTRES"], jobs
