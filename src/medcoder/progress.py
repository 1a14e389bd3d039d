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
    """Logs the start and duration of each task; no bars."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Update]:
        start = time.perf_counter()
        logger.info("%s ...", description)
        yield lambda done, total_: None
        logger.info("%s done in %.1fs", description, time.perf_counter() - start)
