"""LogReporter: what a run writes to a log file, where no bar can show."""

from __future__ import annotations

import logging

import pytest

from medcoder.progress import LogReporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_logged_at_most_once_per_interval_with_an_estimate(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    reporter = LogReporter(interval=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="medcoder"):
        with reporter.task("training", total=400) as update:
            for step in range(1, 401):
                clock.now += 1.0  # one second a step
                update(step, 400)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training: ")]
    # 400 s of work, a line per full minute: at 60, 120, ..., 360 s.
    assert len(lines) == 6
    assert lines[0] == "training: 60/400 (15%), 1:00 elapsed, about 5:40 left"
    assert lines[-1] == "training: 360/400 (90%), 6:00 elapsed, about 0:40 left"
    assert caplog.records[-1].getMessage() == "training done in 400.0s"


def test_progress_without_a_total_counts_and_long_runs_show_hours(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    reporter = LogReporter(interval=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="medcoder"):
        with reporter.task("masked-LM training") as update:
            clock.now += 30.0
            update(5, 0)  # under the interval: nothing
            clock.now += 3700.0
            update(700, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert "masked-LM training: 700 done, 1:02:10 elapsed" in messages
    assert not any(m.startswith("masked-LM training: 5 ") for m in messages)
