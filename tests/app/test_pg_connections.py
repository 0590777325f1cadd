"""PostgreSQL connections the server ended while they sat idle in the pool are never handed out:
the pool looks at each connection's socket as it hands it out (no round trip when nothing
happened), and replaces one the server hung up on."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from ledger.application import LedgerApplication
from ledger.identity import Actor
from projections.store import open_application
from tests.app.conftest import open_funded
from tests.conftest import PG_ADMIN_URL, drop_pg_database, make_pg_database, pg_url, store_settings


@pytest.fixture
def pg_app() -> Iterator[tuple[LedgerApplication, str]]:
    name = make_pg_database()
    app = open_application(store_settings(pg_url(name)))
    try:
        yield app, name
    finally:
        app.close()
        drop_pg_database(name)


def terminate_sessions(database: str) -> int:
    """End every session on ``database`` and wait until their processes are gone."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
        pids = [pid for pid, _ in rows]
        for _ in range(500):  # bounded: 5 s
            left = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
            ).fetchone()
            if left is not None and left[0] == 0:
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"sessions {pids} did not end")
    return len(pids)


def test_a_pooled_connection_whose_session_was_ended_is_replaced_before_it_is_used(
    pg_app: tuple[LedgerApplication, str],
) -> None:
    app, name = pg_app
    datastore = app.recorder.datastore  # type: ignore[attr-defined]
    with datastore.get_connection() as connection:
        before = connection.info.backend_pid
    assert terminate_sessions(name) >= 1

    # At once, and no retry: the first connection handed out is a live one.
    with datastore.get_connection() as connection:
        assert connection.execute("SELECT 1").fetchone() is not None
        assert connection.info.backend_pid != before


def test_the_ledger_writes_and_reads_on_after_every_session_was_ended(
    pg_app: tuple[LedgerApplication, str], system: Actor
) -> None:
    app, name = pg_app
    open_funded(app, system, amount=500)
    assert terminate_sessions(name) >= 1

    app.deposit("alice", 250, "PAY-AFTER", actor=system)
    assert app.account("alice").posted == 750
