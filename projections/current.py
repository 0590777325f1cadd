"""Current reads in one round trip, on psycopg's async pool, in the event loop (PostgreSQL).

A read must reflect every write acknowledged before it began, whichever process served the
write (API.md). Here one statement learns the log's head, the position every read model has
reached, and the rows asked for, all in one snapshot: when the read models have reached the
head, the rows are current and are the answer; otherwise the statement is asked again, with a
short growing pause, until they have or the bound has passed (``NotReady``, as the executor's
reads answer). No thread of the executor is taken, and no other statement is sent.

SQLite has no async driver here: its reads stay on the executor (``projections.readmodels``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import OperationalError as StoreOperationalError
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from ledger.errors import Contention, NotReady
from ledger.settings import StoreSettings
from projections.paging import Query

APP_NAME = "ledger"
FIRST_PAUSE_S = 0.001
MAX_PAUSE_S = 0.02
CONNECT_TIMEOUT_S = 5
# Reads waiting for one of the pool's connections; past it (or CONNECT_TIMEOUT_S), 503 busy.
MAX_WAITING = 256


class CurrentReader:
    """The async pool and the one statement of a current read (see the module docstring)."""

    def __init__(
        self, settings: StoreSettings, trackers: Sequence[str], *, pool_size: int = 4
    ) -> None:
        assert settings.kind == "postgres" and trackers and 1 <= pool_size <= 64
        pg = settings.postgres
        self._pool = AsyncConnectionPool(
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
        self._head = f"SELECT {head} AS head_, LEAST({reached}) AS reached_"

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)

    async def close(self) -> None:
        await self._pool.close()

    def statement(self, sql: str) -> str:
        """``sql`` with the log's head and the read models' position, in one snapshot: one row
        with ``found_`` NULL when ``sql`` finds none."""
        return (
            f"SELECT h.head_, h.reached_, q.* FROM ({self._head}) h"  # noqa: S608
            f" LEFT JOIN LATERAL (SELECT 1 AS found_, x.* FROM ({sql}) x) q ON true"
        )

    async def fetch(self, query: Query, *, timeout_s: float) -> Any:
        """``query``'s answer once the read models reflect every write acknowledged before
        now; ``NotReady`` when they have not within ``timeout_s``."""
        statement = self.statement(query.sql)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pause_s = FIRST_PAUSE_S
        while True:
            try:
                async with self._pool.connection() as connection:
                    rows = await _rows(connection, statement, query.params)
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
            if reached >= head:
                found = [
                    {k: v for k, v in row.items() if k not in _MARKERS}
                    for row in rows
                    if row["found_"] is not None
                ]
                return query.shape(found)
            if loop.time() + pause_s > deadline:
                raise NotReady(f"the read models did not reach position {head} in time")
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, MAX_PAUSE_S)


_MARKERS = frozenset({"head_", "reached_", "found_"})


async def _rows(
    connection: AsyncConnection[Any], statement: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    cursor = await connection.execute(statement, params)
    return await cursor.fetchall()
