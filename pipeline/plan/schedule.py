"""Wall time of a costed DAG: the critical path and a list-scheduling simulation on N workers."""

from __future__ import annotations

import heapq
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.plan.costs import Costed


def critical_path_hours(costed: list[Costed]) -> float:
    """Longest dependency chain, in hours (jobs are listed after their dependencies are known)."""
    return max(longest_remaining(costed).values(), default=0.0)


def longest_remaining(costed: list[Costed]) -> dict[str, float]:
    """Per job: its hours plus the longest chain of jobs that depend on it."""
    children: dict[str, list[str]] = {c.job["id"]: [] for c in costed}
    for c in costed:
        for d in c.deps:
            children[d].append(c.job["id"])
    hours = {c.job["id"]: c.gpu_hours for c in costed}
    memo: dict[str, float] = {}

    def tail(j: str) -> float:
        if j not in memo:
            memo[j] = hours[j] + max((tail(k) for k in children[j]), default=0.0)
        return memo[j]

    sys.setrecursionlimit(max(10_000, 4 * len(costed)))
    return {j: tail(j) for j in hours}


def wall_hours(costed: list[Costed], gpus: int) -> float:
    """List-scheduling makespan on `gpus` GPUs: a ready job (all deps done) starts on a free GPU,
    longest remaining chain first. CPU jobs (0 GPU-hours) take no GPU time."""
    priority = longest_remaining(costed)
    by_id = {c.job["id"]: c for c in costed}
    waiting = {c.job["id"]: len(c.deps) for c in costed}
    children: dict[str, list[str]] = {j: [] for j in by_id}
    for c in costed:
        for d in c.deps:
            children[d].append(c.job["id"])
    ready = [(-priority[j], j) for j, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now, free = 0.0, gpus
    while ready or running:
        while ready and free:
            _, j = heapq.heappop(ready)
            heapq.heappush(running, (now + by_id[j].gpu_hours, j))
            free -= 1
        now, j = heapq.heappop(running)
        free += 1
        for k in children[j]:
            waiting[k] -= 1
            if waiting[k] == 0:
                heapq.heappush(ready, (-priority[k], k))
    return now
