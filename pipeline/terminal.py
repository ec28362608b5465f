"""What a local run prints: one line per job start and per job end with an ETA, errors in full.

Snakemake's default terminal output is a banner per job (every input and output file; the
report job's is ~9 KB), 2,400 lines for the default study. Its `--quiet rules` would also hide
which job failed (it filters job errors with the banners), so instead the Snakefile swaps the
terminal handler's formatter for `CompactFormatter` (a subclass of Snakemake's own, which still
formats errors, failed logs and everything else) and adds `CompactFilter`, which drops the
scheduler's chatter. Only the terminal changes: Snakemake's log file under .snakemake/log/ keeps
every banner, and each job's own log (results/logs/, its command first) is untouched. Dry runs
keep Snakemake's output, so `snakemake -n -p` still lists every job and its command.

The ETA weighs the jobs still to run by the mean seconds per job of their rule in earlier runs'
benchmark files (results/benchmarks/<rule>/...tsv, Snakemake's `benchmark:` output), else by
REFERENCE_RULE_SECONDS (the default study, measured), and scales by how fast this run has gone so far:
    eta = elapsed * (weight of the jobs left) / (weight of the jobs done).
Torch-free: the Snakefile imports it.
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from pathlib import Path

from snakemake.logging import DefaultFormatter, LogEvent

# Mean wall seconds per job of each rule in the default study on 2 cores (its benchmark files, fresh clone,
# 2026-12-04; mine from the mechanism study, the default has no mine job); only their ratios matter.
REFERENCE_RULE_SECONDS = {"embed": 2.2, "decode": 1.6, "pretrain": 17.7, "mine": 9.8, "finetune": 0.5, "match": 9.9,
                          "evaluate": 16.7, "analyse": 30.7, "report": 7.2}
CHATTER = ("Select jobs to execute...",)


def rule_seconds(benchmarks: Path) -> dict[str, float]:
    """Mean wall seconds per job of each rule in Snakemake benchmark files under `benchmarks/<rule>/`."""
    means = {}
    for rule_dir in sorted(p for p in benchmarks.glob("*") if p.is_dir()):
        values = []
        for tsv in rule_dir.rglob("*.tsv"):
            try:
                with tsv.open() as handle:
                    values += [float(row["s"]) for row in csv.DictReader(handle, delimiter="\t")]
            except (OSError, KeyError, ValueError):
                continue  # a file being written or of another format: the estimate does without it
        if values:
            means[rule_dir.name] = sum(values) / len(values)
    return means


class EtaClock:
    """Weights of the jobs done and left, from Snakemake's job-count table and job events."""

    def __init__(self, seconds_per_rule: dict[str, float], now=time.monotonic) -> None:
        self.weights = {**REFERENCE_RULE_SECONDS, **seconds_per_rule}
        self.now = now
        self.start = now()
        self.left = 0.0
        self.done = 0.0
        self.jobs: dict[int, tuple[str, str]] = {}  # jobid -> (rule, label)

    def weight(self, rule: str) -> float:
        return 0.0 if rule == "all" else self.weights.get(rule, 1.0)

    def planned(self, counts: dict[str, int]) -> None:
        """Snakemake's job stats: {rule: jobs to run} (and 'total', ignored)."""
        self.left = sum(self.weight(rule) * n for rule, n in counts.items() if rule != "total")

    def started(self, jobid: int, rule: str, label: str) -> None:
        self.jobs[jobid] = (rule, label)

    def finished(self, jobid: int) -> str:
        """The job's label; moves its weight from left to done."""
        rule, label = self.jobs.pop(jobid, ("?", f"job {jobid}"))
        w = self.weight(rule)
        self.left, self.done = max(self.left - w, 0.0), self.done + w
        return label

    def eta_seconds(self) -> float | None:
        if self.done <= 0:
            return None
        return (self.now() - self.start) * self.left / self.done


def job_label(record: logging.LogRecord) -> str:
    """`pretrain digits/simclr/seed0`: the rule and its wildcard values, as in the results' paths."""
    wildcards = dict(getattr(record, "wildcards", None) or {})
    path = "/".join(f"seed{v}" if k == "seed" else str(v) for k, v in wildcards.items())
    return f"{getattr(record, 'rule_name', '?')} {path}".strip()


def clock_time() -> str:
    return time.strftime("%H:%M:%S")


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    finish = time.strftime("%H:%M", time.localtime(time.time() + seconds))
    return f" · ETA {finish} ({seconds / 60:.0f} min left)" if seconds >= 60 else f" · ETA {finish} (<1 min left)"


class CompactFormatter(DefaultFormatter):
    """Snakemake's formatter with a one-line job start and a one-line job end carrying the ETA."""

    def __init__(self, clock: EtaClock, quiet=None, show_failed_logs: bool = False) -> None:
        super().__init__(quiet, show_failed_logs)
        self.clock = clock
        self.finished_label = ""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        if event == LogEvent.JOB_INFO:
            label = job_label(record)
            self.clock.started(record.jobid, str(getattr(record, "rule_name", "?")), label)
            return "" if label == "all" else f"{clock_time()}  start  {label}"  # the target rule runs nothing
        if event == LogEvent.JOB_FINISHED:
            self.finished_label = self.clock.finished(record.job_id)
            return ""
        if event == LogEvent.PROGRESS:
            return (f"{clock_time()}  done   {self.finished_label}  [{record.done}/{record.total}]"
                    f"{format_eta(self.clock.eta_seconds())}")
        if event == LogEvent.RUN_INFO and isinstance(getattr(record, "stats", None), dict):
            self.clock.planned(record.stats)
        return super().format(record)


class CompactFilter(logging.Filter):
    """Drops the scheduler's chatter and the (folded into progress) job-finished lines; runs the formatter's
    bookkeeping for the latter, so it is seen even though it is not printed."""

    def __init__(self, formatter: CompactFormatter, handler: logging.Handler) -> None:
        super().__init__()
        self.formatter = formatter
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        event = getattr(record, "event", None)
        if event == LogEvent.JOB_FINISHED:
            self.formatter.format(record)
            return False
        if event == LogEvent.JOB_INFO:
            self.handler.last_msg_was_job_info = True  # Snakemake's handler would put a blank line before a banner
        if event == LogEvent.JOB_STARTED or (event is None and record.getMessage() in CHATTER):
            return False
        return True


def terminal_handlers() -> list[logging.Handler]:
    """Snakemake's handlers that write to the terminal (not to its log file)."""
    from snakemake.logging import logger

    return [h for h in logger.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            and h.stream in (sys.stderr, sys.stdout)]


def install(benchmarks: Path) -> bool:
    """Swap the terminal handler's formatter for the compact one; False if none was found (nothing changes)."""
    handlers = terminal_handlers()
    for handler in handlers:
        old = handler.formatter
        formatter = CompactFormatter(EtaClock(rule_seconds(benchmarks)), getattr(old, "quiet", None),
                                     getattr(old, "show_failed_logs", False))
        handler.setFormatter(formatter)
        handler.addFilter(CompactFilter(formatter, handler))
    return bool(handlers)
