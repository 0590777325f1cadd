"""PostgreSQL connections the server ended while they sat idle in the pool are never handed out:
the pool looks at each connection's socket as it hands it out (no round trip when nothing
happened), and replaces one the server hung up on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.pipeline import WritersLockBusy
from projections.store import _WRITER_LOCK_KEY, open_application
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


# Far beyond the store's lock timeout (5 s): only a write that waits for the lock without end, or
# tries again and again, is still waiting then.
STALLED_WRITER_BOUND_S = 90.0


def test_a_writer_stalled_in_its_transaction_elsewhere_holds_a_write_up_only_for_a_while(
    pg_app: tuple[LedgerApplication, str], system: Actor
) -> None:
    app, name = pg_app
    open_funded(app, system, amount=500)
    # Given another process's writer that took the writers' lock and stalled in its transaction
    other = psycopg.connect(pg_url(name), autocommit=False)
    answered: dict[str, object] = {}
    try:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITER_LOCK_KEY,))
        app.recorder._head = None  # type: ignore[attr-defined]  # the head is read under the lock

        def deposit() -> None:
            try:
                answered["position"] = app.deposit("alice", 5, "PAY-STALLED", actor=system).position
            except WritersLockBusy as error:  # 503: the store did not answer
                answered["refusal"] = error

        # When a deposit needs the lock
        writer = threading.Thread(target=deposit, name="stalled-writer-test", daemon=True)
        writer.start()
        writer.join(STALLED_WRITER_BOUND_S)
        # Then it is refused at the lock timeout, as the store not answering (send it again),
        # not left waiting, nor tried again while the other still holds the lock
        assert not writer.is_alive(), "the deposit still waits for the writers' lock"
        assert "refusal" in answered, answered
    finally:
        other.rollback()
        other.close()
    # And nothing was recorded: sent again once the lock is free, it takes effect once
    app.deposit("alice", 5, "PAY-STALLED", actor=system)
    app.deposit("alice", 5, "PAY-STALLED", actor=system)
    assert app.account("alice").posted == 505
