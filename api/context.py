"""What a handler reaches through its request: the executor and the read side (the typed keys
of the app and the request are in ``api.keys``).

eventsourcing is synchronous, so every call into the ledger application or the read models goes
through ``run``: one bounded thread pool per app, its threads shared out between lanes (write,
read, heavy), each with its bounded line of requests and a share per role (``api.limits``), no
blocking call on the event loop.

The read side is typed here by the contract of ``projections.readmodels`` (``ReadModels`` and
``ReadModelKeeper``), as protocols: the API depends on what it calls, nothing more.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar
from uuid import UUID

from aiohttp import web

from api.keys import ADMISSION, CURRENT, EXECUTOR, READ_MODELS, READ_WAIT_S
from ledger.application import LedgerApplication
from ledger.errors import NotReady
from ledger.settings import StoreSettings

if TYPE_CHECKING:
    from projections.paging import Query

P = ParamSpec("P")
T = TypeVar("T")


class Page(Protocol):
    @property
    def items(self) -> list[dict[str, Any]]: ...

    @property
    def next(self) -> str | None: ...


class ReadSide(Protocol):
    """The queries of ``projections.readmodels.ReadModels`` the API makes."""

    def wait_current(self, timeout_s: float = 5.0) -> int: ...

    def one_snapshot(self) -> AbstractContextManager[None]: ...

    def account(self, username: str) -> dict[str, Any] | None: ...

    def customers(
        self,
        *,
        prefix: str | None,
        currency: str | None,
        with_balance: bool | None,
        limit: int,
        after: str | None,
    ) -> Page: ...

    def orders(self, username: str, *, limit: int, after: str | None) -> Page: ...

    def refund_requests(
        self,
        *,
        status: str | None,
        username: str | None,
        limit: int,
        after: str | None,
        currency: str | None = None,
    ) -> Page: ...

    def refund_request_totals(
        self, *, status: str | None, username: str | None, currency: str | None
    ) -> list[dict[str, Any]]: ...

    def refund_request(self, request_id: UUID) -> dict[str, Any] | None: ...

    def history(self, username: str, *, limit: int, after: str | None) -> Page: ...

    def balance(
        self, username: str, *, at_position: int | None = None, as_of: datetime | None = None
    ) -> dict[str, Any] | None: ...

    def return_case(self, case_id: UUID) -> dict[str, Any] | None: ...

    def case_briefs(self, case_ids: list[str]) -> dict[str, dict[str, Any]]: ...

    def return_cases(
        self,
        *,
        state: str | None,
        username: str | None,
        overdue: bool | None,
        limit: int,
        after: str | None,
    ) -> Page: ...

    def return_case_counts(
        self, *, state: str | None, username: str | None, overdue: bool | None
    ) -> list[dict[str, Any]]: ...

    def events(self, *, limit: int, after: str | None) -> Page: ...

    def journal(
        self,
        *,
        account: str | None,
        limit: int,
        after: str | None,
        currency: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Page: ...

    def journal_entries(self, *, currency: str | None = None) -> Iterator[dict[str, Any]]: ...

    def reconciliation(self, currency: str, at_position: int | None = None) -> dict[str, Any]: ...

    def chart_balances(self, currency: str, position: int) -> dict[str, int]: ...

    def currencies_in_use(self, position: int) -> list[str]: ...

    def position_as_of(self, moment: datetime) -> int: ...

    def unmatched(
        self, *, currency: str | None, idle_before: datetime, limit: int
    ) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def outbox(self, *, status: str | None, limit: int, after: str | None,
               configured: Sequence[str] = (),
               usable: Callable[[str], bool] = lambda url: True) -> Page: ...


class Keeper(Protocol):
    """``projections.readmodels.ReadModelKeeper``: keeps the read models current."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def nudge(self) -> None: ...


# ``verify``'s re-derivation of the whole history, answered as a dict (``VerifyReport``).
Verifier = Callable[[StoreSettings, LedgerApplication], dict[str, Any]]


async def in_executor(
    app: web.Application, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Call ``fn`` on the app's bounded executor and await its result (start-up, shutdown)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(app[EXECUTOR], functools.partial(fn, *args, **kwargs))


async def run(request: web.Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A request's call: on the executor once a worker slot of its route's lane is free for its
    role (``api.limits``: 503 ``busy`` when none is in time); it runs to its end even if the
    request gives up on it."""
    app = request.app
    return await app[ADMISSION].run(request, app[EXECUTOR],
                                    functools.partial(fn, *args, **kwargs))


class SharedLook(Generic[T]):
    """One look at the store, shared by every request that asks for it while it is being made:
    a crowd of probes (``/ready``, ``/metrics``: no token needed, all one role, ``anonymous``)
    costs one job at a time in the read lane, not one each, and a probe of one kind never
    waits in line behind a crowd of the other. A request that joins a look under way gets an
    answer begun before it came (older by at most one look's time); nothing is kept after a
    look ends, so the next request looks again."""

    def __init__(self) -> None:
        self._making: asyncio.Future[T] | None = None

    async def get(self, make: Callable[[], Awaitable[T]]) -> T:
        """``make()``'s answer, or that of the look under way (a failure too). A request that
        gives up does not end the look for the others."""
        if self._making is None:
            self._making = asyncio.ensure_future(self._make(make))
            # Its failure is each waiter's to hear; when every waiter gave up first, it is no
            # one's, and asyncio would log it as never retrieved (once a second while the
            # store is down).
            self._making.add_done_callback(_heard)
        return await asyncio.shield(self._making)

    async def _make(self, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return await make()
        finally:
            self._making = None


def _heard(look: asyncio.Future[Any]) -> None:
    if not look.cancelled():
        look.exception()


async def run_first_on_loop(request: web.Request, first: Callable[[], Awaitable[T | None]] | None,
                            job: Callable[[], T]) -> T:
    """``run(request, job)``, but once the slot is had, ``first`` is tried on the event loop:
    its answer, unless it answers None (then ``job``, in the same slot)."""
    app = request.app
    return await app[ADMISSION].run(request, app[EXECUTOR], job, first=first)


async def read(request: web.Request, query: Callable[[ReadSide], T]) -> T:
    """Answer ``query`` once the read models reflect every write acknowledged before now.

    Waiting and querying are one executor job. ``NotReady`` (503) when they lag too long."""
    return await read_at(request, lambda read_models, position: query(read_models))


async def read_at(request: web.Request, query: Callable[[ReadSide, int], T]) -> T:
    """``read``, telling ``query`` the log position every read model has reached: a query that
    reads several read models pins itself there, so a write landing meanwhile cannot show in
    one and not in another. Its queries see one snapshot of the read models (PostgreSQL):
    the parts of one answer (a balance and its orders, a list and its totals) agree."""
    read_models = request.app[READ_MODELS]
    timeout_s = request.app[READ_WAIT_S]

    def current() -> T:
        position = read_models.wait_current(timeout_s)
        with read_models.one_snapshot():
            return query(read_models, position)

    return await run(request, current)


async def read_current(
    request: web.Request, query: Query, on_executor: Callable[[ReadSide], T]
) -> T:
    """``query``'s answer once current: in one statement on the async pool where there is one
    (PostgreSQL), otherwise ``on_executor`` (the read side's own method for the same query) as
    ``read`` does. Past the bound, ``NotReady``, or ``HistoryDamaged`` when an event without a
    valid seal is what stops the read models."""
    current = request.app[CURRENT]
    if current is None:
        return await read(request, on_executor)
    try:
        answer: T = await current.fetch(query, timeout_s=request.app[READ_WAIT_S])
    except NotReady:
        # Say why, if it is damage: the read models' own check answers at once.
        await run(request, request.app[READ_MODELS].wait_current, 0.0)
        raise
    return answer
