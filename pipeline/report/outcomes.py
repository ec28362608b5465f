"""Per-sample outcomes of a dataset's robustness files (evaluate's 0/1 strings), read once and paired by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.grid import Grid, eval_path
from pipeline.io import read_sealed

WORST_CASE = "any"  # robustness.json: per-sample worst case over the Linf attacks at one eps


def bits_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


class Outcomes:
    """Per-sample outcomes of one dataset's robustness files, read once."""

    def __init__(self, results: Path, grid: Grid, dataset: str, protocol: str) -> None:
        self.results, self.grid, self.dataset, self.protocol = results, grid, dataset, protocol
        self._cache: dict[tuple[str, int], dict | None] = {}

    def record(self, method: str, seed: int) -> dict | None:
        key = (method, seed)
        if key not in self._cache:
            path = Path(eval_path(self.dataset, method, seed, self.protocol, self.results))
            self._cache[key] = read_sealed(path, "evaluate") if path.exists() else None
        return self._cache[key]

    def seeds(self, method: str) -> list[int]:
        """Seeds of `method` whose robustness file has per-sample outcomes."""
        seeds = self.grid.matched_seeds if method == self.grid.matched_method else self.grid.method_seeds.get(method, [])
        return [s for s in seeds if (r := self.record(method, s)) is not None and "outcomes" in r]

    def matrix(self, method: str, seeds: list[int], attack: str | None, eps_key: str | None) -> np.ndarray:
        """(S, n) bool: clean correctness (attack None) or correctness under `attack` at `eps_key`."""
        rows = []
        for s in seeds:
            out = self.record(method, s)["outcomes"]
            rows.append(bits_array(out["clean"] if attack is None else out["attacks"][attack][eps_key]))
        n = min(len(r) for r in rows)
        return np.stack([r[:n] for r in rows])

    def eps_keys(self, method: str, seeds: list[int]) -> list[str]:
        """The Linf eps (keys) at which every seed of `method` has a worst case, in increasing order."""
        keys = [set(self.record(method, s)["outcomes"]["attacks"].get(WORST_CASE, {})) for s in seeds]
        return sorted(set.intersection(*keys), key=float) if keys else []


def common_seeds(outcomes: Outcomes, *methods: str) -> list[int]:
    """Seeds every method ran (paired by number)."""
    sets = [set(outcomes.seeds(m)) for m in methods]
    return sorted(set.intersection(*sets)) if sets else []


def pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut two (S, n) arrays to their common first n samples (an attack's max_samples may differ)."""
    n = min(a.shape[1], b.shape[1])
    return a[:, :n], b[:, :n]
