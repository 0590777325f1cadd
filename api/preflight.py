"""Before a command touches a store: can it be reached, and is it the ledger's?

A mistyped ``LEDGER_DATABASE_URL`` (a port nothing listens on, a database that does not exist,
another application's database) must be said in one line, not a driver's traceback; and the
one-off commands must not create the ledger's tables in a database that is not the ledger's
(``ledger verify`` against the wrong database used to answer "ok: 0 events checked").

``problem(settings, need_ledger=...)`` answers None when all is well, else the one line to
print. It only reads: SQLite is opened read-only, PostgreSQL with a short connect timeout.
"""

from __future__ import annotations

import sqlite3

import psycopg

from ledger.settings import StoreSettings

CONNECT_TIMEOUT_S = 5
# eventsourcing's names for the ledger application's events table.
SQLITE_EVENTS_TABLE = "stored_events"
POSTGRES_EVENTS_TABLE = "ledger_events"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _where(settings: StoreSettings) -> str:
    if settings.kind == "sqlite":
        return str(settings.sqlite_path)
    p = settings.postgres
    return f"{p['POSTGRES_USER']}@{p['POSTGRES_HOST']}:{p['POSTGRES_PORT']}/{p['POSTGRES_DBNAME']}"


def _events_in_sqlite(settings: StoreSettings) -> int | None:
    """How many events the SQLite store holds; None when it has no events table."""
    assert settings.sqlite_path is not None
    uri = f"file:{settings.sqlite_path}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=CONNECT_TIMEOUT_S) as connection:
        found = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?",
            (SQLITE_EVENTS_TABLE,),
        ).fetchone()
        if found is None:
            return None
        row = connection.execute(f"SELECT COUNT(*) FROM {SQLITE_EVENTS_TABLE}").fetchone()  # noqa: S608
        return int(row[0])


def _events_in_postgres(settings: StoreSettings) -> int | None:
    p = settings.postgres
    with psycopg.connect(
        dbname=p["POSTGRES_DBNAME"], host=p["POSTGRES_HOST"], port=p["POSTGRES_PORT"],
        user=p["POSTGRES_USER"], password=p["POSTGRES_PASSWORD"] or None,
        connect_timeout=CONNECT_TIMEOUT_S,
    ) as connection:
        row = connection.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (POSTGRES_EVENTS_TABLE,)
        ).fetchone()
        if row is None or not row[0]:
            return None
        count = connection.execute(
            f"SELECT COUNT(*) FROM {POSTGRES_EVENTS_TABLE}"  # noqa: S608 (a constant)
        ).fetchone()
        return 0 if count is None else int(count[0])


def events(settings: StoreSettings) -> int | None:
    """The number of events stored; None when the database has no ledger in it. Raises
    ``StoreUnreachable`` (one line) when the database cannot be reached."""
    try:
        if settings.kind == "sqlite":
            return _events_in_sqlite(settings)
        return _events_in_postgres(settings)
    except (sqlite3.Error, psycopg.Error, OSError) as error:
        raise StoreUnreachable(
            f"cannot reach the database {_where(settings)} (LEDGER_DATABASE_URL): "
            f"{_first_line(error)}"
        ) from None


class StoreUnreachable(Exception):
    """The database named by LEDGER_DATABASE_URL cannot be reached (said in one line)."""


def reachable(settings: StoreSettings) -> str | None:
    """None when the database answers; else the one line that says why not (``serve``: the
    tables are made on first start, so only reaching it counts)."""
    if settings.kind == "sqlite":
        return None  # serve makes the file
    try:
        events(settings)
    except StoreUnreachable as error:
        return str(error)
    return None


def problem(settings: StoreSettings) -> str | None:
    """None when the store can be reached and is the ledger's; else the one line that says
    what is wrong."""
    try:
        count = events(settings)
    except StoreUnreachable as error:
        return str(error)
    if count is None:
        return (
            f"there is no ledger in {_where(settings)}: it has no events table "
            "(is LEDGER_DATABASE_URL the ledger's database?)"
        )
    return None


def empty(settings: StoreSettings) -> str | None:
    """The one line saying the ledger holds no events, or None when it holds some."""
    if events(settings):
        return None
    return (
        f"the ledger in {_where(settings)} holds no events: there is nothing to check "
        "(is LEDGER_DATABASE_URL the ledger's database?)"
    )
