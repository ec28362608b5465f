"""pipeline.logs: the log header names the command; Progress reports rate and ETA on a schedule."""

from __future__ import annotations

import io
import re
import sys

from pipeline.logs import Progress, log_header


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_header_has_the_command_and_a_timestamp():
    out = io.StringIO()
    line = log_header("evaluate", ["--cfg", '{"a": 1}', "--out", "x y.json"], stream=out)
    assert out.getvalue().strip() == line
    assert re.match(r"# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  ", line)
    assert f"{sys.executable} -m pipeline.evaluate --cfg '{{\"a\": 1}}' --out 'x y.json'" in line  # shell-quoted


def test_progress_prints_every_interval_with_rate_and_eta():
    out, clock = io.StringIO(), FakeClock()
    with Progress(100, "pretrain epoch 1/2", "batch", every_s=30, stream=out, clock=clock) as progress:
        for _ in range(100):
            clock.now += 1.0  # one batch per second
            progress.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # at 30, 60 and 90 s, and the closing line at 100 s
    assert lines[0] == "pretrain epoch 1/2: 30/100 batch (30%), 1 batch/s, ETA 0:01:10"
    assert lines[-1].startswith("pretrain epoch 1/2: 100/100 batch (100%)")


def test_short_loop_prints_nothing():
    out, clock = io.StringIO(), FakeClock()
    with Progress(5, "x", stream=out, clock=clock) as progress:
        for _ in range(5):
            clock.now += 0.1
            progress.update()
    assert out.getvalue() == ""
