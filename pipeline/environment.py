"""Where a result was computed: machine, library versions and code version, for every metrics file.

`environment()` is what each stage stores under the `"environment"` key of its metrics/meta
JSON. Results are bit-identical only for the same code, libraries and CPU/GPU model (see
README "Reproducibility"), so a file records all three. It imports nothing heavy: versions
come from package metadata, and torch is asked for its thread count and GPU only if the stage
already imported it (the embed stage never does). `pipeline.compare` ignores this key.
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "numpy", "av", "decord")  # the libraries whose versions change numbers or video bytes
REPO_DIR = Path(__file__).resolve().parent.parent  # the checkout holding this `pipeline` package


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions from metadata (no import); None where not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's `model name` (Linux), else platform.processor(), else the machine type."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass  # not Linux: /proc/cpuinfo does not exist
    return platform.processor() or platform.machine()


def torch_state() -> dict[str, Any]:
    """torch's intra-op thread count and, when CUDA is initialised, the GPU name; {} if torch is not loaded.

    Only a stage that imported torch is asked (importing it here would cost ~2 s in embed).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    state: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    if torch.cuda.is_initialized():
        state["gpu"] = torch.cuda.get_device_name(torch.cuda.current_device())
    return state


def git_state(repo: Path = REPO_DIR) -> dict[str, Any]:
    """{"git_commit": HEAD sha, "git_dirty": uncommitted changes?} of `repo`; {} outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=10).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        # dirty = tracked files changed; untracked files (results/, logs) do not change the code
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return {}  # no git binary, not a checkout (installed from a wheel), or git failed
    return {"git_commit": commit, "git_dirty": dirty}


def environment() -> dict[str, Any]:
    """The provenance dict stored as `"environment"` in every stage's JSON output."""
    return {
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "versions": package_versions(),
        **torch_state(),
        **git_state(),
    }
