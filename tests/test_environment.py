"""pipeline.environment: what every metrics file records about the machine, the libraries and the code."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
import sys

import pytest

from pipeline import environment as env
from tests.conftest import REPO


def test_keys_and_versions_match_package_metadata():
    import torch  # a stage that trains has imported torch: its thread count is recorded

    info = env.environment()
    assert {"cpu", "python", "hostname", "versions"} <= set(info)
    assert info["python"] == platform.python_version() and info["cpu"]
    for name in ("torch", "numpy", "av", "decord"):
        assert info["versions"][name] == importlib.metadata.version(name)
    assert info["torch_threads"] == torch.get_num_threads()


def test_cpu_model_is_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 2.00GHz\n")
    assert env.cpu_model(cpuinfo) == "Test CPU @ 2.00GHz"
    assert env.cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())


def test_missing_package_is_none():
    assert env.package_versions(("no-such-distribution-xyz",)) == {"no-such-distribution-xyz": None}


@pytest.mark.skipif(shutil.which("git") is None, reason="no git binary")
def test_git_commit_matches_rev_parse_in_a_checkout(tmp_path):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the tests do not run from a git checkout")
    state = env.git_state(REPO)
    assert state["git_commit"] == head.stdout.strip() and isinstance(state["git_dirty"], bool)
    assert env.environment()["git_commit"] == head.stdout.strip()
    assert env.git_state(tmp_path) == {}  # not a checkout: the keys are absent, no error


@pytest.mark.skipif(shutil.which("git") is None, reason="no git binary")
def test_dirty_flag_follows_tracked_changes(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert env.git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "results.json").write_text("{}")  # untracked outputs do not make the code dirty
    assert env.git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert env.git_state(tmp_path)["git_dirty"] is True


def test_environment_does_not_import_torch():
    code = ("import sys; from pipeline.environment import environment; e = environment(); "
            "print('torch' in sys.modules, 'torch_threads' in e)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
