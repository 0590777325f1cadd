"""How much the service takes on, and how long a client waits: every bound in one place.

- **Lanes.** Every call into eventsourcing runs on the request executor, which has no more
  threads than the store has connections. Its threads are shared out between three lanes,
  each with worker slots of its own: ``write`` (every POST that changes the ledger), ``read``
  (plain GETs: accounts, balances, history, orders, refund requests, cases, readiness) and
  ``heavy`` (the event log's pages, the journal, reconciliation, the export, the chain's
  digest). The route table gives each route its lane (``api.routing.Route.lane``). The lanes'
  slots add up to at most the executor's threads, and a request takes a slot of its lane
  before its job is handed over: no job ever waits inside the executor, and a lane full of
  slow reports never holds up a deposit or a balance. By default the threads are shared
  write 5 : read 2 : heavy 1 (``LANE_WEIGHTS``; 8 threads give 5 / 2 / 1), each lane at
  least one: a lone writer's throughput grows with its slots (concurrent writes share a group
  commit), while each heavy page is CPU-bound and slows every other thread of the process.
- **Each role a share of a lane.** Within a lane a role holds at most ``role_workers`` slots
  (default: all of the lane's but one) and has at most ``role_waiting`` requests in the lane's
  line (default: half of it, rounded up). So however many requests one role sends, it leaves
  a slot of the lane free for the others' requests, admitted at once, and room for them in the
  line. When a slot frees, it goes to a waiting request of the role that holds fewest slots of
  the lane (below its share); of those, the role served longest ago; and that role's oldest
  request. Under load the roles take turns and converge on equal shares: none waits behind
  another's backlog. The price: a role alone in a lane leaves one of its slots idle (set
  ``role_workers`` to the lane's workers to trade the at-once guarantee for that slot). In a
  lane of one worker (the heavy lane of 8 threads) there is no slot to leave: roles take
  turns, a request of another role waiting at most for the job in hand.
- **The heavy lane's pace.** A lane may also start at most ``starts_per_s`` requests a second
  (a token bucket holding one second's worth, so a short burst is not slowed). Only the heavy
  lane is paced by default (``HEAVY_STARTS_PER_S``): its requests are bulk answers of up to
  1000 items whose sending and encoding take the process's time from every other lane, and a
  page kept as answered (``api.sealed_pages``) costs no worker at all, so without a pace a
  flood of auditors would take the event loop itself. Requests beyond the pace wait in the
  lane's line like those beyond its workers.
- **Waiting for a worker.** At most ``max_waiting`` requests wait in a lane's line, each at
  most ``queue_wait_s``. A request beyond its role's share of the line, or beyond the line, or
  waiting too long, is refused with 503 ``busy`` and ``Retry-After`` (at once for the first
  two), its detail naming the lane and the role, and nothing was done.
- **The request deadline.** No request is answered later than ``request_deadline_s`` after its
  handler started (body reading included): past it the client gets 503 ``deadline_exceeded``,
  or 408 (and the connection closed) when its body was still arriving: the client's delay.
  A job already handed to a worker is not cut short (a thread cannot be, and a write must not
  be cut in half): it finishes, and only then frees its slot. A client that wants to know
  whether its write happened sends the same request with the same ``Idempotency-Key`` (or the
  same natural key: a payment reference, an order number) and gets the first answer.

Bounds elsewhere: bodies (``api.app.MAX_BODY_BYTES``, 413), pages (``api.models.MAX_PAGE``,
422), the read models' catch-up wait (``api.app.DEFAULT_READ_WAIT_S``, 503 ``not_ready``), the
ledger's optimistic retries and per-account lock wait (``LedgerApplication.max_attempts`` and
``lock_timeout_s``: 503 ``busy``), the PostgreSQL pool (``ledger.settings``: size, waiters,
connect and lock timeouts), one verify at a time on a thread of its own, outside the lanes
(503 ``busy``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from api.keys import ACTOR, DEADLINES, READING_BODY, ROUTE_LANES
from api.problems import BodyTimeout, DeadlineExceeded, Overloaded
from ledger.timers import FixedDelayTimers

T = TypeVar("T")

REQUEST_DEADLINE_S = 30.0
MAX_WAITING_REQUESTS = 256  # in each lane's line
MAX_QUEUE_WAIT_S = 10.0
MAX_WAITING_BOUND = 100_000
MAX_WORKERS_BOUND = 1024
MAX_WAIT_BOUND_S = 3600.0
# The heavy lane starts at most this many requests a second: an auditor still reads 50,000
# events a second, a history of ten million in under four minutes.
HEAVY_STARTS_PER_S = 50.0
MAX_STARTS_PER_S_BOUND = 1_000_000.0
# The role of a request served without a token: /ready and /metrics, whose looks at the store
# are each shared by the requests that ask meanwhile (``api.context.SharedLook``).
ANONYMOUS = "anonymous"

log = logging.getLogger("api.limits")


class Lane(StrEnum):
    WRITE = "write"
    READ = "read"
    HEAVY = "heavy"


# How the executor's threads are shared between the lanes whose workers are not set.
LANE_WEIGHTS: Mapping[Lane, int] = {Lane.WRITE: 5, Lane.READ: 2, Lane.HEAVY: 1}
# How many requests a second each lane starts at most, unless its ``LaneLimits`` says.
DEFAULT_STARTS_PER_S: Mapping[Lane, float] = {
    Lane.WRITE: math.inf, Lane.READ: math.inf, Lane.HEAVY: HEAVY_STARTS_PER_S}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class LaneLimits:
    """What may be set for one lane; None takes the default (see the module docstring)."""

    workers: int | None = None
    max_waiting: int | None = None
    queue_wait_s: float | None = None
    role_workers: int | None = None
    role_waiting: int | None = None
    starts_per_s: float | None = None  # math.inf: unpaced

    def checked(self, lane: Lane) -> None:
        if self.workers is not None:
            _check(1 <= self.workers <= MAX_WORKERS_BOUND,
                   f"{_var(lane, 'workers')} is 1..{MAX_WORKERS_BOUND}")
        if self.max_waiting is not None:
            _check(0 <= self.max_waiting <= MAX_WAITING_BOUND,
                   f"{_var(lane, 'max_waiting')} is 0..{MAX_WAITING_BOUND}")
        if self.queue_wait_s is not None:
            _check(0 < self.queue_wait_s <= MAX_WAIT_BOUND_S,
                   f"{_var(lane, 'queue_wait_s')} is in (0, {MAX_WAIT_BOUND_S:g}]")
        if self.role_workers is not None:
            _check(1 <= self.role_workers <= MAX_WORKERS_BOUND,
                   f"{_var(lane, 'role_workers')} is 1..{MAX_WORKERS_BOUND}")
        if self.role_waiting is not None:
            _check(0 <= self.role_waiting <= MAX_WAITING_BOUND,
                   f"{_var(lane, 'role_waiting')} is 0..{MAX_WAITING_BOUND}")
        if self.starts_per_s is not None:
            _check(self.starts_per_s >= 1 and (math.isinf(self.starts_per_s)
                                               or self.starts_per_s <= MAX_STARTS_PER_S_BOUND),
                   f"{_var(lane, 'starts_per_s')} is 1..{MAX_STARTS_PER_S_BOUND:g}, or unpaced")


def _var(lane: Lane, name: str) -> str:
    """The variable that sets one of a lane's bounds (``LEDGER_WRITE_WORKERS``)."""
    return f"LEDGER_{lane.value.upper()}_{name.upper()}"


@dataclass(frozen=True)
class LaneBounds:
    """One lane's bounds, every one of them decided (``Limits.lanes``)."""

    lane: Lane
    workers: int
    max_waiting: int
    queue_wait_s: float
    role_workers: int
    role_waiting: int
    starts_per_s: float = math.inf

    def __post_init__(self) -> None:
        _check(self.workers >= 1, f"the {self.lane} lane needs a worker")
        _check(self.starts_per_s >= 1, f"the {self.lane} lane starts at least 1 request a second")
        _check(1 <= self.role_workers <= self.workers,
               f"{_var(self.lane, 'role_workers')} is 1..{self.workers} "
               f"(the lane's, {_var(self.lane, 'workers')})")
        _check(0 <= self.role_waiting <= self.max_waiting,
               f"{_var(self.lane, 'role_waiting')} is 0..{self.max_waiting} "
               f"(the lane's, {_var(self.lane, 'max_waiting')})")


@dataclass(frozen=True)
class Limits:
    """The request deadline, and the lanes' bounds. ``max_waiting`` and ``queue_wait_s`` are
    every lane's unless its ``LaneLimits`` says otherwise."""

    request_deadline_s: float = REQUEST_DEADLINE_S
    max_waiting: int = MAX_WAITING_REQUESTS
    queue_wait_s: float = MAX_QUEUE_WAIT_S
    write: LaneLimits = field(default_factory=LaneLimits)
    read: LaneLimits = field(default_factory=LaneLimits)
    heavy: LaneLimits = field(default_factory=LaneLimits)

    def __post_init__(self) -> None:
        _check(0 < self.request_deadline_s <= MAX_WAIT_BOUND_S,
               f"LEDGER_REQUEST_DEADLINE_S is in (0, {MAX_WAIT_BOUND_S:g}]")
        _check(0 <= self.max_waiting <= MAX_WAITING_BOUND,
               f"LEDGER_MAX_WAITING_REQUESTS is 0..{MAX_WAITING_BOUND}")
        _check(0 < self.queue_wait_s <= self.request_deadline_s,
               "LEDGER_QUEUE_WAIT_S is in (0, LEDGER_REQUEST_DEADLINE_S]")
        for lane in Lane:
            own = self.of(lane)
            own.checked(lane)
            if own.queue_wait_s is not None:
                _check(own.queue_wait_s <= self.request_deadline_s,
                       f"{_var(lane, 'queue_wait_s')} is in (0, LEDGER_REQUEST_DEADLINE_S]")

    def of(self, lane: Lane) -> LaneLimits:
        own: LaneLimits = getattr(self, lane.value)
        return own

    def lanes(self, threads: int) -> dict[Lane, LaneBounds]:
        """Every lane's bounds on an executor of ``threads`` threads; ValueError when they
        cannot be had (a lane without a worker, more workers than threads, a share too big)."""
        workers = _share_out(threads, {lane: self.of(lane).workers for lane in Lane})
        found = {}
        for lane in Lane:
            own = self.of(lane)
            max_waiting = self.max_waiting if own.max_waiting is None else own.max_waiting
            found[lane] = LaneBounds(
                lane=lane,
                workers=workers[lane],
                max_waiting=max_waiting,
                queue_wait_s=self.queue_wait_s if own.queue_wait_s is None else own.queue_wait_s,
                role_workers=(max(1, workers[lane] - 1) if own.role_workers is None
                              else own.role_workers),
                role_waiting=(math.ceil(max_waiting / 2) if own.role_waiting is None
                              else own.role_waiting),
                starts_per_s=(DEFAULT_STARTS_PER_S[lane] if own.starts_per_s is None
                              else own.starts_per_s),
            )
        return found


def _share_out(threads: int, chosen: Mapping[Lane, int | None]) -> dict[Lane, int]:
    """The lanes' workers: those chosen, and the remaining threads shared by ``LANE_WEIGHTS``
    among the others (at least one each; the write lane, or else the last, takes what
    rounding leaves)."""
    given = {lane: n for lane, n in chosen.items() if n is not None}
    _check(sum(given.values()) <= threads,
           f"the lanes' workers ({sum(given.values())}) are more than the executor's "
           f"{threads} threads")
    rest = [lane for lane in Lane if lane not in given]
    remaining = threads - sum(given.values())
    _check(remaining >= len(rest),
           f"{threads} threads cannot give each lane a worker: set fewer lane workers or a "
           "larger pool")
    if not rest:
        return given
    weight = sum(LANE_WEIGHTS[lane] for lane in rest)
    last = Lane.WRITE if Lane.WRITE in rest else rest[-1]
    shared = {lane: max(1, remaining * LANE_WEIGHTS[lane] // weight)
              for lane in rest if lane is not last}
    shared[last] = remaining - sum(shared.values())
    _check(shared[last] >= 1,
           f"{threads} threads cannot give each lane a worker: set fewer lane workers")
    return {**given, **shared}


@dataclass(eq=False)  # a waiter is itself, whatever its fields
class _Waiter:
    granted: asyncio.Future[None]

    def was_granted(self) -> bool:
        return self.granted.done() and not self.granted.cancelled()


class _LaneLine:
    """One lane's slots, held by role, and its line of waiting requests: one queue per role,
    oldest first."""

    def __init__(self, bounds: LaneBounds) -> None:
        self.bounds = bounds
        self.holding: Counter[str] = Counter()
        self.lines: dict[str, deque[_Waiter]] = {}
        self._grants = itertools.count(1)
        self._last_granted: Counter[str] = Counter()  # when each role last got a slot
        # The pace's token bucket: one second's worth of starts, full at first.
        self._paced = not math.isinf(bounds.starts_per_s)
        self._burst = max(1.0, bounds.starts_per_s) if self._paced else 0.0
        self._tokens = self._burst
        self._filled_at: float | None = None
        self._regrant: asyncio.TimerHandle | None = None

    @property
    def held(self) -> int:
        return self.holding.total()

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self.lines.values())

    def waiting_of(self, role: str) -> int:
        return len(self.lines.get(role, ()))

    async def acquire(self, role: str) -> None:
        """A slot for ``role``: at once when one is free within its share, else in line
        (bounded in length and wait); Overloaded otherwise."""
        bounds = self.bounds
        if (self.held < bounds.workers and self.holding[role] < bounds.role_workers
                and (not self._paced or (not self.waiting and self._has_start()))):
            self._take(role)
            return
        self._refuse_when_full(role)
        waiter = _Waiter(asyncio.get_running_loop().create_future())
        self.lines.setdefault(role, deque()).append(waiter)
        if self._paced:  # a slot may be free, kept for the line until the pace lets one start
            self._grant()
        try:
            async with asyncio.timeout(bounds.queue_wait_s):
                await waiter.granted
        except TimeoutError:
            if not waiter.was_granted():  # else granted as the wait ran out: the slot is ours
                raise Overloaded(
                    f"no worker of the {bounds.lane} lane was free for the {role} role within "
                    f"{bounds.queue_wait_s:g} s; try again shortly") from None
        except BaseException:
            if waiter.was_granted():
                self.release(role)
            raise
        finally:
            if not waiter.was_granted() and waiter in self.lines[role]:
                self.lines[role].remove(waiter)  # not yet passed over by ``_grant``

    def _refuse_when_full(self, role: str) -> None:
        bounds = self.bounds
        if self.waiting_of(role) >= bounds.role_waiting:
            raise Overloaded(
                f"the {role} role has its share of the {bounds.lane} lane in use: "
                f"{self.holding[role]} of its requests are being served and "
                f"{self.waiting_of(role)} wait, the most it may have; try again shortly")
        if self.waiting >= bounds.max_waiting:
            raise Overloaded(
                f"the {bounds.lane} lane is full: {self.waiting} requests already wait for its "
                f"{bounds.workers} workers; try again shortly")

    def release(self, role: str) -> None:
        """Free ``role``'s slot and hand free slots on (``_grant``)."""
        if self.holding[role] <= 0:
            raise RuntimeError(f"the {role} role holds no slot of the {self.bounds.lane} lane")
        self.holding[role] -= 1
        self._grant()

    def _take(self, role: str) -> None:
        self.holding[role] += 1
        self._last_granted[role] = next(self._grants)
        if self._paced:
            self._tokens -= 1

    def _has_start(self) -> bool:
        """Whether the pace lets a request start now (the bucket refilled to now)."""
        if not self._paced:
            return True
        now = asyncio.get_running_loop().time()
        if self._filled_at is not None:
            self._tokens = min(self._burst,
                               self._tokens + (now - self._filled_at) * self.bounds.starts_per_s)
        self._filled_at = now
        return self._tokens >= 1

    def _grant_when_paced(self) -> None:
        """Grant again once the pace lets the next request start (one timer at a time)."""
        if self._regrant is not None:
            return
        delay = (1 - self._tokens) / self.bounds.starts_per_s

        def regrant() -> None:
            self._regrant = None
            self._grant()

        self._regrant = asyncio.get_running_loop().call_later(max(delay, 0.0), regrant)

    def _grant(self) -> None:
        """While a slot is free: to a waiting request of the role that holds fewest slots
        (below its share), of those the role served longest ago, its oldest request first."""
        while self.held < self.bounds.workers:
            eligible = [(self.holding[role], self._last_granted[role], role)
                        for role, line in self.lines.items()
                        if line and self.holding[role] < self.bounds.role_workers]
            if not eligible:
                return
            if not self._has_start():
                self._grant_when_paced()
                return
            role = min(eligible)[2]
            waiter = self.lines[role].popleft()
            if waiter.granted.done():  # cancelled: its request is leaving the line
                continue
            self._take(role)
            waiter.granted.set_result(None)


class Admission:
    """Worker slots for requests, by lane and role (see the module docstring)."""

    def __init__(self, bounds: Mapping[Lane, LaneBounds]) -> None:
        _check(set(bounds) == set(Lane), "every lane needs its bounds")
        self._lanes = {lane: _LaneLine(bounds[lane]) for lane in Lane}

    def bounds(self, lane: Lane) -> LaneBounds:
        return self._lanes[lane].bounds

    def holding(self, lane: Lane, role: str | None = None) -> int:
        """Slots of ``lane`` held (by ``role``, or by any)."""
        line = self._lanes[lane]
        return line.held if role is None else line.holding[role]

    def waiting(self, lane: Lane, role: str | None = None) -> int:
        """Requests in ``lane``'s line (of ``role``, or of any)."""
        line = self._lanes[lane]
        return line.waiting if role is None else line.waiting_of(role)

    async def run(self, request: web.Request, executor: Executor, job: Callable[[], T],
                  *, kept: Callable[[], T | None] | None = None,
                  keep: Callable[[T], None] | None = None,
                  first: Callable[[], Awaitable[T | None]] | None = None) -> T:
        """``job`` for ``request``, in its route's lane and as its caller's role (``run_in``)."""
        lane, role = self._lane_and_role(request)
        return await self.run_in(lane, role, executor, job, kept=kept, keep=keep, first=first)

    def _lane_and_role(self, request: web.Request) -> tuple[Lane, str]:
        lane = request.app[ROUTE_LANES][request.match_info.route.name or ""]
        actor = request.get(ACTOR)
        return lane, ANONYMOUS if actor is None else actor.role

    async def run_in(self, lane: Lane, role: str, executor: Executor, job: Callable[[], T],
                     *, kept: Callable[[], T | None] | None = None,
                     keep: Callable[[T], None] | None = None,
                     first: Callable[[], Awaitable[T | None]] | None = None) -> T:
        """``job`` on ``executor`` once ``role`` has a slot of ``lane``; Overloaded when it
        gets none in time. The slot is freed when the job ends, however its request ends.

        What a job makes may be kept for the requests in line behind it, rather than each
        making it again: ``keep`` is given what the job answered, on the event loop, before its
        slot is freed; ``kept``, asked on the event loop once a request has its slot, may
        answer instead of a job, and then the slot is freed at once.

        ``first``, when given, is tried on the event loop once the request has its slot (a
        write decided and committed there, ``ledger.pipeline``): its answer, unless it answers
        None, and then ``job`` runs in the same slot. Like a job, it runs to its end even if
        the request gives up on it, and holds the slot until then."""
        line = self._lanes[lane]
        await line.acquire(role)
        try:
            found = None if kept is None else kept()
        except BaseException:
            line.release(role)
            raise
        if found is None and first is not None:
            found = await _first_in_slot(line, role, first)
        try:
            if found is not None:
                line.release(role)
                return found
            future = asyncio.get_running_loop().run_in_executor(executor, job)
        except BaseException:
            line.release(role)
            raise

        def done(ended: asyncio.Future[T]) -> None:
            try:
                if keep is not None and not ended.cancelled() and ended.exception() is None:
                    keep(ended.result())
            finally:
                line.release(role)

        future.add_done_callback(done)
        return await finish_even_if_abandoned(future)


async def _first_in_slot(line: _LaneLine, role: str, first: Callable[[], Awaitable[T | None]]
                         ) -> T | None:
    """``first()`` in ``role``'s slot of ``line``; the slot is freed when it fails or, if its
    request gives up on it, when it ends."""
    attempt = asyncio.ensure_future(first())
    try:
        return await finish_even_if_abandoned(attempt)
    except BaseException:
        if attempt.done():
            line.release(role)
        else:
            attempt.add_done_callback(lambda _: line.release(role))
        raise


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


class Deadlines:
    """Every request's deadline, on one timer of the event loop (``ledger.timers``) rather than
    ``asyncio.timeout``'s timer per request: that cost about 4.5 µs of the event loop per
    request, the loop being the process's limit under load. The cancellation is the one
    ``asyncio.timeout`` makes, told apart the same way (``Task.cancelling`` before,
    ``Task.uncancel`` after): ``deadline_middleware``."""

    def __init__(self, delay_s: float) -> None:
        self._timers: FixedDelayTimers[asyncio.Task[object]] = FixedDelayTimers(delay_s)
        self._expired: set[asyncio.Task[object]] = set()

    @property
    def delay_s(self) -> float:
        return self._timers.delay_s

    def start(self, task: asyncio.Task[object]) -> None:
        """``task`` is cancelled if it is still running ``delay_s`` from now (unless ``end``)."""
        self._timers.set(task, self._expire)

    def end(self, task: asyncio.Task[object]) -> bool:
        """``task``'s deadline forgotten; True, once, when it had passed (and cancelled it)."""
        self._timers.cancel(task)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def pending(self) -> int:
        """Deadlines not yet passed nor ended."""
        return len(self._timers)

    def _expire(self, task: asyncio.Task[object]) -> None:
        self._expired.add(task)
        task.cancel()


@web.middleware
async def deadline_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """503 ``deadline_exceeded`` when the handler has not answered within the deadline; 408
    when the client had not yet sent the whole body by then (nothing was done)."""
    deadlines = request.app[DEADLINES]
    task = asyncio.current_task()
    assert task is not None, "a handler runs in a task"
    cancelling = task.cancelling()
    deadlines.start(task)
    try:
        return await handler(request)
    except asyncio.CancelledError:
        # Ours when the deadline passed and no one else cancelled the request meanwhile.
        if not deadlines.end(task) or task.uncancel() > cancelling:
            raise
    finally:
        if deadlines.end(task):  # passed, but the handler answered anyway: ours taken back
            task.uncancel()
    deadline_s = deadlines.delay_s
    if request.get(READING_BODY):
        raise BodyTimeout(
            f"the body did not arrive within {deadline_s:g} s: nothing was done; send the "
            "request again with its whole body")
    raise DeadlineExceeded(
        f"no answer within {deadline_s:g} s. A write may still complete: send the same "
        "request with the same Idempotency-Key to learn its outcome"
    )
