"""The database itself keeps history append-only (DOMAIN.md, invariant 6): stored events and the
hash chain that binds them cannot be changed or removed with plain SQL, whoever connects, unless
a superuser first switches the guards off (what ``test_verify`` then catches)."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import psycopg
import pytest

from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.chain import Chain
from projections.checkpoints import guard_notary
from projections.store import _GUARD_LOCK_KEY
from tests.audit.conftest import Intruder
from tests.conftest import pg_url

FORGED = "f" * 64


@pytest.fixture
def linked(app: LedgerApplication, system: Actor) -> LedgerApplication:
    app.open_account("ann.lee", "USD", actor=system)
    for n in range(3):
        app.deposit("ann.lee", 100 + n, f"PAY-{n}", actor=system)
    assert Chain(app.recorder).head().position == 4  # the writer sealed every event
    return app


def stored(app: LedgerApplication) -> tuple[list[Any], list[Any]]:
    """The log and the chain as the service reads them."""
    log = [
        (n.id, n.originator_id, n.originator_version, n.topic, n.state)
        for n in app.recorder.select_notifications(start=1, limit=100)
    ]
    return log, list(Chain(app.recorder).links())


def tampering(settings: StoreSettings, table: str, change: str) -> str:
    events = "stored_events" if settings.kind == "sqlite" else "ledger_events"
    key = "rowid" if settings.kind == "sqlite" else "notification_id"
    statements = {
        ("events", "update"): f"UPDATE {events} SET state = state WHERE {key} = 2",
        ("events", "delete"): f"DELETE FROM {events} WHERE {key} = 2",
        ("events", "truncate"): f"TRUNCATE {events}",
        ("chain", "update"): f"UPDATE ledger_chain SET hash = '{FORGED}' WHERE position = 2",
        ("chain", "delete"): "DELETE FROM ledger_chain WHERE position = 2",
        ("chain", "truncate"): "TRUNCATE ledger_chain",
    }
    return statements[(table, change)]


@pytest.mark.parametrize("table", ["events", "chain"])
@pytest.mark.parametrize("change", ["update", "delete"])
def test_the_database_refuses_to_change_or_remove_stored_events_and_their_chain(
    linked: LedgerApplication, settings: StoreSettings, intruder: Intruder, table: str, change: str
) -> None:
    before = stored(linked)

    with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="immutable"):
        intruder.run(tampering(settings, table, change), unguarded=False)

    assert stored(linked) == before


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("table", ["events", "chain"])
def test_postgresql_refuses_to_truncate_stored_events_and_their_chain(
    linked: LedgerApplication, settings: StoreSettings, intruder: Intruder, table: str
) -> None:
    before = stored(linked)

    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="immutable"):
        intruder.run(tampering(settings, table, "truncate"), unguarded=False)

    assert stored(linked) == before


def upsert(settings: StoreSettings, table: str) -> str:
    """Write over an existing row with an INSERT: SQLite's ``INSERT OR REPLACE`` (a delete and
    an insert), PostgreSQL's ``ON CONFLICT DO UPDATE``."""
    if table == "chain":
        if settings.kind == "sqlite":
            return f"INSERT OR REPLACE INTO ledger_chain VALUES (2, '{FORGED}', '{FORGED}')"
        return (
            f"INSERT INTO ledger_chain VALUES (2, '{FORGED}', '{FORGED}')"
            " ON CONFLICT (position) DO UPDATE SET hash = EXCLUDED.hash"
        )
    if settings.kind == "sqlite":
        return (
            "INSERT OR REPLACE INTO stored_events SELECT originator_id, originator_version,"
            " topic, state FROM stored_events WHERE rowid = 2"
        )
    return (
        "INSERT INTO ledger_events (originator_id, originator_version, topic, state)"
        " SELECT originator_id, originator_version, topic, state FROM ledger_events"
        " WHERE notification_id = 2"
        " ON CONFLICT (originator_id, originator_version) DO UPDATE SET state = EXCLUDED.state"
    )


@pytest.mark.parametrize("table", ["events", "chain"])
def test_the_database_refuses_to_write_over_a_stored_event_or_link_with_an_upsert(
    linked: LedgerApplication, settings: StoreSettings, intruder: Intruder, table: str
) -> None:
    before = stored(linked)

    try:
        intruder.run(upsert(settings, table), unguarded=False)
    except (sqlite3.DatabaseError, psycopg.Error) as refused:
        assert "immutable" in str(refused)

    # SQLite fires no DELETE trigger for the row a REPLACE removes (unless recursive_triggers
    # is on in the writer's connection), so the guard must refuse the INSERT itself.
    assert stored(linked) == before, f"{table} overwritten by: {upsert(settings, table)}"


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_the_notary_replaces_the_guard_function_only_under_the_events_guard_lock(
    app: LedgerApplication, settings: StoreSettings
) -> None:
    # The events' guards and the notary's share one function, replaced (CREATE OR REPLACE) by
    # each as a process starts: two replacements at once fail one of them with "tuple
    # concurrently updated" (a CLI command beside a server starting). The notary's waits for
    # the events' lock: while another session holds it, it has not run.
    waiting = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
               " AND NOT granted")
    done = threading.Event()
    with psycopg.connect(pg_url(settings.postgres["POSTGRES_DBNAME"]), autocommit=True) as db:
        db.execute("SELECT pg_advisory_lock(%s)", (_GUARD_LOCK_KEY,))
        worker = threading.Thread(target=lambda: (guard_notary(app.recorder), done.set()))
        worker.start()
        try:
            deadline = time.monotonic() + 10
            while (db.execute(waiting, (_GUARD_LOCK_KEY,)).fetchone() or [0])[0] != 1:
                assert not done.is_set(), "the notary replaced the function without the lock"
                assert time.monotonic() < deadline, "the notary never asked for the lock"
                time.sleep(0.01)
            assert not done.is_set()
        finally:
            db.execute("SELECT pg_advisory_unlock(%s)", (_GUARD_LOCK_KEY,))
            worker.join(10)
    assert done.is_set()
