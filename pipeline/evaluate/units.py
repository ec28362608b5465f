"""The evaluate stage's resumable units: per-unit result files, seeds, and what every unit needs."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import warnings as pywarnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline import runtime
from pipeline.config import EvaluateConfig
from pipeline.data import Split
from pipeline.io import read_json, write_json
from pipeline.provenance import source_hash


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


class Partials:
    """Per-unit result files in `.<out name>.partial/` next to the output, valid for one fingerprint."""

    def __init__(self, out: Path, fingerprint: str) -> None:
        self.folder = out.parent / f".{out.name}.partial"
        stamp = self.folder / "fingerprint.txt"
        if self.folder.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
            shutil.rmtree(self.folder)  # left by a run with another config, model or code
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint)
        self.resumed = 0

    def path(self, key: str, suffix: str = ".json") -> Path:
        return self.folder / (key.replace("@", "_eps").replace(":", "_") + suffix)

    def get_or_run(self, key: str, fn: Callable[[], dict]) -> dict:
        """The stored record of unit `key`, or run `fn()` and store its record."""
        if self.path(key).exists():
            self.resumed += 1
            return read_json(self.path(key))
        record = fn()
        write_json(self.path(key), record)
        return record

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def fingerprint(cfg: EvaluateConfig, seed: int, data_dir: Path, model_path: Path) -> str:
    """Hash of everything a unit's result depends on."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode())
    digest.update(f"{seed}|{source_hash('pipeline.evaluate')}".encode())
    digest.update((Path(data_dir) / "meta.json").read_bytes())
    digest.update(Path(model_path).read_bytes())
    return digest.hexdigest()


def unit_seed(seed: int, key: str) -> int:
    """A unit's seed depends only on the run's seed and the unit, not on what ran before."""
    return zlib.crc32(f"{seed}:{key}".encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def library_warnings() -> Iterator[list[str]]:
    """Collect what attack libraries warn about (pyautoattack logs its checks to 'auto-attack')."""
    found: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: found.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("auto-attack")
    logger.addHandler(handler)
    with pywarnings.catch_warnings(record=True) as caught:
        pywarnings.simplefilter("always")
        try:
            yield found
        finally:
            logger.removeHandler(handler)
            found += [str(w.message) for w in caught if "autoattack" in w.filename]


@dataclass
class Context:
    """What every unit of one evaluation needs."""

    model: torch.nn.Module
    data: Split
    cfg: EvaluateConfig
    rt: runtime.Runtime
    seed: int
    n: int
    partials: Partials


def bits(flags: torch.Tensor) -> str:
    """Per-sample outcomes (m,) bool as a string of 0/1, sample i of the test split at position i."""
    return "".join("1" if f else "0" for f in flags.tolist())
