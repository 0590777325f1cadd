"""Which process keeps the read models: exactly one at a time, per store.

PostgreSQL: a session-level advisory lock on a connection of its own; when the process dies
the server ends the session and the lock is free for the next process within seconds. SQLite:
an exclusive ``flock`` on a file beside the database, released by the kernel when the process
dies. ``ledger rebuild`` takes the same lock when it is free (no ``ledger serve`` keeps the read
models) and keeps them itself meanwhile; when a keeper holds it, the rebuild builds beside the live
read models and swaps them in under their tables' locks (``projections.replay``). Two rebuilds never
run at once: each holds ``rebuilding`` (a lock of its own, the same way).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from ledger.settings import StoreSettings

# Any constant every process agrees on.
LEADER_LOCK_KEY = 0x1ED6E5
REBUILD_LOCK_KEY = 0x1ED6E6


class LeadershipBusy(RuntimeError):
    """Another process keeps the read models (a running ``ledger serve``)."""


class LeaderLock:
    def __init__(
        self, settings: StoreSettings, *, key: int = LEADER_LOCK_KEY, suffix: str = ".keeper"
    ) -> None:
        self.settings = settings
        self.key = key
        self.suffix = suffix
        self._connection: psycopg.Connection[Any] | None = None
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self.settings.kind == "sqlite":
            return self._try_flock()
        if self._connection is None:
            pg = self.settings.postgres
            self._connection = psycopg.connect(
                dbname=pg["POSTGRES_DBNAME"],
                host=pg["POSTGRES_HOST"],
                port=pg["POSTGRES_PORT"],
                user=pg["POSTGRES_USER"],
                password=pg["POSTGRES_PASSWORD"],
                autocommit=True,
                connect_timeout=5,
            )
        row = self._connection.execute(
            "SELECT pg_try_advisory_lock(%s)", (self.key,)
        ).fetchone()
        return bool(row and row[0])

    def check(self) -> None:
        """Raises when the lock may have been lost (its connection is gone)."""
        if self._connection is not None:
            self._connection.execute("SELECT 1")

    def release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()  # ending the session frees the lock
            finally:
                self._connection = None
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            finally:
                self._fd = None

    def _try_flock(self) -> bool:
        assert self.settings.sqlite_path is not None
        path = self.settings.sqlite_path.with_name(self.settings.sqlite_path.name + self.suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True


@contextmanager
def leadership(settings: StoreSettings, *, timeout_s: float = 5.0) -> Iterator[LeaderLock]:
    """Hold the keeper's lock for a while (``ledger rebuild``), or raise LeadershipBusy."""
    lock = LeaderLock(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while not lock.try_acquire():
            if time.monotonic() >= deadline:
                raise LeadershipBusy(
                    "another process keeps the read models: stop `ledger serve` first"
                )
            time.sleep(0.2)
        yield lock
    finally:
        lock.release()


class RebuildBusy(LeadershipBusy):
    """Another ``ledger rebuild`` runs on the store."""


@contextmanager
def rebuilding(settings: StoreSettings, *, timeout_s: float = 5.0) -> Iterator[LeaderLock]:
    """Hold the rebuilds' lock (one ``ledger rebuild`` at a time), or raise RebuildBusy."""
    lock = LeaderLock(settings, key=REBUILD_LOCK_KEY, suffix=".rebuild-lock")
    deadline = time.monotonic() + timeout_s
    try:
        while not lock.try_acquire():
            if time.monotonic() >= deadline:
                raise RebuildBusy("another `ledger rebuild` runs on this store: wait for it")
            time.sleep(0.2)
        yield lock
    finally:
        lock.release()
