"""Worker processes with a real per-task time limit: a task past its limit kills its worker.

`concurrent.futures` can only stop *waiting* for a hung task (its worker keeps running,
and a decoder stuck in native code keeps its core and blocks the pool's shutdown), and
`multiprocessing.Pool` cannot say which task a dead worker held. Decoders do hang and
crash on broken files (decord #373 deadlocks holding the GIL), so we run our own small
pool: one pipe per worker, one task at a time, a deadline per task. A worker that misses
its deadline is SIGKILLed and replaced; one that dies (a segfault in native code) is
reported for the task it held and replaced.

Workers are forked from a `forkserver` that has imported the task's module once (torch,
decord, PyAV): starting or replacing a worker costs a fork, not a 2-second import, and no
worker inherits the state of a parent that may have used threads or decoders.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import multiprocessing.connection
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_GRACE_S = 5.0  # how long an idle worker may take to exit before it is killed


@dataclass
class Outcome:
    """What became of task `index`: its result, or why it has none."""

    index: int
    result: Any = None
    error: str | None = None


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    task: int | None = None
    deadline: float = 0.0


def _serve(conn: multiprocessing.connection.Connection, initializer: Callable[[], None] | None) -> None:
    """Worker loop: run (fn, args) messages until a None arrives; reply ("ok"|"error", payload)."""
    if initializer is not None:
        initializer()
    while True:
        message = conn.recv()
        if message is None:
            return
        fn, args = message
        try:
            reply = ("ok", fn(*args))
        except Exception as error:  # reported for this task; the worker stays usable
            reply = ("error", f"{type(error).__name__}: {error}")
        conn.send(reply)


def _expose_to_forkserver(module: str) -> None:
    """Put the folder holding `module`'s top package on PYTHONPATH, for the forkserver to see.

    CPython 3.11's forkserver preloads with its own sys.path (the working directory and
    PYTHONPATH, not the parent's sys.path) and skips a module it cannot import without a
    word: every worker would then import torch itself (seconds each).
    """
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or spec.origin is None:
        return
    root = str(Path(spec.origin).resolve().parents[1])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


class KillablePool:
    """`workers` processes running `fn(*args)` tasks, each within `timeout_s` seconds."""

    def __init__(self, workers: int, timeout_s: float, initializer: Callable[[], None] | None = None,
                 preload: Sequence[str] = ()) -> None:
        self.size, self.timeout_s, self.initializer = max(1, workers), timeout_s, initializer
        self.ctx = multiprocessing.get_context("forkserver")
        if preload:
            self.ctx.set_forkserver_preload(list(preload))  # takes effect when the server starts
            for module in preload:
                _expose_to_forkserver(module)
        self.workers: list[_Worker] = []

    def _start(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_serve, args=(child, self.initializer), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def _kill(self, worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join()
        worker.conn.close()

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[Outcome]:
        """Yield one Outcome per task, in completion order."""
        pending = deque(range(len(tasks)))
        self.workers = [self._start() for _ in range(min(self.size, len(tasks)))]
        try:
            while pending or any(w.task is not None for w in self.workers):
                self._dispatch(fn, tasks, pending)
                yield from self._collect()
        finally:
            self.close()

    def _dispatch(self, fn: Callable[..., Any], tasks: Sequence[tuple], pending: deque) -> None:
        for worker in self.workers:
            if worker.task is None and pending:
                worker.task = pending.popleft()
                worker.deadline = time.monotonic() + self.timeout_s
                worker.conn.send((fn, tasks[worker.task]))

    def _collect(self) -> Iterator[Outcome]:
        """Wait for a reply, a death or the nearest deadline; yield what finished."""
        busy = [w for w in self.workers if w.task is not None]
        wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
        ready = set(multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy], wait_s))
        for i, worker in enumerate(self.workers):
            if worker.task is None:
                continue
            if worker.conn in ready:
                outcome = self._reply(worker)
            elif worker.process.sentinel in ready:
                outcome = self._died(worker)
            elif time.monotonic() >= worker.deadline:
                self._kill(worker)
                outcome = Outcome(worker.task, error=f"timed out after {self.timeout_s} s (worker pid {worker.process.pid} killed)")
            else:
                continue
            if outcome.error is not None and not worker.process.is_alive():
                self.workers[i] = self._start()  # replace the killed or crashed worker
            else:
                worker.task = None
            yield outcome

    def _reply(self, worker: _Worker) -> Outcome:
        try:
            status, payload = worker.conn.recv()
        except (EOFError, OSError):
            return self._died(worker)
        return Outcome(worker.task, result=payload) if status == "ok" else Outcome(worker.task, error=payload)

    def _died(self, worker: _Worker) -> Outcome:
        """The worker exited without replying (a segfault or abort in native code, an OOM kill)."""
        worker.process.join()
        worker.conn.close()
        return Outcome(worker.task, error=f"decoder process died (exit code {worker.process.exitcode})")

    def close(self) -> None:
        """Stop every worker: idle ones are asked to exit, busy or slow ones are killed."""
        for worker in self.workers:
            try:
                if worker.task is None:
                    worker.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + _GRACE_S
        for worker in self.workers:
            if worker.task is None:
                worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self.workers = []
