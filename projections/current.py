"""Current reads in one round trip, on psycopg's async pool, in the event loop (PostgreSQL).

A read must reflect every write acknowledged before it began, whichever process served the
write (API.md). Here one statement learns the log's head, the position every read model has
reached, and the rows asked for, all in one snapshot: when the read models have reached the
head, the rows are current and are the answer; otherwise the statement is asked again, with a
short growing pause, until they have reached that first head or the bound has passed
(``NotReady``, as the executor's reads answer). That head, seen by a statement begun after the
read, is at or after every write acknowledged before it; writes landing while the read waits
need not be waited for (a read asking for the head of each snapshot, under a steady stream of
writes, seldom found the read models there: 50 reads/s, p50 250 ms, beside 1,000 deposits/s).
No thread of the executor is taken, and no other statement is sent.

Answers kept while the log stands still. The rows of a ``keepable`` query (an account, a
balance: rows only events change) are a function of the log up to the head they were read at.
The reader keeps them (at most ``MAX_KEPT_ANSWERS``, each of at most ``MAX_KEPT_ROWS`` rows,
the least recently asked dropped first) with that head. Asked again, it only looks where the
log and the read models stand (``HeadLooks``), and answers the kept rows when the head is the
same, the read models have reached it and no rebuild has put them anew since (their generation:
a rebuild may have put a damaged row right while the log stood still): positions have no gaps
and become visible in order (``projections.store``), so the same head is the same log, and the
same rows. Any other look
(the log moved, the read models behind, the look failed) reads as above; and rows kept at a
head older than one this reader has since seen are read again at once, without a look (while
the log moves, a look would only tell so).

The look is current because it begins after the read did: a write acknowledged before the read
began committed before the look's statement was sent, so its snapshot holds it. Reads that
arrive together share one look: a read arriving while a look is under way waits for the next
one, which starts when that one ends. So a run of reads costs one small statement for all of
them, where each cost a statement of its own, and the event loop's time per read (the
bottleneck of reads: one core) is mostly the HTTP's.

SQLite has no async driver here: its reads stay on the executor (``projections.readmodels``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import OperationalError as StoreOperationalError
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from ledger.errors import Contention, NotReady
from ledger.settings import StoreSettings
from projections.leadership import GENERATION_TABLE
from projections.paging import Query
from projections.pgpool import TRY_WAIT_S, StoreOutage, outage_of
from projections.wakeup import NUDGE

APP_NAME = "ledger"
FIRST_PAUSE_S = 0.001
MAX_PAUSE_S = 0.02
CONNECT_TIMEOUT_S = 5
# Reads waiting for one of the pool's connections; past it (or CONNECT_TIMEOUT_S), 503 busy.
MAX_WAITING = 256
# Answers kept while the log stands still (see the module docstring): how many, and the most
# rows one may have (a few KiB each: a few MiB in all).
MAX_KEPT_ANSWERS = 4096
MAX_KEPT_ROWS = 64
# What a look at the log's head may fail with: the read that asked then reads in full, which
# says what is wrong in its own words.
_LOOK_FAILURES = (psycopg.Error, PoolTimeout, TooManyRequests)


@dataclass(frozen=True)
class _Kept:
    head: int  # the log's head the rows were read at (the read models had reached it)
    generation: int  # the read models' generation they were read from (a rebuild makes anew)
    rows: tuple[dict[str, Any], ...]


# A look: the log's head, the position every read model has reached, their generation.
Look = tuple[int, int, int]


class HeadLooks:
    """Looks at where the log and the read models stand, shared by the reads that wait for one
    at the same time. Each read gets a look that began after it asked: one arriving while a
    look is under way waits for the next, which begins as that one ends."""

    def __init__(self, look: Callable[[], Awaitable[Look]]) -> None:
        self._look = look
        self._next: asyncio.Future[Look] | None = None  # the look not yet begun
        self._looking: asyncio.Task[None] | None = None
        self.looks = 0

    async def after_now(self) -> Look:
        """(the log's head, the position every read model has reached, their generation),
        from a statement sent after this call began."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieved)
            if self._looking is None:
                self._looking = asyncio.get_running_loop().create_task(self._run())
        # Shielded: a read that gives up (its deadline) does not cancel the look for the others.
        return await asyncio.shield(self._next)

    async def _run(self) -> None:
        """Look while reads wait for a look: each turn answers those that asked before it."""
        try:
            while (waiting := self._next) is not None:
                self._next = None
                self.looks += 1
                try:
                    found = await self._look()
                except asyncio.CancelledError:
                    waiting.cancel()
                    raise
                except Exception as error:  # each read that waited reads in full instead
                    waiting.set_exception(error)
                else:
                    waiting.set_result(found)
        finally:
            self._looking = None
            if self._next is not None:  # cancelled between turns: nobody is left waiting
                self._next.cancel()
                self._next = None

    async def close(self) -> None:
        if self._looking is not None:
            self._looking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._looking


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Marks a look's failure as seen: the reads that waited for it read in full."""
    if not future.cancelled():
        future.exception()


class _WatchedPool(AsyncConnectionPool):
    """The reads' pool, its connection attempts told to the store's outage record, and a
    connection asked for while the store refuses them refused at once
    (``projections.pgpool.StoreOutage``)."""

    def __init__(self, outage: StoreOutage, **kwargs: Any) -> None:
        self.outage = outage
        super().__init__(**kwargs)

    async def _connect(self, timeout: float | None = None) -> Any:
        with self.outage.attempt():
            return await super()._connect(timeout)

    async def getconn(self, timeout: float | None = None) -> Any:
        if self.outage.admit(idle=bool(self._pool)):  # this caller's own try, bounded
            try:
                await (await self._connect(TRY_WAIT_S)).close()
            except Exception as error:
                raise self.outage.tried(error) from None
        return await super().getconn(timeout)


class CurrentReader:
    """The async pool and the one statement of a current read (see the module docstring)."""

    def __init__(
        self, settings: StoreSettings, trackers: Sequence[str], *, pool_size: int = 4
    ) -> None:
        assert settings.kind == "postgres" and trackers and 1 <= pool_size <= 64
        pg = settings.postgres
        self._pool = _WatchedPool(
            outage_of(pg["POSTGRES_HOST"], pg["POSTGRES_PORT"], pg["POSTGRES_DBNAME"]),
            kwargs={
                "dbname": pg["POSTGRES_DBNAME"],
                "host": pg["POSTGRES_HOST"],
                "port": pg["POSTGRES_PORT"],
                "user": pg["POSTGRES_USER"],
                "password": pg["POSTGRES_PASSWORD"],
                "connect_timeout": CONNECT_TIMEOUT_S,
                "autocommit": True,
                "row_factory": dict_row,
            },
            min_size=1,
            max_size=pool_size,
            max_waiting=MAX_WAITING,
            timeout=CONNECT_TIMEOUT_S,
            open=False,
            name="current-reads",
        )
        # Table names from the projections' own classes, never from input.
        reached = ", ".join(
            f"COALESCE((SELECT MAX(notification_id) FROM {table}"  # noqa: S608
            f" WHERE application_name = '{APP_NAME}'), 0)"
            for table in trackers
        )
        head = "COALESCE((SELECT MAX(notification_id) FROM ledger_events), 0)"
        # A look that finds the read models behind asks the keeper for them, in the same
        # statement (``projections.wakeup``): a keeper pacing its batches applies at once.
        # The generation: the oid of the table a rebuild's swap puts anew in its place, so rows
        # kept from the read models before a rebuild (which may have put a row right) are not
        # answered after it, though the log stood still.
        generation = f"COALESCE(to_regclass('{GENERATION_TABLE}')::oid::bigint, 0)"
        self._head = (
            f"SELECT head_, reached_, generation_,"  # noqa: S608
            f" CASE WHEN reached_ < head_ THEN {NUDGE} END AS nudged_"
            f" FROM (SELECT {head} AS head_, LEAST({reached}) AS reached_,"
            f" {generation} AS generation_) AS p"
        )
        self._kept: OrderedDict[Hashable, _Kept] = OrderedDict()
        self.heads = HeadLooks(self._look)
        self.kept_answers = 0  # reads answered from kept rows, since the reader was made
        self._seen_head = 0  # the latest head a look or a read saw

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)

    async def close(self) -> None:
        await self.heads.close()
        await self._pool.close()

    def pool_stats(self) -> dict[str, int]:
        """The async pool's figures (``psycopg_pool``'s ``get_stats``)."""
        return self._pool.get_stats()

    @property
    def kept(self) -> int:
        """How many answers are kept."""
        return len(self._kept)

    async def _look(self) -> Look:
        async with self._pool.connection() as connection:
            row = (await _rows(connection, self._head, {}))[0]
        return row["head_"], row["reached_"], row["generation_"]

    def statement(self, sql: str) -> str:
        """``sql`` with the log's head and the read models' position, in one snapshot: one row
        with ``found_`` NULL when ``sql`` finds none."""
        return (
            f"SELECT h.head_, h.reached_, h.generation_, q.* FROM ({self._head}) h"  # noqa: S608
            f" LEFT JOIN LATERAL (SELECT 1 AS found_, x.* FROM ({sql}) x) q ON true"
        )

    async def fetch(self, query: Query, *, timeout_s: float) -> Any:
        """``query``'s answer once the read models reflect every write acknowledged before
        now; ``NotReady`` when they have not within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        key = _key(query)
        kept = None if key is None else self._kept.get(key)
        if kept is not None and kept.head < self._seen_head:
            # The log has moved since these rows were read (a look or a read saw it later):
            # while it moves, a look would only tell so, a round trip late.
            del self._kept[key]
            kept = None
        # The log's head as a statement begun after this read saw it: every write acknowledged
        # before the read began is at or before it, so the read models need reach no further
        # (a write landing meanwhile need not be waited for).
        target: int | None = None
        if kept is not None:
            try:
                # Bounded: a look waits behind a lock on a read model's table (a rebuild's swap
                # holds them all while it applies its last events) for as long as it is held.
                async with asyncio.timeout_at(deadline):
                    head, reached, generation = await self.heads.after_now()
            except TimeoutError:
                raise NotReady(_LATE) from None
            except _LOOK_FAILURES:
                head = reached = generation = -1  # read in full below, which says what is wrong
            self._seen_head = max(self._seen_head, head)
            # Other reads ran while this one waited: they may have dropped or replaced it.
            if head == kept.head and reached >= head and generation == kept.generation:
                if self._kept.get(key) is kept:
                    self._kept.move_to_end(key)
                self.kept_answers += 1
                return query.shape([dict(row) for row in kept.rows])
            if self._kept.get(key) is kept:
                del self._kept[key]
            if head >= 0:
                target = head
        statement = self.statement(query.sql)
        pause_s = FIRST_PAUSE_S
        while True:
            try:
                # Bounded as the look is: the statement is cancelled at the deadline.
                async with asyncio.timeout_at(deadline), self._pool.connection() as connection:
                    rows = await _rows(connection, statement, query.params)
            except TimeoutError:
                raise NotReady(_LATE) from None
            except TooManyRequests:
                raise Contention("too many reads wait for the store; try again shortly") from None
            except PoolTimeout as error:
                raise StoreOperationalError(f"no connection to the store: {error}") from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                # A connection the server dropped (a restart, a terminated session): the pool
                # replaces it; asked again while the bound allows.
                if loop.time() + pause_s > deadline:
                    raise StoreOperationalError(f"the store did not answer: {error}") from None
                await asyncio.sleep(pause_s)
                pause_s = min(pause_s * 2, MAX_PAUSE_S)
                continue
            head, reached = rows[0]["head_"], rows[0]["reached_"]
            self._seen_head = max(self._seen_head, head)
            if target is None:
                target = head
            if reached >= target:
                found = [
                    {k: v for k, v in row.items() if k not in _MARKERS}
                    for row in rows
                    if row["found_"] is not None
                ]
                # Kept only when they are the log's rows at its head (no event after them yet).
                if key is not None and reached >= head and len(found) <= MAX_KEPT_ROWS:
                    self._keep(key, _Kept(head, rows[0]["generation_"],
                                          tuple(dict(row) for row in found)))
                return query.shape(found)
            if loop.time() + pause_s > deadline:
                raise NotReady(f"the read models did not reach position {target} in time")
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, MAX_PAUSE_S)

    def _keep(self, key: Hashable, kept: _Kept) -> None:
        self._kept[key] = kept
        self._kept.move_to_end(key)
        while len(self._kept) > MAX_KEPT_ANSWERS:  # bounded: one over at most
            self._kept.popitem(last=False)


def _key(query: Query) -> Hashable | None:
    """What a keepable query's kept rows are found by: its statement and parameters (None when
    it may not be kept)."""
    if not query.keepable:
        return None
    key = (query.sql, tuple(sorted(query.params.items())))
    try:
        hash(key)
    except TypeError:
        return None
    return key


_MARKERS = frozenset({"head_", "reached_", "generation_", "found_"})
_LATE = "the read models did not answer in time (a table of theirs is held)"


async def _rows(
    connection: AsyncConnection[Any], statement: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    cursor = await connection.execute(statement, params)
    return await cursor.fetchall()
