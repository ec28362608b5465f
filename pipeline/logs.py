"""What a job log shows a person: the command and a timestamp first, then progress lines.

`log_header` opens every stage's log with the command that reproduces the job (the rules
redirect `> {log} 2>&1`, so stderr is the log). `Progress` reports a long loop at least every
`every_s` seconds with the rate and an ETA: a tqdm bar when stderr is a terminal (a run by hand),
plain lines otherwise (a log file, where a bar's carriage returns would be noise).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from typing import TextIO


def log_header(stage: str, argv: list[str] | None = None, stream: TextIO | None = None) -> str:
    """Print and return '# <UTC time> <python -m pipeline.stage args...>' (skipped in torchrun ranks > 0)."""
    args = sys.argv[1:] if argv is None else list(argv)
    line = f"# {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC  {shlex.join([sys.executable, '-m', f'pipeline.{stage}', *args])}"
    if os.environ.get("RANK", "0") == "0":
        print(line, file=stream or sys.stderr, flush=True)
    return line


def stage_cli(stage: str, doc: str | None, argv: list[str] | None, cfg_help: str, *, gpu: bool = False,
              threads: str | None = "CPU threads of torch") -> argparse.ArgumentParser:
    """The argparse edge every stage shares; the stage adds its own options and parses.

    Prints the log's first line (`log_header`), warns when a one-GPU stage holds several GPUs
    (`gpu`), and defines --cfg (the stage's config section as JSON) and --threads (unless None).
    """
    log_header(stage, argv)  # the log starts with the command and a timestamp
    if gpu:
        from pipeline import runtime  # torch: only the GPU stages pay for it here

        runtime.warn_if_gpus_idle(stage)
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.{stage}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help=cfg_help)
    if threads:
        parser.add_argument("--threads", type=int, default=1, help=threads)
    return parser


USAGE_LINE = "warm: worker cpu_s="  # how the warm client's usage line begins (pipeline/warm/client.py, `_finish`)


def worker_usage(log_text: str) -> dict[str, float] | None:
    """{"cpu_s", "max_rss_mb"} from the last `warm: worker ...` line of a job's log (None: ran fresh).

    Printed by the warm client (pipeline/warm/client.py), read by the report's cost table: with the warm
    interpreter Snakemake's benchmark CPU and RSS columns measure only the client; these are the worker's
    (wall time is the same either way).
    """
    lines = [line for line in log_text.splitlines() if line.startswith(USAGE_LINE)]
    if not lines:
        return None
    fields = dict(item.split("=", 1) for item in lines[-1].split()[2:] if "=" in item)
    return {"cpu_s": float(fields["cpu_s"]), "max_rss_mb": float(fields["max_rss_mb"])}


def format_seconds(seconds: float) -> str:
    """3725.4 -> '1:02:05'."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts `total` units of a loop; reports done/total, units per second and the ETA.

    Plain lines are printed at most every `every_s` seconds (and at the end); with a terminal
    as stderr a tqdm bar is shown instead. Use as a context manager, calling `update(n)`.
    """

    def __init__(self, total: int, what: str, unit: str = "it", every_s: float = 30.0,
                 stream: TextIO | None = None, clock=time.monotonic) -> None:
        self.total, self.what, self.unit, self.every_s = total, what, unit, every_s
        self.stream, self.clock = stream or sys.stderr, clock
        self.done, self.start = 0, clock()
        self.last = self.start
        self.bar = None
        if stream is None and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit, leave=False)

    def line(self) -> str:
        """'what: 120/500 batch (24%), 12.3 batch/s, ETA 0:00:31'."""
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = format_seconds((self.total - self.done) / rate) if rate > 0 else "?"
        share = 100 * self.done / self.total if self.total else 100.0
        return f"{self.what}: {self.done}/{self.total} {self.unit} ({share:.0f}%), {rate:.3g} {self.unit}/s, ETA {eta}"

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.clock() - self.start >= self.every_s:  # a short loop needs no closing line
            print(self.line(), file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
