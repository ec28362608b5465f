"""Preemption: a pretrain stage killed mid-run resumes from its last checkpoint when rerun.

This is what happens on a cluster when SLURM preempts or requeues a job, a node fails or
a user runs `scancel`: the stage process dies with SIGKILL, and Snakemake (`retries:`,
`slurm-requeue: true`) runs the same command again. The rerun must continue from the
last epoch checkpoint and end with the encoder an uninterrupted run produces.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline import pretrain
from pipeline.config import DecodeConfig, from_dict
from pipeline.decode import run as decode
from tests.conftest import REPO, decode_cfg, pretrain_cfg

EPOCHS = 4


@pytest.fixture(scope="module")
def few_digits(tmp_path_factory) -> Path:
    """The digits with 70% held out: 539 training images keep the three runs short."""
    out = tmp_path_factory.mktemp("few_digits")
    decode(from_dict(DecodeConfig, decode_cfg(test_fraction=0.7)), out, threads=1)
    return out


def pretrain_argv(cfg_json: str, data: Path, out: Path) -> list[str]:
    return ["--cfg", cfg_json, "--seed", "0", "--data", str(data), "--out-encoder", str(out / "encoder.pt"),
            "--out-metrics", str(out / "metrics.json"), "--threads", "1"]


def kill_after_first_checkpoint(argv: list[str], out: Path, timeout_s: float = 120) -> None:
    """Start the stage, SIGKILL it as soon as its checkpoint file exists (a preemption)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.pretrain", *argv], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    try:
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, f"pretrain ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def encoder_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["encoder"]


@pytest.mark.timeout(300)
def test_killed_pretrain_resumes_to_the_same_encoder(few_digits, tmp_path):
    cfg_json = json.dumps(pretrain_cfg({"loss": "nt_xent", "false_negatives": "oracle"},
                                       {"epochs": EPOCHS, "checkpoint_every": 1}), sort_keys=True)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    kill_after_first_checkpoint(pretrain_argv(cfg_json, few_digits, killed), killed)
    assert not (killed / "encoder.pt").exists()  # it really was interrupted before the end

    rerun = subprocess.run([sys.executable, "-m", "pipeline.pretrain", *pretrain_argv(cfg_json, few_digits, killed)],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = [line for line in rerun.stderr.splitlines() if "resumed from" in line]
    assert resumed and f"after epoch {EPOCHS}" not in resumed[0], rerun.stderr[-3000:]
    ran = [line for line in rerun.stderr.splitlines() if line.startswith("pretrain epoch")]
    assert 0 < len(ran) < EPOCHS  # only the missing epochs were trained
    assert not (killed / "checkpoint.pt").exists()  # removed once the encoder is written

    pretrain.main(pretrain_argv(cfg_json, few_digits, clean))  # the uninterrupted reference, same seed
    got, want = encoder_weights(killed / "encoder.pt"), encoder_weights(clean / "encoder.pt")
    assert got.keys() == want.keys()
    for name in want:
        assert torch.allclose(got[name].float(), want[name].float(), atol=1e-5, rtol=0), name
    history = json.loads((killed / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))  # the history survived the kill
