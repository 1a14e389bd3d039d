"""Progress reporting that the library can use without knowing about terminals.

Library code asks a ``Reporter`` for a task and calls the returned update
function with ``(done, total)``. The CLI passes a rich-based reporter; the
default reporter only logs when a task starts and ends.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Protocol

Update = Callable[[int, int], None]
logger = logging.getLogger("medcoder")


class Reporter(Protocol):
    def task(self, description: str, total: int | None = None) -> contextlib.AbstractContextManager[Update]:
        """A context for one long step; the yielded function reports ``(done, total)``."""


class LogReporter:
    """Logs the start and duration of each task, and its progress at most every ``interval`` seconds; no bars.

    This is what a run writes to a log file or a pipe (``nohup``, a batch job), where a bar cannot show.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.perf_counter) -> None:
        self.interval = interval
        self.clock = clock

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Update]:
        start = self.clock()
        last = start
        logger.info("%s ...", description)

        def update(done: int, total_: int) -> None:
            nonlocal last
            now = self.clock()
            if now - last < self.interval or done <= 0:
                return
            last = now
            elapsed = now - start
            if total_ and total_ > 0:
                left = elapsed / done * max(total_ - done, 0)
                logger.info(
                    "%s: %d/%d (%.0f%%), %s elapsed, about %s left",
                    description,
                    done,
                    total_,
                    100.0 * done / total_,
                    _clock_time(elapsed),
                    _clock_time(left),
                )
            else:
                logger.info("%s: %d done, %s elapsed", description, done, _clock_time(elapsed))

        yield update
        logger.info("%s done in %.1fs", description, self.clock() - start)


def _clock_time(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
