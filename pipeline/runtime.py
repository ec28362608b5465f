"""Device and precision are decided here and nowhere else.

`setup()` turns the config strings ("auto"/"cpu"/"cuda", "auto"/"bf16"/"fp32") into a
`Runtime` that every stage passes down. On CUDA: bf16 autocast, channels_last, TF32 and
cudnn.benchmark. On CPU: float32 and contiguous tensors (bf16 autocast on CPU is slow).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Runtime:
    """The resolved device and precision for one stage run."""

    device: torch.device
    dtype: torch.dtype  # autocast dtype for training; float32 means no autocast

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def memory_format(self) -> torch.memory_format:
        """channels_last for 4-D on CUDA (5-D tensors get channels_last_3d via `to_memory_format`)."""
        return torch.channels_last if self.is_cuda else torch.contiguous_format

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """Autocast context for training and attacks inside training."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        """Put a batch into the fast layout for this device: (N,C,H,W) or (N,C,T,H,W)."""
        if not self.is_cuda:
            return x
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt)

    def describe(self) -> dict[str, str]:
        """What is recorded in every metrics file."""
        name = torch.cuda.get_device_name(self.device) if self.is_cuda else "cpu"
        return {"device": str(self.device), "device_name": name, "precision": str(self.dtype).replace("torch.", "")}


# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems


def keep_freed_memory_in_heap() -> bool:
    """Stop glibc from returning freed tensor memory to the OS after every CPU step.

    Why: CPU training frees and reallocates the same activation sizes every step; by default
    glibc serves blocks over 128 KiB with mmap and unmaps them on free, so every step pays
    fresh page faults (measured: system time 1.25 -> 0.52 s, wall -5% on a video pretrain
    job of the default study). The same idea as the jemalloc/tcmalloc advice in PyTorch's CPU
    performance guide, without a preload. A no-op (False) where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


def setup(device: str = "auto", precision: str = "auto", threads: int | None = None) -> Runtime:
    """Resolve device and precision strings and set the global backend flags once.

    Args:
        device: "auto" (CUDA when available), "cpu" or "cuda"/"cuda:N".
        precision: "auto" (bf16 on CUDA, fp32 on CPU), "bf16" or "fp32".
        threads: CPU threads for torch (Snakemake passes the rule's `threads`).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; set device: cpu or auto")
    dev = torch.device(device)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" else "fp32"
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    if precision not in dtypes:
        raise ValueError(f"precision must be one of auto, bf16, fp32; got {precision!r}")
    if threads:
        torch.set_num_threads(threads)
    if dev.type == "cpu":
        keep_freed_memory_in_heap()
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return Runtime(device=dev, dtype=dtypes[precision])


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    return torch.Generator().manual_seed(seed)


def peak_memory_mb(rt: Runtime) -> float:
    """Peak GPU memory allocated so far in MB (0 on CPU, where Snakemake's benchmark has max_rss)."""
    return torch.cuda.max_memory_allocated(rt.device) / 2**20 if rt.is_cuda else 0.0


def prepare_module(module: torch.nn.Module, rt: Runtime, is_video: bool) -> torch.nn.Module:
    """Move a model to the device, in channels_last(_3d) on CUDA."""
    module = module.to(rt.device)
    if rt.is_cuda:
        module = module.to(memory_format=torch.channels_last_3d if is_video else torch.channels_last)
    return module


# ---- GPUs of the job --------------------------------------------------------------------------
def allocated_gpus() -> int:
    """GPUs SLURM gave this job (sbatch --gpus=N sets SLURM_GPUS_ON_NODE); 1 outside SLURM.

    A local run stays on one process: Snakemake's local `--resources gpu=N` only caps how
    many jobs run at once, it does not hand devices to jobs.
    """
    return int(os.environ.get("SLURM_GPUS_ON_NODE", "1") or 1)


def warn_if_gpus_idle(stage: str) -> bool:
    """Say so when a one-GPU stage's job holds several GPUs (the others would idle unseen)."""
    nproc = allocated_gpus()
    if nproc > 1:
        print(f"{stage}: this job holds {nproc} GPUs but {stage} runs on one; only pretrain runs data parallel. "
              f"Give the {stage} rule gpu: 1 in the profile's set-resources.", file=sys.stderr, flush=True)
    return nproc > 1
