"""When the keeper looks for new events: as soon as it is told some may have been written, and
at the latest after a bounded pause, so a lost notice never stalls it.

PostgreSQL: eventsourcing NOTIFYs the events table's channel in every transaction that inserts
events, whichever process writes; ``PostgresDoorbell`` LISTENs on a connection of its own.
SQLite has no such notice: a process's own writes ``ring`` the bell, and the pause is short.

Paced, on PostgreSQL: after a batch, a keeper woken by new events ``hold``s until its pace has
passed since that batch began, so a steady stream of writes is applied a few events a batch, not
one (a batch costs about a millisecond of the keeper's work whatever it holds, and each commit
is one more flush of the log beside the writers'). A read that finds the read models behind
asks for them (``NUDGE``, a NOTIFY on ``WANTED_CHANNEL`` in the statement that looked, so it
costs no round trip): a keeper holding then applies at once, and holds no more until no reader
has asked for ``READERS_GONE_S`` (reads that keep following writes, as the model tests' do, are
best served by a batch begun at the write's notice). So pacing delays no read by more than a
look; it only lets the read models trail the log by at most the pace while no one reads them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from ledger.settings import StoreSettings
from projections.pgpool import connect

# The channel a reader NOTIFYs when it finds the read models behind the log (one per database:
# a keeper of another schema woken by it only looks).
WANTED_CHANNEL = "ledger_read_models_wanted"
NUDGE = f"pg_notify('{WANTED_CHANNEL}', '')"
# After a reader asked, how long the keeper applies at every notice again rather than hold.
READERS_GONE_S = 1.0


class Doorbell:
    """Rung by this process's writers (and ``stop``); waited on by the keeper."""

    def __init__(self) -> None:
        self._rung = threading.Event()
        self.asked_at = float("-inf")  # when a reader last asked for the read models

    def ring(self) -> None:
        self._rung.set()

    @contextmanager
    def listening(self, channel: str) -> Iterator[None]:
        """While the keeper leads: SQLite has no notices to listen to."""
        yield

    def wait(self, timeout_s: float) -> None:
        """Return when rung (since the last wait) or after ``timeout_s``."""
        self._rung.wait(timeout_s)
        self._rung.clear()

    def hold(self, since: float, until: float) -> None:
        """Before the next batch: until ``until`` (``time.monotonic``), unless a reader has
        asked for the read models since ``since`` or the bell rings. Only PostgreSQL's readers
        can ask."""


class PostgresDoorbell(Doorbell):
    """Also rung by a NOTIFY on the events' channel, from any process, while ``listening``
    (on a connection of its own). Its connection's failures raise from ``wait``."""

    def __init__(self, settings: StoreSettings) -> None:
        super().__init__()
        self.settings = settings
        self._connection: psycopg.Connection[Any] | None = None

    @contextmanager
    def listening(self, channel: str) -> Iterator[None]:
        with connect(self.settings) as connection:
            # Listening before the keeper first reads: whatever commits after that read rings.
            connection.execute(SQL("LISTEN {}").format(Identifier(channel)))
            connection.execute(SQL("LISTEN {}").format(Identifier(WANTED_CHANNEL)))
            self._connection = connection
            try:
                yield
            finally:
                self._connection = None

    def wait(self, timeout_s: float) -> None:
        connection = self._connection
        assert connection is not None, "waiting while not listening"
        if not self._rung.is_set():
            # Every notice already received comes back at once; one is enough to wake.
            self._heard(connection.notifies(timeout=timeout_s, stop_after=1))
        self._rung.clear()

    def hold(self, since: float, until: float) -> None:
        connection = self._connection
        assert connection is not None, "holding while not listening"
        while self.asked_at < since and not self._rung.is_set():
            left_s = until - time.monotonic()
            if left_s <= 0:
                return
            self._heard(connection.notifies(timeout=left_s, stop_after=1))

    def _heard(self, notices: Iterator[psycopg.Notify]) -> None:
        for notice in notices:
            if notice.channel == WANTED_CHANNEL:
                self.asked_at = time.monotonic()
