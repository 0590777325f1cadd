"""Replaying the log into read models: ``ledger rebuild`` and the read-model check of
``ledger verify``.

A replay drives the very projection code the keeper runs (``projections.batches``), a batch of
events per transaction (each batch's rows and its tracking record together), so a rebuilt read
model is row for row what the live one holds at the same position. It reads the next batch and
(on PostgreSQL) commits the last one while it decodes and projects this one, each in a thread
of its own.

Like the keeper, a replay applies only events whose seals hold (``projections.chain.SealWatch``):
at the first event written, changed or moved behind the service's back it stops, having applied
the events before it, and raises ``HistoryDamaged`` naming its position. So neither a rebuild
nor an export ever turns a row inserted by SQL into money.

``rebuild`` builds fresh read models beside the live ones, catches them up and swaps them in with
their tracking records in one transaction, while servers go on serving (see ``rebuild``).
"""

from __future__ import annotations

import queue
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import InfrastructureFactory, Notification
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

from ledger.application import LedgerApplication
from ledger.errors import HistoryDamaged
from ledger.settings import StoreSettings
from projections.batches import BatchApplier, Projections
from projections.chain import SealWatch
from projections.leadership import (
    GENERATION_TABLE,
    LeaderLock,
    LeadershipBusy,
    fence_swap_postgres,
    fenced_swap_sqlite,
    rebuilding,
)
from projections.pgpool import connect
from projections.readmodels import (
    APP_NAME,
    PROJECTIONS,
    close_views,
    open_view,
    open_views,
    prepare_read_models,
)
from projections.store import read_log, schema_lock
from projections.views import ReadModelProjection, ReadModelView, view_class

REPLAY_BATCH = 2000
READ_AHEAD = 2  # batches read and waiting
_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)")


def tables_of(projection: type[ReadModelProjection]) -> list[str]:
    return [m.group(1) for sql in projection.ddl for m in [_TABLE.match(sql)] if m]


def replay(
    app: LedgerApplication,
    projections: Projections,
    *,
    upto: int | None = None,
    on_batch: Callable[[int], None] = lambda n: None,
) -> int:
    """Apply every event after each view's tracked position (up to ``upto``) to the views;
    answers the number of events read. Batches are read ahead and (on PostgreSQL) committed
    behind, each in a thread of its own, while this one decodes and projects."""
    applier = BatchApplier(app.mapper, projections, key=app.recorder.chain_key)  # type: ignore[attr-defined]
    read = 0
    with applier.pipelined() as apply:
        for notifications in read_ahead(app, applier.position, upto=upto):
            apply(notifications)
            read += len(notifications)
            on_batch(len(notifications))
    return read


def read_ahead(
    app: LedgerApplication, after: int, *, upto: int | None = None
) -> Iterator[Sequence[Notification]]:
    """The log after a position (up to ``upto``) in batches, the next one read while this one
    is used (at most ``READ_AHEAD`` waiting); each event's seal checked as it is read. At the
    first whose seal does not hold, the events before it are given, then ``HistoryDamaged``
    raised."""
    batches: queue.Queue[Sequence[Notification] | BaseException | None] = queue.Queue(READ_AHEAD)
    stopping = threading.Event()
    watch = SealWatch(app.recorder, app.recorder.chain_key)  # type: ignore[attr-defined]

    def read() -> None:
        start = after
        try:
            while not stopping.is_set():
                batch = read_log(app.recorder, start, REPLAY_BATCH, upto=upto)
                sealed = watch.admit(start, list(batch))
                if sealed:
                    _put(batches, sealed, stopping)
                if watch.damage is not None:
                    raise HistoryDamaged(
                        f"the history is damaged at {watch.damage.describe()}; nothing from "
                        "there on is replayed until an operator restores the store "
                        "(`ledger verify` names every damaged position)",
                        position=watch.damage.position,
                    )
                if len(batch) < REPLAY_BATCH:
                    break
                start = batch[-1].id
            _put(batches, None, stopping)
        except BaseException as failure:  # raised in the reader's thread, below
            _put(batches, failure, stopping)

    reader = threading.Thread(target=read, name="replay-reads", daemon=True)
    reader.start()
    try:
        while (batch := batches.get()) is not None:
            if isinstance(batch, BaseException):
                raise batch
            yield batch
    finally:
        stopping.set()
        reader.join()


def _put(batches: queue.Queue[Any], item: Any, stopping: threading.Event) -> None:
    while not stopping.is_set():
        try:
            batches.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


@contextmanager
def scratch_views(
    projections: tuple[type[ReadModelProjection], ...] = PROJECTIONS,
) -> Iterator[list[tuple[type[ReadModelProjection], ReadModelView]]]:
    """Fresh, empty read models in a temporary SQLite file each (dropped after)."""
    with tempfile.TemporaryDirectory(prefix="ledger-replay-") as folder:
        settings = StoreSettings.from_url(f"sqlite:///{Path(folder) / 'replay.db'}")
        views = [(p, open_view(settings, p)) for p in projections]
        try:
            yield views
        finally:
            for _, view in views:
                view.datastore.close()


def differences(
    live: dict[str, list[tuple[Any, ...]]], fresh: dict[str, list[tuple[Any, ...]]]
) -> list[str]:
    """Where two dumps of a read model differ: the table and the first differing row."""
    found = []
    for table in live:
        a, b = live[table], fresh.get(table, [])
        if a != b:
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            found.append(
                f"{table}: {len(a)} live rows, {len(b)} replayed; first difference at row "
                f"{first}: live {a[first] if first < len(a) else None!r}, "
                f"replayed {b[first] if first < len(b) else None!r}"
            )
    return found


@dataclass(frozen=True)
class RebuildReport:
    events: int
    seconds: float
    # how long the swap held the live read models' tables (reads waited at most this long)
    swap_seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


# -- rebuilding beside the live read models -----------------------------------------------------

# PostgreSQL: the schema the fresh read models are built in, tables named as the live ones.
SHADOW_SCHEMA = "ledger_rebuild"
# SQLite: each fresh read model's file, beside the live one's (``ledger.accounts.rebuild.db``).
SHADOW_FILE = "rebuild"
# The swap begins once a round of catching up read fewer events than this (or after this many
# rounds, when writes come as fast as a round reads them): what is left to apply under the live
# tables' locks is then short.
SWAP_GAP = 100
MAX_ROUNDS = 10
# Each try of the swap waits at most this long for the live tables' locks, then lets go (so a
# reader or the keeper it blocks goes on) and tries again, until the rebuild's bound.
SWAP_LOCK_TIMEOUT_MS = 500


def rebuild(
    settings: StoreSettings,
    app: LedgerApplication,
    *,
    on_batch: Callable[[int], None] = lambda n: None,
    lock_timeout_s: float = 5.0,
) -> RebuildReport:
    """Replay the whole log into fresh read models built beside the live ones, catch them up,
    and swap them in, with their tracking records, in one transaction (on SQLite one per read
    model, as the keeper commits); the old ones are dropped. Reads go on all along: they see the
    old complete set or the new one, and the new one tracks at least the position the old one
    had, so reads stay current.

    When no ``ledger serve`` keeps the read models, the rebuild keeps them meanwhile (their
    lock) and builds up to the log's head. While a keeper keeps them, the fresh ones follow the
    live ones' position without the keeper's lock, and the swap takes the live tables' locks
    briefly (the keeper waits for them like the readers) to apply the last events and swap.

    ``lock_timeout_s`` bounds the wait for another rebuild to end, and the swap's tries for the
    live tables' locks (``LeadershipBusy`` past it)."""
    started = time.perf_counter()
    with rebuilding(settings, timeout_s=lock_timeout_s):
        prepare_read_models(settings)  # the live set exists, so it can be swapped out
        keeper = LeaderLock(settings)
        leading = keeper.try_acquire()
        shadow: _Shadow = (
            _PostgresShadow(settings) if settings.kind == "postgres" else _SQLiteShadow(settings)
        )
        try:
            views = shadow.create()
            live = open_views(settings, pool_size=1)
            try:
                projections = [(p, views[p.name]) for p in PROJECTIONS]

                def target() -> int:
                    if leading:  # no keeper: up to the log's head
                        return app.recorder.max_notification_id() or 0
                    return min(v.max_tracking_id(APP_NAME) or 0 for v in live.values())

                events = 0
                for _ in range(MAX_ROUNDS):  # catch up, without any lock, until little is left
                    read = replay(app, projections, upto=target(), on_batch=on_batch)
                    events += read
                    if read < SWAP_GAP:
                        break
                deadline = time.monotonic() + lock_timeout_s
                with schema_lock(settings):  # no process creates read-model tables meanwhile
                    read, swapped = shadow.swap(app, projections, leading=leading,
                                                deadline=deadline, on_batch=on_batch)
                events += read
            finally:
                close_views(live)
                close_views(views)
        finally:
            shadow.remove()
            keeper.release()
    return RebuildReport(events, time.perf_counter() - started, swapped)


def catch_up_to(
    app: LedgerApplication,
    projections: Sequence[tuple[type[ReadModelProjection], ReadModelView]],
    positions: dict[str, int],
    on_batch: Callable[[int], None],
) -> int:
    """Replay into each view up to its position in ``positions``; the events read."""
    read = 0
    for upto in sorted(set(positions.values())):
        group = [(p, v) for p, v in projections if positions[p.name] == upto]
        read += replay(app, group, upto=upto, on_batch=on_batch)
    return read


def _swap_targets(
    app: LedgerApplication, live: dict[str, int], fresh: dict[str, int], *, leading: bool
) -> dict[str, int]:
    """Where each fresh read model must stand when swapped in: the live one's position (the
    keeper goes on from there), or the log's head when no keeper runs."""
    if leading:
        head = app.recorder.max_notification_id() or 0
        return {name: max(head, at) for name, at in live.items()}
    ahead = [name for name, at in fresh.items() if at > live[name]]
    if ahead:  # never: the fresh ones follow the live ones' lowest position
        raise RuntimeError(f"fresh read models {ahead} are ahead of the live ones")
    return dict(live)


class _Shadow:
    """Fresh read models beside the live ones, and their swap."""

    def create(self) -> dict[str, ReadModelView]:
        raise NotImplementedError

    def swap(
        self,
        app: LedgerApplication,
        projections: Sequence[tuple[type[ReadModelProjection], ReadModelView]],
        *,
        leading: bool,
        deadline: float,
        on_batch: Callable[[int], None],
    ) -> tuple[int, float]:
        """Apply the last events and swap the fresh read models in; answers the events read
        and the longest the live tables were held (from asking for their locks to the commit)."""
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


class _PostgresShadow(_Shadow):
    """A schema of their own (``SHADOW_SCHEMA``): the tables, their indexes and tracking tables
    named as the live ones. The swap, in one transaction: lock the live tables (tracking tables
    first, then the rows', the order readers and the keeper take them), apply the last events to
    the fresh ones, drop the live tables and move the fresh ones into the live schema (``ALTER
    TABLE … SET SCHEMA`` moves their indexes along). A statement waiting on a live table's lock
    looks its name up again once the swap commits, and finds the new table."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings

    def _connect(self) -> psycopg.Connection[Any]:
        return connect(self.settings, autocommit=False)

    def create(self) -> dict[str, ReadModelView]:
        with self._connect() as connection:  # a failed rebuild's leftovers go first
            connection.execute(f"DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE")
            connection.execute(f"CREATE SCHEMA {SHADOW_SCHEMA}")
        env = self.settings.env_for(None)
        env.update(POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="1", CREATE_TABLE="n",
                   POSTGRES_SCHEMA=SHADOW_SCHEMA)
        factory: Any = InfrastructureFactory[ReadModelView].construct(
            Environment("read_models", env)
        )
        datastore = factory.datastore
        # The read models' own SQL names its tables bare: found in the shadow schema.
        datastore.pool.kwargs["options"] = f"-c search_path={SHADOW_SCHEMA}"
        views = {
            p.name: view_class(self.settings.kind, p.name, p.ddl)(  # type: ignore[call-arg]
                datastore=datastore, tracking_table_name=f"{p.name}_tracking"
            )
            for p in PROJECTIONS
        }
        for view in views.values():
            view.create_table()  # type: ignore[attr-defined]
        return views

    def swap(
        self,
        app: LedgerApplication,
        projections: Sequence[tuple[type[ReadModelProjection], ReadModelView]],
        *,
        leading: bool,
        deadline: float,
        on_batch: Callable[[int], None],
    ) -> tuple[int, float]:
        trackers = [f"{p.name}_tracking" for p in PROJECTIONS]
        tables = [*trackers, *(t for p in PROJECTIONS for t in tables_of(p))]
        # Locked in this order: a read's snapshot locks the first one before it is taken.
        assert tables[0] == GENERATION_TABLE
        with self._connect() as connection:
            row = connection.execute("SELECT current_schema()").fetchone()
            connection.commit()
            assert row is not None
            live = row[0]
            while True:
                try:
                    asked = time.perf_counter()
                    with connection.transaction():
                        connection.execute(
                            f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT_MS}ms'"
                        )
                        # No keeper's batch meanwhile, and its rows remembered from the old
                        # tables forgotten after (``projections.leadership.SwapFence``).
                        fence_swap_postgres(connection)
                        connection.execute(
                            "LOCK TABLE " + ", ".join(f"{live}.{t}" for t in tables)
                            + " IN ACCESS EXCLUSIVE MODE"
                        )
                        at = {
                            p.name: _tracked(connection, f"{live}.{t}")
                            for p, t in zip(PROJECTIONS, trackers, strict=True)
                        }
                        fresh = {p.name: v.max_tracking_id(APP_NAME) or 0 for p, v in projections}
                        targets = _swap_targets(app, at, fresh, leading=leading)
                        read = catch_up_to(app, projections, targets, on_batch)
                        for table in tables:
                            _copy_grants(connection, f"{live}.{table}",
                                         f"{SHADOW_SCHEMA}.{table}")
                            connection.execute(f"DROP TABLE {live}.{table}")
                            connection.execute(
                                f"ALTER TABLE {SHADOW_SCHEMA}.{table} SET SCHEMA {live}"
                            )
                    return read, time.perf_counter() - asked
                except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
                    # let go, so whoever waited behind the locks goes on; then again
                    if time.monotonic() >= deadline:
                        raise LeadershipBusy(
                            "the read models' tables stayed locked: the rebuild could not swap "
                            "its fresh read models in; try again"
                        ) from None

    def remove(self) -> None:
        with self._connect() as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {SHADOW_SCHEMA} CASCADE")


def _copy_grants(connection: psycopg.Connection[Any], live: str, fresh: str) -> None:
    """The live table's owner, and what other roles may do with it (the service's role, when
    it is not the owner: ``ledger migrate --grant-to``), given to the fresh one that takes its
    place."""
    owner = connection.execute(
        "SELECT pg_get_userbyid(relowner) <> current_user, pg_get_userbyid(relowner)"
        " FROM pg_class WHERE oid = %s::regclass",
        (live,),
    ).fetchone()
    if owner is not None and owner[0]:
        connection.execute(SQL("ALTER TABLE {} OWNER TO {}").format(SQL(fresh),
                                                                    Identifier(owner[1])))
    grants = connection.execute(
        "SELECT a.privilege_type, a.grantee = 0 AS public, pg_get_userbyid(a.grantee) AS role"
        " FROM pg_class c, aclexplode(c.relacl) a"
        " WHERE c.oid = %s::regclass AND a.grantee <> c.relowner",
        (live,),
    ).fetchall()
    for privilege, public, role in grants:
        connection.execute(
            SQL("GRANT {} ON {} TO {}").format(
                SQL(privilege), SQL(fresh), SQL("PUBLIC") if public else Identifier(role)
            )
        )


def _tracked(connection: psycopg.Connection[Any], table: str) -> int:
    row = connection.execute(
        f"SELECT notification_id FROM {table} WHERE application_name = %s",  # noqa: S608
        (APP_NAME,),
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class _SQLiteShadow(_Shadow):
    """A file of its own beside each live read model's. The swap, per read model (each has its
    file, and the keeper commits them one by one too), in one transaction that holds the live
    file's write lock: apply the last events to the fresh one, then replace the live tables'
    rows and tracking record with the fresh ones'. Readers (WAL) read the old rows meanwhile.
    All of it inside the swap's fence, held alone (``projections.leadership.SwapFence``)."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings

    def _live(self, projection: type[ReadModelProjection]) -> Path:
        return Path(self.settings.env_for(projection.name)["SQLITE_DBNAME"])

    def _fresh(self, projection: type[ReadModelProjection]) -> Path:
        live = self._live(projection)
        return live.with_name(f"{live.stem}.{SHADOW_FILE}{live.suffix}")

    def create(self) -> dict[str, ReadModelView]:
        self.remove()
        return {
            p.name: open_view(self.settings, p, pool_size=1, sqlite_file=str(self._fresh(p)))
            for p in PROJECTIONS
        }

    def swap(
        self,
        app: LedgerApplication,
        projections: Sequence[tuple[type[ReadModelProjection], ReadModelView]],
        *,
        leading: bool,
        deadline: float,
        on_batch: Callable[[int], None],
    ) -> tuple[int, float]:
        with fenced_swap_sqlite(self.settings, deadline=deadline):
            return self._swap_each(app, projections, leading=leading, deadline=deadline,
                                   on_batch=on_batch)

    def _swap_each(
        self,
        app: LedgerApplication,
        projections: Sequence[tuple[type[ReadModelProjection], ReadModelView]],
        *,
        leading: bool,
        deadline: float,
        on_batch: Callable[[int], None],
    ) -> tuple[int, float]:
        read, held = 0, 0.0
        for projection, view in projections:
            timeout_s = max(0.1, deadline - time.monotonic())
            connection = sqlite3.connect(self._live(projection), isolation_level=None,
                                         timeout=timeout_s)
            try:
                asked = time.perf_counter()
                try:
                    connection.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as busy:
                    raise LeadershipBusy(
                        f"the {projection.name} read model stayed locked: the rebuild could "
                        f"not swap its fresh read models in ({busy}); try again"
                    ) from None
                try:
                    at = {projection.name: _tracked_sqlite(connection)}
                    fresh = {projection.name: view.max_tracking_id(APP_NAME) or 0}
                    targets = _swap_targets(app, at, fresh, leading=leading)
                    read += catch_up_to(app, [(projection, view)], targets, on_batch)
                    self._copy(projection, connection)
                    connection.execute("COMMIT")
                    held = max(held, time.perf_counter() - asked)
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
            finally:
                connection.close()
        return read, held

    def _copy(self, projection: type[ReadModelProjection], live: sqlite3.Connection) -> None:
        """The live tables' rows and tracking record replaced by the fresh ones' (read on a
        connection of their own: a file attached to ``live`` would be locked by its write
        transaction too)."""
        with closing(sqlite3.connect(self._fresh(projection))) as fresh:
            for table in [*tables_of(projection), "tracking"]:
                rows = fresh.execute(f"SELECT * FROM {table}")  # noqa: S608
                marks = ", ".join("?" * len(rows.description))
                live.execute(f"DELETE FROM {table}")  # noqa: S608
                live.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)  # noqa: S608

    def remove(self) -> None:
        for projection in PROJECTIONS:
            fresh = self._fresh(projection)
            for path in (fresh, fresh.with_name(fresh.name + "-wal"),
                         fresh.with_name(fresh.name + "-shm")):
                path.unlink(missing_ok=True)


def _tracked_sqlite(connection: sqlite3.Connection) -> int:
    row = connection.execute(
        "SELECT notification_id FROM tracking WHERE application_name = ?",
        (APP_NAME,),
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
