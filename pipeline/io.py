"""Atomic writes and safe loads: nothing half-written is ever taken for a finished output."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import IntegrityError


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs get what open() would give
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically, keys sorted so reruns diff cleanly."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """The parsed file; a truncated or hand-broken one raises IntegrityError naming the file and the fix."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise IntegrityError(f"{path}: not valid JSON ({error}); it was truncated or edited. Rebuild it with "
                             f"`snakemake --cores all --forcerun {path}` (or delete it and rerun snakemake).") from None


SEAL = "content_sha256"  # key of a JSON result's own checksum (`sealed`), checked by `read_sealed`


def _content_digest(data: dict) -> str:
    body = {k: v for k, v in data.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=_json_default).encode()).hexdigest()


def sealed(data: dict) -> dict:
    """`data` with the sha256 of its own canonical JSON under SEAL, so that a consumer sees an edit.

    The digest is taken of the data as it will read back (numpy scalars as floats, integer keys as
    strings), so the reader recomputes the same value."""
    as_read = json.loads(json.dumps(data, default=_json_default))
    return {**as_read, SEAL: _content_digest(as_read)}


def read_sealed(path: str | os.PathLike[str], rule: str) -> Any:
    """A JSON result written by `rule` through `sealed`, verified: an edited or half-written one raises IntegrityError
    naming the file, the rule and the rebuild command (a file without a seal, from before seals, is read as it is)."""
    data = read_json(path)
    if isinstance(data, dict) and SEAL in data and data[SEAL] != _content_digest(data):
        raise IntegrityError(f"{path}: its content differs from the checksum rule '{rule}' sealed it with: it was edited "
                             f"since. Rebuild it with `snakemake --cores all --forcerun {path}` (or delete it and rerun snakemake).")
    return data


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a .npy atomically (memory-mappable by `np.load(..., mmap_mode="r")`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def read_npy(path: str | os.PathLike[str], mmap: bool = False) -> np.ndarray:
    """A .npy array, never unpickled; a refused (object array), truncated or broken file names itself and the fix."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise IntegrityError(f"{path}: not a plain numeric .npy array ({type(error).__name__}: {error}); it was truncated, "
                             f"replaced or holds pickled objects, which are never loaded. Rebuild it with "
                             f"`snakemake --cores all --forcerun {path}` (or delete it and rerun snakemake).") from None


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """torch.save atomically (a killed job never leaves a truncated checkpoint), byte for byte reproducible.

    Saved through an open file, not a path: given a path, torch names the zip's top folder after the
    file, here the random temporary name, so equal tensors gave different bytes (and checksums).
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_torch(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """torch.load without unpickling arbitrary objects."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise IntegrityError(f"{path}: refused or unreadable checkpoint ({type(error).__name__}: {str(error)[:200]}); a truncated "
                             "file, or one holding objects other than tensors, which are never unpickled. Rebuild it with "
                             f"`snakemake --cores all --forcerun {path}` (or delete it and rerun snakemake).") from None


def sha256_file(path: str | os.PathLike[str], chunk_mb: int = 8) -> str:
    """Hex sha256 of a file, read in `chunk_mb` MiB chunks (constant memory for multi-GB arrays)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_mb << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str | os.PathLike[str], expected: str | None, rule: str, record: str | os.PathLike[str]) -> None:
    """Raise IntegrityError unless `path`'s sha256 is `expected` (recorded by `rule` in `record`).

    `expected` None (an output written before checksums were recorded) is not checked.
    """
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 {actual[:16]}... differs from the {expected[:16]}... that rule '{rule}' recorded in {record} "
            f"when it wrote the file: it was truncated, corrupted or swapped since. Rebuild it with "
            f"`snakemake --cores all --forcerun {path}` (or delete it and rerun snakemake).")


def verify_sibling(path: str | os.PathLike[str], record_name: str, key: str, rule: str) -> None:
    """verify `path` against `key` of the JSON `record_name` next to it, if that record exists."""
    record = Path(path).with_name(record_name)
    if record.exists():
        verify(path, read_sealed(record, rule).get(key), rule, record)  # the record itself unedited first


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
