"""Which process keeps the read models: exactly one at a time, per store.

PostgreSQL: a session-level advisory lock on a connection of its own; when the process dies
the server ends the session and the lock is free for the next process within seconds. SQLite:
an exclusive ``flock`` on a file beside the database, released by the kernel when the process
dies. ``ledger rebuild`` takes the same lock when it is free (no ``ledger serve`` keeps the read
models) and keeps them itself meanwhile; when a keeper holds it, the rebuild builds beside the live
read models and swaps them in under their tables' locks (``projections.replay``). Two rebuilds never
run at once: each holds ``rebuilding`` (a lock of its own, the same way).

``SwapFence``: the keeper remembers rows between batches (``projections.views.Rows``), and a
swap replaces them without moving the tracking records its batches compare. So a swap holds the
fence alone and makes a new generation of the read models, and a keeper never commits a batch
built on rows of another generation than the one it learned:
- PostgreSQL: the fence is an advisory lock, taken alone inside the swap's transaction, and the
  generation the tracking table's oid (the swap puts a new table in its place). A keeper's batch
  takes the fence, shared, inside its own write transaction, before its first write, and reads
  the generation there, in the same round trip as its writes (``SwapFence.guard``). A
  generation not the one the keeper learned rolls the batch back (``GenerationMoved``): the
  keeper forgets what it remembers and applies the batch again, on the new read models.
- SQLite: ``flock`` on a file beside the database, which holds the generation: held, shared,
  around the keeper's whole batch (read, apply, commit); a keeper that finds a new generation
  there forgets what it remembers before it reads a row.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from ledger.settings import StoreSettings
from projections.pgpool import connect

# Any constant every process agrees on.
LEADER_LOCK_KEY = 0x1ED6E5
REBUILD_LOCK_KEY = 0x1ED6E6
SWAP_FENCE_KEY = 0x1ED6E7
# The table whose oid is the read models' generation on PostgreSQL (any the swap replaces); the
# first the swap locks (``projections.replay``), so a read's snapshot locks it before it is taken
# (``projections.views.one_snapshot``): it holds it before the swap, which waits for the read,
# or waits until the swap has committed and takes its snapshot after.
GENERATION_TABLE = "accounts_tracking"


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
            self._connection = connect(self.settings)
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


class GenerationMoved(Exception):
    """A rebuild swapped fresh read models in since the keeper learned their generation: its
    batch was rolled back, nothing of it written."""


class SwapFence:
    """A keeper's side of the fence between its batches and a rebuild's swap (see the module
    docstring); one per keeper, used by one thread."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self._fd: int | None = None
        self._generation: object = None  # PostgreSQL: as the keeper last learned it
        self._learned = False

    @contextmanager
    def batch(self) -> Iterator[object]:
        """Around a batch: gives the read models' generation the batch is to be built on.
        SQLite: the fence, shared, held until the batch is committed (no swap meanwhile).
        PostgreSQL: the generation last learned (asked once); ``guard`` checks it as the batch
        commits."""
        if self.settings.kind == "sqlite":
            if self._fd is None:
                self._fd = _open_fence(self.settings)
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            try:
                yield os.pread(self._fd, 32, 0)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            return
        if not self._learned:
            with connect(self.settings) as connection:
                row = connection.execute(
                    "SELECT to_regclass(%s)::oid", (GENERATION_TABLE,)
                ).fetchone()
            self._generation, self._learned = None if row is None else row[0], True
        yield self._generation

    @property
    def guard(self) -> Callable[[Any], Callable[[], None]] | None:
        """PostgreSQL: what a batch's write transaction runs first (``write_batch``)."""
        return self._guard if self.settings.kind == "postgres" else None

    def _guard(self, connection: Any) -> Callable[[], None]:
        """In a batch's write transaction, before its first write: the fence, shared, until the
        transaction ends (a swap waits for the commit), then the generation, read once the
        fence is held. The check raises ``GenerationMoved`` (the batch rolls back) when it is
        not the one the batch was built on, and learns the new one."""
        expected = self._generation
        connection.execute("SELECT pg_advisory_xact_lock_shared(%s)", (SWAP_FENCE_KEY,))
        generation = connection.cursor(row_factory=tuple_row)
        generation.execute("SELECT to_regclass(%s)::oid", (GENERATION_TABLE,))

        def check() -> None:
            row = generation.fetchone()
            found = None if row is None else row[0]
            if found != expected:
                self._generation = found
                raise GenerationMoved(f"the read models' generation moved from {expected} to "
                                      f"{found}: a rebuild swapped fresh read models in")

        return check

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None


def fence_swap_postgres(connection: psycopg.Connection[Any]) -> None:
    """In a swap's transaction, before it locks any table: the fence alone, until it commits
    (its ``lock_timeout`` bounds the wait for a keeper's batch to end)."""
    connection.execute("SELECT pg_advisory_xact_lock(%s)", (SWAP_FENCE_KEY,))


@contextmanager
def fenced_swap_sqlite(settings: StoreSettings, *, deadline: float) -> Iterator[None]:
    """Hold the fence alone around a swap (SQLite), with a new generation; waits for a keeper's
    batch to end until ``deadline`` (``time.monotonic``), else ``LeadershipBusy``."""
    fd = _open_fence(settings)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LeadershipBusy("a keeper's batch held the read models: the rebuild "
                                         "could not swap its fresh read models in; try again"
                                         ) from None
                time.sleep(0.01)
        generation = int(os.pread(fd, 32, 0) or b"0") + 1
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(generation).encode(), 0)
        yield
    finally:
        os.close(fd)  # lets go of the fence


def _open_fence(settings: StoreSettings) -> int:
    assert settings.sqlite_path is not None
    path: Path = settings.sqlite_path.with_name(settings.sqlite_path.name + ".swap-fence")
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
