"""Writes on the event loop: a server on PostgreSQL records its commands from its event loop.

``writing_on_loop`` binds a ``ledger.pipeline.LoopCommitter`` to the application while the
server runs: the commands whose accounts this process holds are decided and committed on the
event loop, and every other command's commit goes to the same committer (see
``ledger.pipeline``). Its batches are recorded by a ``LoopRecorder``:

- on an async connection of its own, in the one statement of ``SealingPostgresRecorder.record_on``
  while this process knows the log's head from its own last commit (nearly always);
- otherwise (the head unknown or taken by another process, a key renewing an expired one, no
  connection) by the recorder's own ``insert_events`` on a thread of its own: under the
  writers' lock, with eventsourcing's retry of a lost connection. A thread of its own, not the
  request executor's: those threads may all be waiting for this very committer.

A statement whose connection fails or which takes longer than ``RECORD_TIMEOUT_S`` may or may
not have been committed (its acknowledgement lost): the connection is dropped, and on the
thread the store first finds out whether it holds the batch as it was sent
(``SealingPostgresRecorder.insert_events_in_doubt``). If it does, each of its commands is
answered as recorded, where its events stand; only if not is the batch recorded again. It is
never recorded again blindly: its own versions found taken would have its commands decided
again on a state that already holds them, and applied twice (a partial failure credit has no
natural key) or refused. A batch whose outcome the store cannot tell within its bounded
retries answers its commands ``CommitUnconfirmed`` (503), and nothing of it is decided or
recorded again. A dropped connection is made again on the next batch, no sooner than
``RECONNECT_AFTER_S`` after a failed attempt.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import IntegrityError, StoredEvent

from ledger.application import LedgerApplication
from ledger.idempotency import KeyWrite
from ledger.pipeline import LoopCommitter
from projections.store import SealingPostgresRecorder

CONNECT_TIMEOUT_S = 5  # libpq takes whole seconds
RECORD_TIMEOUT_S = 30.0
RECONNECT_AFTER_S = 1.0

log = logging.getLogger(__name__)


class LoopRecorder:
    """Records a batch of stored events and their keys; answers their positions (see the
    module docstring)."""

    def __init__(self, recorder: SealingPostgresRecorder, *,
                 record_timeout_s: float = RECORD_TIMEOUT_S) -> None:
        assert 0 < record_timeout_s <= 600
        self.recorder = recorder
        self.record_timeout_s = record_timeout_s
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._failed_at: float | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self.statements = 0  # batches recorded on the connection
        self.on_thread = 0  # batches recorded on the thread
        self.connection_failures = 0  # statements whose connection failed, connects that did

    async def __call__(self, stored: list[StoredEvent], keys: list[KeyWrite]) -> Sequence[int]:
        connection = await self._connected()
        in_doubt = False
        if connection is not None:
            try:
                ids = await asyncio.wait_for(self.recorder.record_on(connection, stored, keys),
                                             self.record_timeout_s)
            except IntegrityError:
                raise
            except (psycopg.Error, TimeoutError) as error:
                # Sent, perhaps committed: the thread finds out before it records anything.
                self.connection_failures += 1
                log.warning("the writer's connection failed (%s: %s); the batch is settled "
                            "on its thread", type(error).__name__, error)
                await self._drop()
                ids, in_doubt = None, True
            if ids is not None:
                self.statements += 1
                return ids
        self.on_thread += 1
        record = functools.partial(self._record_on_thread, stored, keys, in_doubt=in_doubt)
        return await asyncio.get_running_loop().run_in_executor(self._thread, record)

    def _record_on_thread(self, stored: list[StoredEvent], keys: list[KeyWrite], *,
                          in_doubt: bool) -> Sequence[int]:
        if in_doubt:
            return self.recorder.insert_events_in_doubt(stored, keys)
        ids = self.recorder.insert_events(stored, keys=keys)
        assert ids is not None, "the recorder answers the positions it gave"
        return ids

    async def _connected(self) -> psycopg.AsyncConnection[Any] | None:
        connection = self._connection
        if connection is not None and not connection.closed and not connection.broken:
            return connection
        if connection is not None:
            await self._drop()
        if self._failed_at is not None and time.monotonic() - self._failed_at < RECONNECT_AFTER_S:
            return None
        kwargs = self.recorder.datastore.pool.kwargs  # eventsourcing's: dbname, host, …
        assert isinstance(kwargs, dict), "the pool connects with keyword arguments"
        params = {name: value for name, value in kwargs.items() if name != "row_factory"}
        try:
            self._connection = await psycopg.AsyncConnection.connect(
                autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, **params)
        except psycopg.Error as error:
            self.connection_failures += 1
            self._failed_at = time.monotonic()
            log.warning("the writer could not connect (%s); batches are recorded on its thread",
                        type(error).__name__)
            return None
        self._failed_at = None
        return self._connection

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._failed_at = time.monotonic()
        if connection is not None:
            try:
                await connection.close()
            except psycopg.Error:  # already gone
                pass

    async def close(self) -> None:
        await self._drop()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.shutdown)


@dataclass(frozen=True)
class LoopWriter:
    """The committer on the event loop and the recorder of its batches."""

    committer: LoopCommitter
    recorder: LoopRecorder


@asynccontextmanager
async def writing_on_loop(app: LedgerApplication) -> AsyncIterator[LoopWriter | None]:
    """While open, ``app``'s commands are committed from the running event loop (PostgreSQL;
    on SQLite, whose writes are one at a time anyway, nothing changes: None)."""
    if not isinstance(app.recorder, SealingPostgresRecorder):
        yield None
        return
    recorder = LoopRecorder(app.recorder)
    committer = LoopCommitter(app, asyncio.get_running_loop(), recorder)
    committer.bind(app.committer)
    try:
        yield LoopWriter(committer, recorder)
    finally:
        await committer.unbind(app.committer)
        await recorder.close()
