"""Decoded uint8 arrays -> float batches on the device, without DataLoader workers.

The decode stage writes `{split}_x.npy` (uint8, images (N,H,W,C), clips (N,T,H,W,C)) and
`{split}_y.npy` (int64). A split is moved to the device once when it fits in the given
memory budget; otherwise it stays memory-mapped and each batch is gathered, pinned and
copied asynchronously; `prefetched` reads the next batch in a background thread (and, on
CUDA, copies it on a side stream) while the current one trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.io import IntegrityError, read_json, read_npy, verify


@dataclass
class Split:
    """One split of a decoded dataset. `x` is a device tensor or a memory-mapped array."""

    x: torch.Tensor | np.ndarray  # uint8 (N,H,W,C) or (N,T,H,W,C)
    y: torch.Tensor  # int64 (N,), on the device
    device: torch.device

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def is_video(self) -> bool:
        return self.x.ndim == 5

    @property
    def streamed(self) -> bool:
        """True when the data stays memory-mapped on the host (it did not fit the budget)."""
        return not isinstance(self.x, torch.Tensor)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Float batch in [0, 1] on the device: (B,C,H,W) or (B,C,T,H,W)."""
        if isinstance(self.x, torch.Tensor):
            raw = self.x[idx.to(self.x.device)]
        else:
            host = torch.from_numpy(np.ascontiguousarray(self.x[np.sort(idx.cpu().numpy())]))
            order = torch.argsort(torch.argsort(idx.cpu()))  # undo the sort used for fast mmap reads
            raw = host[order]
            if self.device.type == "cuda":
                raw = raw.pin_memory()
            raw = raw.to(self.device, non_blocking=True)
        return to_float(raw)


def prefetched(split: Split, batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (idx on the device, float batch) for each index batch, in order.

    A device-resident split is gathered in place. A streamed split is read one batch ahead
    by a background thread: the memory-map gather and the pinned host-to-device copy of
    batch k+1 overlap the training step on batch k (on CUDA the copy runs on its own
    stream, and the consumer waits for it before use).
    """
    if not split.streamed:
        for idx in batches:
            idx = idx.to(split.device)
            yield idx, split.batch(idx)
        return
    stream = torch.cuda.Stream(split.device) if split.device.type == "cuda" else None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending = pool.submit(_load, split, batches[0], stream) if batches else None
        for k in range(len(batches)):
            x, event = pending.result()
            pending = pool.submit(_load, split, batches[k + 1], stream) if k + 1 < len(batches) else None
            if event is not None:
                torch.cuda.current_stream(split.device).wait_event(event)
                x.record_stream(torch.cuda.current_stream(split.device))
            yield batches[k].to(split.device), x


def _load(split: Split, idx: torch.Tensor, stream: torch.cuda.Stream | None) -> tuple[torch.Tensor, object]:
    """One streamed batch (runs in the prefetch thread); on CUDA on `stream`, with its done-event."""
    ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
    with ctx:
        x = split.batch(idx)
        event = stream.record_event() if stream is not None else None
    return x, event


def to_float(raw: torch.Tensor) -> torch.Tensor:
    """uint8 channels-last -> float32 channels-first in [0, 1], contiguous.

    Contiguous on purpose: torch 2.14's CPU backward corrupts the heap ("corrupted double-linked
    list") on some conv stacks fed channels-last-strided inputs, which a bare permute produces.
    On CUDA, `Runtime.to_memory_format` then chooses channels_last explicitly.
    """
    perm = (0, 3, 1, 2) if raw.dim() == 4 else (0, 4, 1, 2, 3)
    return raw.permute(perm).contiguous().float().div_(255)


def verify_split(data_dir: Path, split: str) -> None:
    """Check `split`'s arrays against the sha256 sums decode recorded in meta.json (IntegrityError)."""
    sums = read_json(data_dir / "meta.json").get("sha256", {})
    for part in ("x", "y"):
        name = f"{split}_{part}.npy"
        if (data_dir / name).exists() or name in sums:
            verify(data_dir / name, sums.get(name), "decode", data_dir / "meta.json")


def check_split(data_dir: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """What decode writes, checked where it is read: uint8 pixels (N,H,W,C) or (N,T,H,W,C), one integer
    label per sample within the class count. A checksum only says the file is the one recorded; a
    buggy producer or a hand edit with the checksum recomputed still gets here. IntegrityError names
    the file, the problem and the rebuild command."""
    def fail(name: str, problem: str) -> None:
        path = data_dir / name
        raise IntegrityError(f"{path}: {problem}. decode writes uint8 pixels and integer labels; rebuild it with "
                             f"`snakemake --cores all --forcerun {path}` (or delete it and rerun snakemake).")

    if x.dtype != np.uint8:
        fail(f"{split}_x.npy", f"dtype {x.dtype}, expected uint8 pixel values 0-255")
    if x.ndim not in (4, 5) or x.shape[-1] not in (1, 3):
        fail(f"{split}_x.npy", f"shape {x.shape}, expected (N, H, W, C) images or (N, T, H, W, C) clips with C = 1 or 3")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        fail(f"{split}_y.npy", f"{y.dtype} labels of shape {y.shape}, expected {len(x)} integer labels, one per sample")
    classes = int(read_json(data_dir / "meta.json")["num_classes"])
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        fail(f"{split}_y.npy", f"labels span {int(y.min())}..{int(y.max())}, outside 0..{classes - 1} (num_classes {classes} "
             "in meta.json)")


def load_split(data_dir: str | Path, split: str, device: torch.device, budget_mb: float = 4096) -> Split:
    """Load `split` ("train"/"test") of a decode output; on the device if it fits in `budget_mb`."""
    data_dir = Path(data_dir)
    verify_split(data_dir, split)
    x = read_npy(data_dir / f"{split}_x.npy", mmap=True)
    labels = read_npy(data_dir / f"{split}_y.npy")
    check_split(data_dir, split, x, labels)
    y = torch.from_numpy(labels).to(device)
    fits = x.nbytes / 2**20 <= budget_mb
    xt: torch.Tensor | np.ndarray = torch.from_numpy(np.array(x)).to(device) if fits else x
    return Split(x=xt, y=y, device=device)


def num_classes(data_dir: str | Path) -> int:
    return int(read_json(Path(data_dir) / "meta.json")["num_classes"])


def batch_indices(
    n: int, batch_size: int, *, shuffle: bool, drop_last: bool, generator: torch.Generator | None = None
) -> Iterator[torch.Tensor]:
    """Index batches over range(n): a random permutation per call when `shuffle`."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def embed(model: torch.nn.Module, split: Split, batch_size: int) -> torch.Tensor:
    """Features of a whole split without augmentation, model in eval mode. (N, D) float32."""
    was_training = model.training
    model.eval()
    feats = [model(split.batch(idx)).float() for idx in batch_indices(len(split), batch_size, shuffle=False, drop_last=False)]
    model.train(was_training)
    return torch.cat(feats)
