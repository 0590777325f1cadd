"""Materialised views: rows of a read model and its tracking record, one transaction.

A projection decides *what* to write as a list of SQL statements with named parameters
(``%(name)s``, the one dialect both stores are given); a view runs them together with the
tracking record of the event that caused them. The tracking record is written first: when two
processes ever apply the same event, the second one's tracking insert fails and its whole
transaction rolls back, so no row is changed twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from psycopg.sql import SQL

Statement = tuple[str, dict[str, Any]]
APP_NAME = "ledger"
_NAMED = re.compile(r"%\((\w+)\)s")


class ReadModelView(TrackingRecorder):
    """What a projection needs of its view, whichever the store."""

    ddl: ClassVar[Sequence[str]] = ()

    tracking_table: str = "tracking"

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
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracking_table = self.tracking_table_name
        self.sql_create_statements.extend(SQL(statement).format() for statement in self.ddl)

    def record(self, tracking: Tracking, statements: Sequence[Statement]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            self._insert_tracking(curs, tracking)
            for sql, params in statements:
                curs.execute(sql, params)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.datastore.transaction(commit=False) as curs:
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


def _dump(cursor: Any, tables: Sequence[str], tracked: Any) -> dict[str, list[tuple[Any, ...]]]:
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for table in tables:
        cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 (names from the projection's DDL)
        rows[table] = sorted(tuple(dict(r).values()) for r in cursor.fetchall())
    return rows


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


class BatchingView:
    """Stands in for a view while a batch of events is applied: collects their statements and
    commits them, with the last event's tracking record, in one transaction on ``flush``."""

    def __init__(self, view: ReadModelView) -> None:
        self.view = view
        self.statements: list[Statement] = []
        self.tracking: Tracking | None = None

    def record(self, tracking: Tracking, statements: Sequence[Statement]) -> None:
        self.statements.extend(statements)
        self.tracking = tracking

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.view.query(sql, params)

    def max_tracking_id(self, application_name: str) -> int | None:
        if self.tracking is not None:
            return self.tracking.notification_id
        return self.view.max_tracking_id(application_name)

    def flush(self) -> None:
        if self.tracking is not None:
            self.view.record(self.tracking, self.statements)
        self.statements, self.tracking = [], None
