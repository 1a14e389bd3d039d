"""Inference off the event loop, bounded and batched: a few worker threads and a short queue, never a pile-up.

Requests that wait while a worker is busy are coded together in one model call
(up to ``batch_notes`` notes): a transformer codes 8 notes in one call 2-3x
faster per note than one at a time on CPU. A call that fails is retried one
request at a time, so one bad request never sinks the others batched with it.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


class Busy(Exception):
    """Every worker is busy and the queue is full: come back after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the service is busy: retry after {retry_after} s")
        self.retry_after = retry_after


class TimedOut(Exception):
    """The request waited and ran longer than the request timeout."""


@dataclass
class _Job:
    payload: Any
    size: int  # notes in it
    future: Future


class InferencePool:
    """``workers`` threads run ``handler`` on batches of waiting requests; at most ``queue_size`` more wait.

    ``handler(payloads) -> results`` gets the payloads of one or more requests
    and returns one result per payload, in order.
    """

    def __init__(
        self,
        handler: Callable[[Sequence[Any]], Sequence[Any]],
        *,
        workers: int,
        queue_size: int,
        batch_notes: int = 16,
    ) -> None:
        self.handler = handler
        self.workers = workers
        self.capacity = workers + queue_size
        self.batch_notes = batch_notes
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self._taken = 0
        self._mean_s = 0.5  # running mean of a request's share of a call, for Retry-After
        self._threads = [
            threading.Thread(target=self._work, name=f"medcoder-infer-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def in_use(self) -> int:
        return self._taken

    def _release(self, _: Any) -> None:
        with self._lock:
            self._taken -= 1
        self._slots.release()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch, size = [job], job.size
            while size < self.batch_notes:  # whatever else waits joins this call
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)  # shutting down: let the next loop see it
                    break
                batch.append(more)
                size += more.size
            live = [j for j in batch if j.future.set_running_or_notify_cancel()]  # timed out while queued: dropped
            if live:
                self._execute(live)

    def _execute(self, jobs: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            results = self.handler([j.payload for j in jobs])
        except Exception as exc:  # handed to the waiting request, never lost
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
            else:  # one request at a time: only the bad one fails
                for job in jobs:
                    self._execute([job])
            return
        took = (time.perf_counter() - start) / len(jobs)
        with self._lock:
            self._mean_s = 0.8 * self._mean_s + 0.2 * took
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)

    def retry_after(self) -> int:
        with self._lock:
            waiting = max(1, self._taken)
            return max(1, math.ceil(waiting * self._mean_s / self.workers))

    async def run(self, payload: Any, *, size: int = 1, timeout: float) -> Any:
        """``handler([payload])[0]``, computed on a worker (maybe batched with others).

        :class:`Busy` when the pool is full, :class:`TimedOut` after ``timeout``
        seconds. A request that times out while queued is dropped; one already
        running finishes and keeps its slot until then, so timeouts never let
        more work in than the pool holds.
        """
        if not self._slots.acquire(blocking=False):
            raise Busy(self.retry_after())
        with self._lock:
            self._taken += 1
        future: Future = Future()
        future.add_done_callback(self._release)
        self._jobs.put(_Job(payload, size, future))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            raise TimedOut() from None

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
