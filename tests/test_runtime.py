"""Device and precision, decided in one place (pipeline/runtime.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline import runtime


def test_cpu_runtime_is_fp32_without_autocast_and_keeps_the_layout():
    rt = runtime.setup("cpu", "auto", threads=1)
    assert rt.device.type == "cpu" and rt.dtype == torch.float32 and torch.get_num_threads() == 1
    x = torch.rand(2, 3, 4, 4)
    assert rt.to_memory_format(x) is x and rt.memory_format == torch.contiguous_format
    with rt.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert rt.describe() == {"device": "cpu", "device_name": "cpu", "precision": "float32"}


def test_bad_device_or_precision_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="auto, bf16, fp32"):
        runtime.setup("cpu", "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="set device: cpu or auto"):
            runtime.setup("cuda", "auto")


def test_explicit_bf16_on_cpu_autocasts_matmuls():
    rt = runtime.setup("cpu", "bf16")
    with rt.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_seeding_repeats_every_generator():
    def draw():
        gen = runtime.seed_everything(3)
        return torch.rand(3).tolist(), np.random.rand(2).tolist(), torch.rand(2, generator=gen).tolist()

    assert draw() == draw()
    runtime.seed_everything(4)
    assert torch.rand(3).tolist() != draw()[0]


def test_gpus_of_the_job_come_from_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_GPUS_ON_NODE", raising=False)
    assert runtime.allocated_gpus() == 1
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    assert runtime.allocated_gpus() == 4
