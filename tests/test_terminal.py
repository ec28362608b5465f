"""The terminal's one-line job reports and their ETA (pipeline/terminal.py)."""

from __future__ import annotations

import io
import logging

import pytest
from snakemake.logging import LogEvent

from pipeline import terminal


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_eta_weighs_the_jobs_left_by_their_rule_and_scales_by_the_pace_so_far():
    now = FakeClock()
    clock = terminal.EtaClock({"pretrain": 10.0, "evaluate": 2.0}, now=now)
    clock.planned({"pretrain": 3, "evaluate": 5, "all": 1, "total": 9})  # 30 + 10 (+ 0 for the target)
    assert clock.eta_seconds() is None  # nothing done: no pace yet
    clock.started(7, "pretrain", "pretrain digits/simclr/seed0")
    now.t += 20.0  # this machine is twice as slow as the weights say
    assert clock.finished(7) == "pretrain digits/simclr/seed0"
    assert clock.eta_seconds() == pytest.approx(20.0 * (30 - 10 + 10) / 10)  # = 60 s
    clock.started(8, "evaluate", "evaluate x")
    now.t += 4.0
    clock.finished(8)
    assert clock.eta_seconds() == pytest.approx(24.0 * (20 + 8) / 12)
    assert clock.weight("all") == 0.0 and clock.weight("an_unknown_rule") == 1.0


def test_rule_seconds_reads_snakemake_benchmark_files(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for name, s in (("a", 4.0), ("b", 8.0)):
        path = tmp_path / "pretrain" / "digits" / name / "seed0.tsv"
        path.parent.mkdir(parents=True)
        path.write_text(header + f"{s}\t0:00:0{int(s)}\t1\t1\t1\t1\t0\t0\t0\t{s}\n")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.tsv").write_text("s\n")  # written but empty: left out, not a crash
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "x.tsv").write_text("garbage\nnot a number\n")
    assert terminal.rule_seconds(tmp_path) == {"pretrain": 6.0}
    assert terminal.rule_seconds(tmp_path / "missing") == {}


def record(event, **fields) -> logging.LogRecord:
    rec = logging.LogRecord("snakemake", logging.INFO, __file__, 1, fields.pop("msg", ""), None, None)
    rec.event = event
    rec.__dict__.update(fields)
    return rec


def test_compact_output_is_one_line_per_start_and_end_and_errors_stay_whole():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    now = FakeClock()
    formatter = terminal.CompactFormatter(terminal.EtaClock({"pretrain": 1.0}, now=now))
    handler.setFormatter(formatter)
    handler.addFilter(terminal.CompactFilter(formatter, handler))
    log = logging.getLogger("test_terminal")
    log.propagate = False
    log.addHandler(handler)
    try:
        for rec in (
            record(LogEvent.RUN_INFO, msg="Job stats: ...", stats={"pretrain": 2, "total": 2}),
            record(None, msg="Select jobs to execute..."),
            record(LogEvent.JOB_STARTED, msg="Execute 1 jobs...", jobs=[1]),
            record(LogEvent.JOB_INFO, jobid=1, rule_name="pretrain", wildcards={"dataset": "digits", "method": "simclr", "seed": "0"}),
        ):
            log.handle(rec)
        now.t += 90.0
        log.handle(record(LogEvent.JOB_FINISHED, msg="Finished jobid: 1 (Rule: pretrain)", job_id=1))
        log.handle(record(LogEvent.PROGRESS, done=1, total=2))
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "Job stats: ..."  # Snakemake's own formatting for everything else
    assert lines[1].endswith("start  pretrain digits/simclr/seed0")
    assert "done   pretrain digits/simclr/seed0  [1/2]" in lines[2] and "(2 min left)" in lines[2]  # 90 s x 1 left / 1 done
    assert len(lines) == 3  # the scheduler's chatter and the finished line are folded away
