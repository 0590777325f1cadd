"""The event store as this service runs it: durable, append-only, and wired to the application.

- SQLite connections run with ``synchronous=FULL`` (WAL mode, as eventsourcing sets it).
- PostgreSQL refuses to start on a server with ``fsync`` or ``synchronous_commit`` off.
- The database itself refuses UPDATE, DELETE and TRUNCATE of stored events (triggers).
- ``StorePositions`` answers where a stored event stands in the global log.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import Notification, Recorder
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
    SQLiteFactory,
)
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ledger.application import LedgerApplication
from ledger.settings import StoreSettings
from projections.paging import MAX_POSITION


class StoreNotDurable(RuntimeError):
    """The database would acknowledge commits it could lose: the ledger will not run on it."""


class _DurableSQLitePool(SQLiteConnectionPool):
    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        raw: sqlite3.Connection = connection._sqlite_conn
        raw.execute("PRAGMA synchronous=FULL")
        return connection


class _DurableSQLiteDatastore(SQLiteDatastore):
    def __init__(self, db_name: str, **kwargs: Any) -> None:
        super().__init__(db_name, **kwargs)
        self.pool = _DurableSQLitePool(db_name=db_name, lock_timeout=kwargs.get("lock_timeout"))


class DurableSQLiteFactory(SQLiteFactory):
    """eventsourcing's SQLite factory, every connection with ``synchronous=FULL``."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        old = self.datastore
        self.datastore = _DurableSQLiteDatastore(
            db_name=old.pool.db_name,
            lock_timeout=old.pool.lock_timeout,
            single_row_tracking=old.single_row_tracking,
            originator_id_type=old.originator_id_type,
        )
        old.close()


# -- positions ---------------------------------------------------------------------------------


class StorePositions:
    """``position_of(id, version)``: the notification id of one stored event."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def position_of(self, originator_id: UUID, version: int) -> int:
        recorder = self.recorder
        if isinstance(recorder, SQLiteApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"SELECT rowid FROM {recorder.events_table_name} "  # noqa: S608
                    "WHERE originator_id=? AND originator_version=?",
                    (originator_id.hex, version),
                )
                row = cursor.fetchone()
            found = None if row is None else int(row[0])
        else:
            assert isinstance(recorder, PostgresApplicationRecorder)
            statement = SQL(
                "SELECT notification_id FROM {}.{} WHERE originator_id=%s AND originator_version=%s"
            ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            with recorder.datastore.transaction(commit=False) as curs:
                curs.execute(statement, (originator_id, version))
                pg_row = curs.fetchone()
            found = None if pg_row is None else int(pg_row["notification_id"])
        # The caller only asks about events it has just read back: absence is a broken store.
        assert found is not None, f"no stored event {originator_id} v{version}"
        return found


# -- reading the whole log ---------------------------------------------------------------------

def read_log(
    recorder: Recorder, after: int, limit: int, *, upto: int | None = None
) -> Sequence[Notification]:
    """The stored events after a position (up to ``upto``), at most ``limit``, in log order: what
    ``select_notifications`` answers. On PostgreSQL the same rows are read with less work for
    each (rows as tuples, not dicts): a replay reads the whole log."""
    if not isinstance(recorder, PostgresApplicationRecorder):
        return recorder.select_notifications(  # type: ignore[attr-defined,no-any-return]
            after, limit, stop=upto, inclusive_of_start=False
        )
    statement = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{}"
        " WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id"
        " LIMIT %s"
    ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    params = (after, MAX_POSITION if upto is None else upto, limit)
    with recorder.datastore.get_connection() as connection:
        with connection.cursor(row_factory=tuple_row) as curs:
            curs.execute(statement, params, prepare=True)
            rows = curs.fetchall()
    return [
        Notification(
            id=position, originator_id=stream, originator_version=version, topic=topic, state=state
        )
        for position, stream, version, topic, state in rows
    ]


# -- plain SQL beside the event store ----------------------------------------------------------


def run_sql(
    recorder: Recorder,
    statements: list[tuple[str, dict[str, Any]]],
    *,
    commit: bool,
) -> list[dict[str, Any]]:
    """Run statements (named ``%(x)s`` parameters) in one transaction of the event store's
    database; answer the rows of the last one."""
    rows: list[dict[str, Any]] = []
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=commit) as cursor:
            for sql, params in statements:
                cursor.execute(_NAMED.sub(r":\1", sql), params)
            if statements and cursor.sqlite_cursor.description:
                rows = [dict(row) for row in cursor.fetchall()]
        return rows
    assert isinstance(recorder, PostgresApplicationRecorder)
    with recorder.datastore.transaction(commit=commit) as curs:
        for sql, params in statements:
            curs.execute(sql, params)
        if statements and curs.description:
            rows = [dict(row) for row in curs.fetchall()]
    return rows


def events_table(recorder: Recorder) -> str:
    assert isinstance(recorder, (SQLiteApplicationRecorder, PostgresApplicationRecorder))
    return recorder.events_table_name


_NAMED = re.compile(r"%\((\w+)\)s")


# -- guards ---------------------------------------------------------------------------------------

CHAIN_TABLE = "ledger_chain"
CHAIN_DDL = (
    "CREATE TABLE IF NOT EXISTS ledger_chain ("
    " position BIGINT PRIMARY KEY, hash TEXT NOT NULL, CHECK (length(hash) = 64))"
)

_SQLITE_GUARDS = [
    "CREATE TRIGGER IF NOT EXISTS {t}_refuse_update BEFORE UPDATE ON {t} "
    "BEGIN SELECT RAISE(ABORT, 'stored events are immutable: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS {t}_refuse_delete BEFORE DELETE ON {t} "
    "BEGIN SELECT RAISE(ABORT, 'stored events are immutable: DELETE refused'); END",
    # INSERT OR REPLACE deletes the row it replaces without firing DELETE triggers: refuse an
    # insert whose key is taken. (A plain conflicting insert fails as a constraint either way,
    # which is how an optimistic-concurrency conflict still surfaces.)
    "CREATE TRIGGER IF NOT EXISTS {t}_refuse_replace BEFORE INSERT ON {t} "
    "WHEN EXISTS (SELECT 1 FROM {t} WHERE {key}) "
    "BEGIN SELECT RAISE(ABORT, 'stored events are immutable: REPLACE refused'); END",
]
# How a new row names the row it would replace, per guarded table.
_SQLITE_KEYS = {
    "stored_events": "originator_id = NEW.originator_id "
    "AND originator_version = NEW.originator_version",
    "ledger_chain": "position = NEW.position",
}

_PG_GUARD_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.ledger_refuse_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stored events are immutable: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$
"""
_PG_GUARDS = [
    "CREATE OR REPLACE TRIGGER {trigger_rows} BEFORE UPDATE OR DELETE ON {schema}.{table} "
    "FOR EACH ROW EXECUTE FUNCTION {schema}.ledger_refuse_event_change()",
    "CREATE OR REPLACE TRIGGER {trigger_truncate} BEFORE TRUNCATE ON {schema}.{table} "
    "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.ledger_refuse_event_change()",
]
# Any constants shared by every process: they serialise concurrent start-ups' DDL.
_GUARD_LOCK_KEY = 0x1ED6E4
_SCHEMA_LOCK_KEY = 0x1ED6E3


def guard_events(recorder: Recorder) -> None:
    """Make the database refuse UPDATE, DELETE and TRUNCATE of stored events and of the hash
    chain that binds them."""
    tables = [events_table(recorder), CHAIN_TABLE]
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(CHAIN_DDL)
            for table in tables:
                for statement in _SQLITE_GUARDS:
                    cursor.execute(statement.format(t=table, key=_SQLITE_KEYS[table]))
        return
    assert isinstance(recorder, PostgresApplicationRecorder)
    datastore: PostgresDatastore = recorder.datastore
    with datastore.transaction(commit=True) as curs:
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (_GUARD_LOCK_KEY,))
        curs.execute(CHAIN_DDL)
        curs.execute(SQL(_PG_GUARD_FUNCTION).format(schema=Identifier(datastore.schema)))
        for table in tables:
            names = {
                "schema": Identifier(datastore.schema),
                "table": Identifier(table),
                "trigger_rows": Identifier(f"{table}_refuse_change"),
                "trigger_truncate": Identifier(f"{table}_refuse_truncate"),
            }
            for statement in _PG_GUARDS:
                curs.execute(SQL(statement).format(**names))


def check_durable(recorder: Recorder) -> None:
    """Refuse a PostgreSQL that acknowledges commits before they are on disk."""
    if not isinstance(recorder, PostgresApplicationRecorder):
        return
    with recorder.datastore.transaction(commit=False) as curs:
        for setting in ("fsync", "synchronous_commit"):
            curs.execute(SQL("SHOW {}").format(Identifier(setting)))
            row = curs.fetchone()
            assert row is not None
            value = str(next(iter(row.values())))
            if value.lower() in ("off", "false", "0"):
                raise StoreNotDurable(f"PostgreSQL has {setting}={value}: commits could be lost")


@contextmanager
def schema_lock(settings: StoreSettings) -> Iterator[None]:
    """One process at a time creates tables (PostgreSQL; SQLite serialises DDL itself)."""
    if settings.kind != "postgres":
        yield
        return
    pg = settings.postgres
    with psycopg.connect(
        dbname=pg["POSTGRES_DBNAME"],
        host=pg["POSTGRES_HOST"],
        port=pg["POSTGRES_PORT"],
        user=pg["POSTGRES_USER"],
        password=pg["POSTGRES_PASSWORD"],
        autocommit=True,
        connect_timeout=5,
    ) as connection:
        connection.execute("SET lock_timeout = '30s'")
        connection.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK_KEY,))
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK_KEY,))


def open_application(settings: StoreSettings, **options: Any) -> LedgerApplication:
    """The ledger application on the configured store, checked and guarded."""
    if settings.sqlite_path is not None:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    with schema_lock(settings):
        app = LedgerApplication(settings.app_env(), **options)
        check_durable(app.recorder)
        guard_events(app.recorder)
    app.positions = StorePositions(app.recorder)
    return app
