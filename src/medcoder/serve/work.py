"""Inference off the event loop, bounded: a few worker threads and a short queue, never a pile-up."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Every worker is busy and the queue is full: come back after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the service is busy: retry after {retry_after} s")
        self.retry_after = retry_after


class TimedOut(Exception):
    """The request waited and ran longer than the request timeout."""


class InferencePool:
    """``workers`` threads run model calls; at most ``queue_size`` more wait, the next one is refused at once."""

    def __init__(self, workers: int, queue_size: int) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medcoder-infer")
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self._taken = 0
        self._mean_s = 0.5  # running mean of a call's duration, for Retry-After
        self.refused = 0
        self.timed_out = 0

    @property
    def in_use(self) -> int:
        return self._taken

    def _release(self, _: Any) -> None:
        with self._lock:
            self._taken -= 1
        self._slots.release()

    def _timed(self, fn: Callable[..., T], args: tuple) -> T:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            took = time.perf_counter() - start
            with self._lock:
                self._mean_s = 0.8 * self._mean_s + 0.2 * took

    def retry_after(self) -> int:
        with self._lock:
            waiting = max(1, self._taken)
            return max(1, math.ceil(waiting * self._mean_s / self.workers))

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float) -> T:
        """``fn(*args)`` on a worker thread; :class:`Busy` when full, :class:`TimedOut` after ``timeout`` s.

        A call that times out while still queued is cancelled; one already
        running finishes on its thread and keeps its slot until then, so
        timeouts cannot let more work in than the pool holds.
        """
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.refused += 1
            raise Busy(self.retry_after())
        with self._lock:
            self._taken += 1
        try:
            future = self._executor.submit(self._timed, fn, args)
        except RuntimeError:  # shutting down
            self._release(None)
            raise Busy(self.retry_after()) from None
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            with self._lock:
                self.timed_out += 1
            raise TimedOut() from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
