"""When the keeper looks for new events: as soon as it is told some may have been written, and
at the latest after a bounded pause, so a lost notice never stalls it.

PostgreSQL: eventsourcing NOTIFYs the events table's channel in every transaction that inserts
events, whichever process writes; ``PostgresDoorbell`` LISTENs on a connection of its own.
SQLite has no such notice: a process's own writes ``ring`` the bell, and the pause is short.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from ledger.settings import StoreSettings

CONNECT_TIMEOUT_S = 5


class Doorbell:
    """Rung by this process's writers (and ``stop``); waited on by the keeper."""

    def __init__(self) -> None:
        self._rung = threading.Event()

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


class PostgresDoorbell(Doorbell):
    """Also rung by a NOTIFY on the events' channel, from any process, while ``listening``
    (on a connection of its own). Its connection's failures raise from ``wait``."""

    def __init__(self, settings: StoreSettings) -> None:
        super().__init__()
        self.settings = settings
        self._connection: psycopg.Connection[Any] | None = None

    @contextmanager
    def listening(self, channel: str) -> Iterator[None]:
        pg = self.settings.postgres
        with psycopg.connect(
            dbname=pg["POSTGRES_DBNAME"],
            host=pg["POSTGRES_HOST"],
            port=pg["POSTGRES_PORT"],
            user=pg["POSTGRES_USER"],
            password=pg["POSTGRES_PASSWORD"],
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
        ) as connection:
            # Listening before the keeper first reads: whatever commits after that read rings.
            connection.execute(SQL("LISTEN {}").format(Identifier(channel)))
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
            for _ in connection.notifies(timeout=timeout_s, stop_after=1):
                pass
        self._rung.clear()
