"""How much the service takes on, and how long a client waits: every bound in one place.

- **Workers.** Every call into eventsourcing runs on the request executor, which has no more
  threads than the store has connections. A request takes a worker slot before its job is
  handed over, so the executor's own (unbounded) queue never holds more than its threads.
- **Waiting for a worker.** At most ``max_waiting`` requests wait for a slot, each at most
  ``queue_wait_s``; a request beyond either bound is refused at once with 503 ``busy`` and
  ``Retry-After``, and nothing was done.
- **The request deadline.** No request is answered later than ``request_deadline_s`` after its
  handler started (body reading included): past it the client gets 503 ``deadline_exceeded``.
  A job already handed to a worker is not cut short (a thread cannot be, and a write must not
  be cut in half): it finishes, and only then frees its slot. A client that wants to know
  whether its write happened sends the same request with the same ``Idempotency-Key`` (or the
  same natural key: a payment reference, an order number) and gets the first answer.

Bounds elsewhere: bodies (``api.app.MAX_BODY_BYTES``, 413), pages (``api.models.MAX_PAGE``,
422), the read models' catch-up wait (``api.app.DEFAULT_READ_WAIT_S``, 503 ``not_ready``), the
ledger's optimistic retries and per-account lock wait (``LedgerApplication.max_attempts`` and
``lock_timeout_s``: 503 ``busy``), the PostgreSQL pool (``ledger.settings``: size, waiters,
connect and lock timeouts), one verify at a time (503 ``busy``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from api.problems import DeadlineExceeded, Overloaded

T = TypeVar("T")

REQUEST_DEADLINE_S = 30.0
MAX_WAITING_REQUESTS = 256
MAX_QUEUE_WAIT_S = 10.0

log = logging.getLogger("api.limits")


@dataclass(frozen=True)
class Limits:
    request_deadline_s: float = REQUEST_DEADLINE_S
    max_waiting: int = MAX_WAITING_REQUESTS
    queue_wait_s: float = MAX_QUEUE_WAIT_S

    def __post_init__(self) -> None:
        if not 0 < self.request_deadline_s <= 3600:
            raise ValueError("request_deadline_s is in (0, 3600]")
        if not 0 <= self.max_waiting <= 100_000:
            raise ValueError("max_waiting is 0..100000")
        if not 0 < self.queue_wait_s <= self.request_deadline_s:
            raise ValueError("queue_wait_s is in (0, request_deadline_s]")


LIMITS = web.AppKey("limits", Limits)


class Admission:
    """Worker slots for requests: ``workers`` jobs at a time, a bounded line for the rest."""

    def __init__(self, workers: int, limits: Limits) -> None:
        self._slots = asyncio.Semaphore(workers)
        self._limits = limits
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    async def run(self, executor: Executor, job: Callable[[], T]) -> T:
        """``job`` on ``executor`` once a slot is free; Overloaded when none is in time."""
        if self._slots.locked() and self._waiting >= self._limits.max_waiting:
            raise Overloaded(f"{self._waiting} requests already wait for the store; try again "
                             "shortly")
        self._waiting += 1
        try:
            async with asyncio.timeout(self._limits.queue_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded(f"no worker was free within {self._limits.queue_wait_s:g} s; try "
                             "again shortly") from None
        finally:
            self._waiting -= 1
        try:
            future = asyncio.get_running_loop().run_in_executor(executor, job)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._job_done)
        return await finish_even_if_abandoned(future)

    def _job_done(self, future: asyncio.Future[T]) -> None:
        self._slots.release()


async def finish_even_if_abandoned(future: asyncio.Future[T]) -> T:
    """Await ``future``; if the waiting request is cancelled (its deadline passed), the job
    still runs to its end, and how it ended is logged rather than lost."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(_log_abandoned)
        raise


def _log_abandoned(future: asyncio.Future[T]) -> None:
    error = None if future.cancelled() else future.exception()
    if error is None:
        log.info("a job whose request had given up on it completed")
    else:
        log.warning("a job whose request had given up on it ended with %s: %s",
                    type(error).__name__, error)


@web.middleware
async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """503 ``deadline_exceeded`` when the handler has not answered within the deadline."""
    deadline_s = request.app[LIMITS].request_deadline_s
    try:
        async with asyncio.timeout(deadline_s) as deadline:
            return await handler(request)
    except TimeoutError:
        if not deadline.expired():
            raise
    raise DeadlineExceeded(
        f"no answer within {deadline_s:g} s. A write may still complete: send the same "
        "request with the same Idempotency-Key to learn its outcome"
    )
