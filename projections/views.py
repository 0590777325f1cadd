"""Materialised views: a read model's rows and its tracking record, written together.

A projection (``ReadModelProjection``) says what each event does to its read model: it reads
the rows it needs through ``Rows`` and puts back whole rows (keyed tables: the row as it now
stands) or adds rows (append-only tables: one per step). ``Rows`` holds what a batch of events
changed until the batch is committed; then each changed keyed row is written once, as it stands
after the batch (an upsert), the added rows in bulk, and the tracking record moves from where
the batch began to its last event, all in one transaction (``ReadModelView.write_batch``, for
every read model of one datastore). On PostgreSQL a batch costs a few round trips and few
statements however many rows it writes: every tracking record in one statement, one upsert per
keyed table and one INSERT per append-only table in one pipeline, the rows as one array per
column (one statement text per table, prepared once), and new rows by a binary ``COPY`` when
many (catching up, a rebuild); on SQLite, ``executemany``. Few statements matter as much as
few round trips: each costs the keeper tens of microseconds of Python.

The tracking record moves only from the position the batch began at (compare and set, written
first): if another process ever applied events meanwhile, the transaction fails and rolls back
whole, so no event is applied twice and no row is written from a stale copy.

``Rows`` remembers the rows it has read or written between batches (the keeper is their only
writer); whoever drives the batches bounds how many, and has them all forgotten when a batch
fails.
"""

from __future__ import annotations

import functools
import operator
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from eventsourcing.persistence import IntegrityError, Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL, Identifier

from projections.pgarrays import array
from projections.pgpool import pipelined_transaction
from projections.seal import ChainKey

Statement = tuple[str, dict[str, Any]]
Row = Mapping[str, Any]
# One read model's part of a batch: its view, the position its part began after, its changes.
Part = tuple["ReadModelView", int, "Changes"]
APP_NAME = "ledger"
# Above this many new rows of one table in a batch, they go by binary COPY (the cheapest per row:
# a rebuild, a keeper catching up); fewer go as one array per column, in the pipeline that
# moves the tracking (a keeper keeping up), as keyed rows always do.
COPY_ABOVE_ROWS = 64
_NAMED = re.compile(r"%\((\w+)\)s")


class BrokenReadModel(RuntimeError):
    """An event the read model cannot apply (a row it needs is missing, or a row would break
    the table's invariant): a bug or a damaged store, never an expected outcome."""


# In a batch's write transaction, before its first write (PostgreSQL): statements of its own in
# the same round trip; answers the check to call once their results are in, which raises to
# roll the batch back (``projections.leadership.SwapFence.guard``).
Guard = Callable[[Any], Callable[[], None]]


@dataclass
class Changes:
    """What a batch of events did to one read model's tables."""

    keys: Mapping[str, tuple[str, ...]]  # each keyed table's key columns
    put: dict[str, list[Row]] = field(default_factory=dict)  # keyed rows, as they now stand
    added: dict[str, list[Row]] = field(default_factory=dict)  # new rows of append-only tables


class ReadModelView(TrackingRecorder):
    """What a projection needs of its view, whichever the store."""

    ddl: ClassVar[Sequence[str]] = ()

    tracking_table: str = "tracking"
    datastore: Any
    # whether one connection may write its rows while another reads them
    concurrent_writes: ClassVar[bool] = False

    def write_batch(self, parts: Sequence[Part], end: int, guard: Guard | None = None) -> None:
        """In one transaction of this view's datastore, for each read model of ``parts`` (all
        on this datastore): move its tracking record from where its part began to ``end``
        (IntegrityError if it no longer stands there), and write its changes; on PostgreSQL,
        ``guard``'s statements first and its check before the commit."""
        raise NotImplementedError

    def record(self, tracking: Tracking, statements: Sequence[Statement]) -> None:
        raise NotImplementedError

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def dump(self, tables: Sequence[str]) -> tuple[int, dict[str, list[tuple[Any, ...]]]]:
        """Every row of the tables and the tracked position, read in one snapshot."""
        raise NotImplementedError

    def drop(self, tables: Sequence[str]) -> None:
        """Drop the read model's tables and its tracking (``ledger rebuild``)."""
        raise NotImplementedError


class SQLiteReadModelView(SQLiteTrackingRecorder, ReadModelView):
    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *self.ddl]

    def write_batch(self, parts: Sequence[Part], end: int, guard: Guard | None = None) -> None:
        # No guard: SQLite's swap fence is a file lock held around the keeper's whole batch.
        with self.datastore.transaction(commit=True) as cursor:
            for view, start, changes in parts:
                assert isinstance(view, SQLiteReadModelView)
                view._write(cursor.sqlite_cursor, start, end, changes)

    def _write(self, cursor: Any, start: int, end: int, changes: Changes) -> None:
        cursor.execute(_to_sqlite(_move_tracking("tracking")), _tracking(start, end))
        if cursor.rowcount != 1:
            raise IntegrityError(f"read model tracking moved from {start} meanwhile")
        for table, rows in changes.put.items():
            columns = tuple(rows[0])
            upsert = _upsert(table, columns, changes.keys[table], _named(columns))
            cursor.executemany(_to_sqlite(upsert), rows)
        for table, rows in changes.added.items():
            columns = tuple(rows[0])
            cursor.executemany(_to_sqlite(_insert(table, columns, _named(columns))), rows)

    def record(self, tracking: Tracking, statements: Sequence[Statement]) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            self._insert_tracking(cursor, tracking)
            for sql, params in statements:
                cursor.execute(_to_sqlite(sql), params)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(_to_sqlite(sql), params or {})
            return [dict(row) for row in cursor.fetchall()]

    def drop(self, tables: Sequence[str]) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            for table in [*tables, "tracking"]:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")

    def dump(self, tables: Sequence[str]) -> tuple[int, dict[str, list[tuple[Any, ...]]]]:
        # A write transaction: SQLite then lets no writer in between the reads.
        with self.datastore.transaction(commit=True) as cursor:
            position = self._max_tracking_id(APP_NAME, cursor) or 0
            return position, _dump(cursor.sqlite_cursor, tables, position)


class PostgresReadModelView(PostgresTrackingRecorder, ReadModelView):
    concurrent_writes = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracking_table = self.tracking_table_name
        self.sql_create_statements.extend(SQL(statement).format() for statement in self.ddl)
        self._types: dict[str, dict[str, str]] = {}

    def write_batch(self, parts: Sequence[Part], end: int, guard: Guard | None = None) -> None:
        views = [(_postgres(view), start, changes) for view, start, changes in parts]
        copying = any(_many(rows) for _, _, changes in views for rows in changes.added.values())
        with self.datastore.get_connection() as connection:
            for view, _, changes in views:
                view._learn_types(connection, changes)  # asked outside the pipeline
            if not copying:
                # The whole batch, BEGIN included, in one round trip, and the commit in one
                # more; a failure raises as the pipeline syncs, and the transaction rolls back.
                with pipelined_transaction(connection) as pipeline:
                    guarded = guard(connection) if guard is not None else None
                    moved = self._put_all(connection, views, end)
                    pipeline.sync()
                    if guarded is not None:
                        guarded()
                    _check_moved(moved, views)
                return
            with connection.transaction():
                # Every tracking record, every keyed row and the new rows of tables with few
                # of them, in one round trip; then COPY (not in a pipeline) the others.
                with connection.pipeline():
                    guarded = guard(connection) if guard is not None else None
                    moved = self._put_all(connection, views, end)
                if guarded is not None:
                    guarded()
                _check_moved(moved, views)
                for view, _, changes in views:
                    view._add(connection, changes)

    def _put_all(self, connection: Any, views: Sequence[tuple[PostgresReadModelView, int, Changes]],
                 end: int) -> Any:
        """Every tracking record (one statement for all) and ``_put`` of every view; answers
        the cursor of the tracking's counts."""
        moved = connection.execute(
            _move_all(self.datastore.schema,
                      tuple(view.tracking_table_name for view, _, _ in views)),
            {"application_name": APP_NAME, "end": end,
             **{f"start{n}": start for n, (_, start, _) in enumerate(views)}},
        )
        for view, _, changes in views:
            view._put(connection, changes)
        return moved

    def _put(self, connection: Any, changes: Changes) -> None:
        """Put the keyed rows, and add the new rows of tables that have few (``_add`` copies
        the others), each table's rows as one array per column, however many: one statement
        text per table, so psycopg converts it once and the server plans it once (prepared),
        where a VALUES list of every length was a statement of its own, parsed by psycopg at
        every batch (it caches no statement of more than 50 parameters)."""
        for table, rows in changes.put.items():
            columns = tuple(rows[0])
            unnest = _unnest(self._types_of(table, columns))
            connection.execute(_upsert(table, columns, changes.keys[table], unnest),
                               _arrays(columns, rows), prepare=True)
        for table, rows in changes.added.items():
            if not _many(rows):
                columns = tuple(rows[0])
                unnest = _unnest(self._types_of(table, columns))
                connection.execute(_insert(table, columns, unnest), _arrays(columns, rows),
                                   prepare=True)

    def _add(self, connection: Any, changes: Changes) -> None:
        cursor = connection.cursor()
        for table, rows in changes.added.items():
            if not _many(rows):
                continue  # added by _put
            columns = tuple(rows[0])
            values = operator.itemgetter(*columns)
            # Binary COPY: one round trip for all of a table's rows, the cheapest to encode and
            # to parse.
            with cursor.copy(
                f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(list(self._types_of(table, columns)))
                for row in rows:
                    copy.write_row(values(row))

    def _learn_types(self, connection: Any, changes: Changes) -> None:
        """The column types of the tables changed, which binary COPY and unnest need (asked of
        each table once)."""
        for table in [*changes.put, *changes.added]:
            if table not in self._types:
                rows = connection.execute(
                    "SELECT attname, format_type(atttypid, atttypmod) AS type"
                    " FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
                    " AND NOT attisdropped",
                    (table,),
                ).fetchall()
                self._types[table] = {row["attname"]: row["type"] for row in rows}

    def _types_of(self, table: str, columns: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(self._types[table][column] for column in columns)

    def record(self, tracking: Tracking, statements: Sequence[Statement]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, tracking)
            for sql, params in statements:
                curs.execute(sql, params)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        # One statement sees one snapshot: on the pool's autocommit connection it needs no
        # BEGIN and ROLLBACK around it (one round trip, not three), as eventsourcing's own
        # max_notification_id does. Within ``one_snapshot``, this thread's snapshot's.
        snapshot: _Snapshot | None = getattr(_snapshots, "current", None)
        if snapshot is not None and snapshot.datastore is self.datastore:
            return snapshot.query(sql, params or {})
        with self.datastore.get_connection() as connection, connection.cursor() as curs:
            curs.execute(sql, params or {})
            return [dict(row) for row in curs.fetchall()]

    def drop(self, tables: Sequence[str]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            for table in [*tables, self.tracking_table_name]:
                curs.execute(f"DROP TABLE IF EXISTS {table}")

    def dump(self, tables: Sequence[str]) -> tuple[int, dict[str, list[tuple[Any, ...]]]]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            curs.execute(self.max_tracking_id_statement, (APP_NAME,))
            row = curs.fetchone()
            position = (row["max"] if row else None) or 0
            return position, _dump(curs, tables, position)


# -- one read, one snapshot (PostgreSQL) ----------------------------------------------------------

_snapshots = threading.local()


class _Snapshot:
    """One connection of a datastore's pool, in a read-only REPEATABLE READ transaction begun
    with its first query (in the same round trip): every query of it sees the read models as
    they stood at that query."""

    def __init__(self, datastore: Any, connection: Any, lock_first: str | None) -> None:
        self.datastore = datastore
        self.connection = connection
        self.lock_first = lock_first
        self.begun = False

    def query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self.connection.cursor() as curs:
            if self.begun:
                curs.execute(sql, params)
            else:
                # BEGIN and the first query in one round trip: the pipeline's one sync, as it
                # ends (a fetch inside it would sync once more)
                with self.connection.pipeline():
                    self.connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    self.begun = True
                    if self.lock_first is not None:
                        # Before the snapshot is taken (a LOCK takes none): a rebuild's swap
                        # holding the read models' tables is waited for here, not by the first
                        # query, whose snapshot would be older than the tables it then reads.
                        self.connection.execute(
                            SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(
                                Identifier(self.lock_first)))
                    curs.execute(sql, params)
            return [dict(row) for row in curs.fetchall()]


@contextmanager
def one_snapshot(datastore: Any, lock_first: str | None = None) -> Iterator[None]:
    """Meanwhile, every query this thread makes of ``datastore``'s read models sees one
    snapshot of them (the keeper commits a batch of all of them in one transaction): a read of
    several answers as of one moment. Costs one round trip, the ROLLBACK. ``lock_first``: the
    table a rebuild's swap locks first, locked (shared) before the snapshot is taken."""
    assert getattr(_snapshots, "current", None) is None, "snapshots do not nest"
    with datastore.get_connection() as connection:
        snapshot = _Snapshot(datastore, connection, lock_first)
        _snapshots.current = snapshot
        try:
            yield
        finally:
            _snapshots.current = None
            if snapshot.begun:
                connection.execute("ROLLBACK")


def _many(rows: Sequence[Row]) -> bool:
    """Enough new rows of one table for a binary COPY rather than arrays in the pipeline."""
    return len(rows) > COPY_ABOVE_ROWS


@functools.cache
def _move_all(schema: str, trackers: tuple[str, ...]) -> str:
    """Move every tracking record of a batch in one statement (``_move_tracking`` each, the
    n-th from ``%(start<n>)s``); answers one row: 1 for each record moved or made, else 0."""
    moves, counts = [], []
    for n, tracker in enumerate(trackers):
        move = SQL(_move_tracking("{}.{}", start=f"start{n}")).format(
            Identifier(schema), Identifier(tracker))
        moves.append(SQL("m{} AS ({} RETURNING 1)").format(SQL(str(n)), move))
        counts.append(SQL("(SELECT count(*) FROM m{0}) AS m{0}").format(SQL(str(n))))
    # Rendered once: psycopg would render a Composed again at every execute.
    return SQL("WITH {} SELECT {}").format(
        SQL(", ").join(moves), SQL(", ").join(counts)).as_string()


def _arrays(columns: tuple[str, ...], rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The rows as one array per column (``_unnest`` makes rows of them again), each of its
    values' type (``projections.pgarrays``)."""
    return [array([row[column] for row in rows]) for column in columns]


def _check_moved(moved: Any, views: Sequence[tuple[PostgresReadModelView, int, Changes]]
                 ) -> None:
    counts = moved.fetchone()
    assert counts is not None
    for count, (view, start, _) in zip(counts.values(), views, strict=True):
        if count != 1:
            raise IntegrityError(
                f"read model {view.tracking_table_name} moved from {start} meanwhile")


def _postgres(view: ReadModelView) -> PostgresReadModelView:
    assert isinstance(view, PostgresReadModelView), "read models of one datastore, one kind"
    return view


def _tracking(start: int, end: int) -> dict[str, Any]:
    return {"application_name": APP_NAME, "start": start, "end": end}


def _move_tracking(table: str, start: str = "start") -> str:
    # Inserted when there is none yet (start 0), else moved only from where the batch began.
    return (
        f"INSERT INTO {table} AS t (application_name, notification_id)"  # noqa: S608
        " VALUES (%(application_name)s, %(end)s) ON CONFLICT (application_name) DO UPDATE"
        f" SET notification_id = excluded.notification_id WHERE t.notification_id = %({start})s"
    )


@functools.cache
def _upsert(table: str, columns: tuple[str, ...], keys: tuple[str, ...], rows: str) -> str:
    """Insert keyed rows, or replace those with their keys (names from the projections' own
    code, never from input)."""
    changed = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    action = f"DO UPDATE SET {changed}" if changed else "DO NOTHING"
    return f"{_insert(table, columns, rows)} ON CONFLICT ({', '.join(keys)}) {action}"


@functools.cache
def _insert(table: str, columns: tuple[str, ...], rows: str) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) {rows}"


@functools.cache
def _named(columns: tuple[str, ...]) -> str:
    """One row's values, by name."""
    return "VALUES (" + ", ".join(f"%({c})s" for c in columns) + ")"


@functools.cache
def _unnest(types: tuple[str, ...]) -> str:
    """Rows given as one array per column (PostgreSQL; the types from the table's catalog)."""
    return "SELECT * FROM unnest(" + ", ".join(f"%s::{t}[]" for t in types) + ")"  # noqa: S608


def _dump(cursor: Any, tables: Sequence[str], tracked: Any) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for table in tables:
        cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 (names from the projection's DDL)
        rows[table] = sorted(tuple(dict(r).values()) for r in cursor.fetchall())
    return rows


@functools.cache
def _to_sqlite(sql: str) -> str:
    return _NAMED.sub(r":\1", sql)


_VIEW_CLASSES: dict[tuple[str, str], type[ReadModelView]] = {}


def view_class(kind: str, name: str, ddl: Sequence[str]) -> type[ReadModelView]:
    """The view class of one read model on one kind of store (its DDL is part of the class,
    because eventsourcing constructs views from a class and creates their tables)."""
    key = (kind, name)
    if key not in _VIEW_CLASSES:
        base: type[ReadModelView] = (
            SQLiteReadModelView if kind == "sqlite" else PostgresReadModelView
        )
        _VIEW_CLASSES[key] = type(f"{name.title()}{base.__name__}", (base,), {"ddl": tuple(ddl)})
    return _VIEW_CLASSES[key]


class Rows:
    """One read model's rows as a batch of events sees them (see the module docstring)."""

    def __init__(self, view: ReadModelView, keys: Mapping[str, tuple[str, ...]]) -> None:
        self.view = view
        self.keys = dict(keys)
        self._key_of = {table: _key_getter(columns) for table, columns in keys.items()}
        self.position = view.max_tracking_id(APP_NAME) or 0  # committed up to here
        self.applied = self.position  # applied up to here, committed or not
        self._known: dict[str, dict[tuple[Any, ...], Row | None]] = {t: {} for t in keys}
        self._put: dict[str, dict[tuple[Any, ...], Row]] = {t: {} for t in keys}
        self._added: dict[str, list[Row]] = {}

    # -- for projections ----------------------------------------------------------------------

    def get(self, table: str, *key: Any, check: Callable[[Row], None] | None = None) -> Row:
        """The row of a keyed table as it stands (read once, then remembered); BrokenReadModel
        when there is none. ``check`` sees a row read from the store before it is remembered
        (and raises BrokenReadModel if the row is not one the projection made)."""
        known = self._known[table]
        if key not in known:
            columns = self.keys[table]
            where = " AND ".join(f"{c} = %({c})s" for c in columns)
            found = self.view.query(
                f"SELECT * FROM {table} WHERE {where}",  # noqa: S608 (names from the code)
                dict(zip(columns, key, strict=True)),
            )
            if found and check is not None:
                check(found[0])
            known[key] = found[0] if found else None
        row = known[key]
        if row is None:
            raise BrokenReadModel(f"{table} has no row {key!r}")
        return row

    def put(self, table: str, row: Row) -> None:
        """A keyed row as it stands now (a new one, or a changed copy of ``get``'s)."""
        key = self._key_of[table](row)
        self._known[table][key] = row
        self._put[table][key] = row

    def add(self, table: str, row: Row) -> None:
        """A new row of an append-only table."""
        self._added.setdefault(table, []).append(row)

    # -- for the batch -------------------------------------------------------------------------

    def take(self, end: int) -> tuple[int, Changes]:
        """What the events applied since the last ``take`` changed, to commit, and the position
        they began after; from here on the read model counts as applied up to ``end``."""
        start, self.applied = self.applied, end
        changes = Changes(
            keys=self.keys,
            put={t: list(rows.values()) for t, rows in self._put.items() if rows},
            added={t: rows for t, rows in self._added.items() if rows},
        )
        for rows in self._put.values():
            rows.clear()
        self._added = {}
        return start, changes

    def committed(self, position: int) -> None:
        self.position = position

    def remembered(self) -> int:
        """How many rows are remembered (bounded by whoever drives the batches)."""
        return sum(len(known) for known in self._known.values())

    def forget(self) -> None:
        """Drop every remembered row and every change not committed: from here on, rows are
        read from the store again and events applied after its tracked position."""
        for table in self.keys:
            self._known[table].clear()
            self._put[table].clear()
        self._added = {}
        self.applied = self.position


def _key_getter(columns: tuple[str, ...]) -> Callable[[Row], tuple[Any, ...]]:
    """A row's key, always a tuple (as ``Rows.get`` is given it)."""
    if len(columns) == 1:
        column = columns[0]
        return lambda row: (row[column],)
    return operator.itemgetter(*columns)


class ReadModelProjection:
    """A read model's projection: what each event does to its rows, through ``Rows``."""

    name: ClassVar[str]
    ddl: ClassVar[Sequence[str]] = ()
    # keyed tables (rows put as they stand) and their key columns; other tables are added to
    keys: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    # the event types that change the read model; it is given no others (it tracks them all)
    handles: ClassVar[frozenset[type[Any]]] = frozenset()

    def __init__(self, rows: Rows, key: ChainKey | None = None) -> None:
        self.rows = rows
        self.key = key  # the chain key, for a read model that seals what it makes (the outbox)

    def process_event(self, event: Any, position: int) -> None:
        """Change the rows as the event (of a type it ``handles``) says."""
        raise NotImplementedError
