"""A full house is not an outage: one connection the server refuses for want of slots, while
the pool holds idle connections, refuses no request (``projections.pgpool.StoreOutage``). And
while the store is known to be gone, a pool's dead idle connections cost a request no more than
the one caller's own try, and a commit in doubt is answered at once rather than after every
attempt was refused the same way (CI saw a deposit answered after 6.8 s, in eleven warnings)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from psycopg_pool import PoolTimeout

from ledger.pipeline import CommitUnconfirmed
from ledger.settings import StoreSettings
from projections.pgpool import TRY_WAIT_S, outage_of
from projections.store import open_application
from tests.conftest import PG_ADMIN_URL


@pytest.fixture
def limited_store(tmp_path: Path) -> Iterator[tuple[str, StoreSettings]]:
    """A store of a role of its own, whose connection limit the test sets."""
    name = f"ledger_test_full_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{name}" LOGIN')
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    host = PG_ADMIN_URL.split("@", 1)[1].rsplit("/", 1)[0]
    settings = replace(StoreSettings.from_url(f"postgresql://{name}@{host}/{name}"),
                       chain_key_file=tmp_path / "chain.key")
    try:
        yield name, settings
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_a_connection_refused_for_want_of_slots_refuses_no_request_the_pool_can_serve(
    limited_store: tuple[str, StoreSettings],
) -> None:
    name, settings = limited_store
    app = open_application(settings)
    try:
        pool = app.recorder.datastore.pool  # type: ignore[attr-defined]
        size = pool.get_stats()["pool_size"]
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER ROLE "{name}" CONNECTION LIMIT {size}')
            try:
                # Given a burst: every connection busy, and one more asked for, which the pool
                # tries to open and the server refuses (too many connections for the role)
                held = [pool.getconn() for _ in range(size)]
                refused: list[BaseException] = []

                def one_more() -> None:
                    try:
                        pool.putconn(pool.getconn(2))
                    except PoolTimeout as error:
                        refused.append(error)

                grown = threading.Thread(target=one_more)
                grown.start()
                grown.join()
                assert refused, "the pool found a connection beyond the role's limit"
                for connection in held:
                    pool.putconn(connection)
                # Then reads go on, on the pool's idle connections (the slots still full)
                for _ in range(20):
                    assert app.recorder.select_events(uuid.uuid4()) == []
            finally:
                admin.execute(f'ALTER ROLE "{name}" CONNECTION LIMIT -1')
    finally:
        app.close()


def gone_but_for_idle_connections(name: str, settings: StoreSettings, pool: object) -> None:
    """The store as a pool finds it when PostgreSQL has gone away: this process knows it (a
    connection attempt found no server), the pool still holds its idle connections, which the
    server has ended, and no new one can be made."""
    held = [pool.getconn() for _ in range(2)]  # type: ignore[attr-defined]
    for connection in held:
        pool.putconn(connection)  # type: ignore[attr-defined]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER ROLE "{name}" CONNECTION LIMIT 0')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE usename = %s", (name,))
        for _ in range(600):  # ended, not only asked to end: each has said so to its socket
            ended = admin.execute("SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = %s",
                                  (name,)).fetchone()
            if ended and ended[0]:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the terminated backends did not end in 30 s")
    pg = settings.postgres
    outage_of(pg["POSTGRES_HOST"], pg["POSTGRES_PORT"], pg["POSTGRES_DBNAME"]).failed(
        psycopg.OperationalError("connection refused"))


def answered_again(name: str, settings: StoreSettings) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER ROLE "{name}" CONNECTION LIMIT -1')
    pg = settings.postgres
    outage_of(pg["POSTGRES_HOST"], pg["POSTGRES_PORT"], pg["POSTGRES_DBNAME"]).answered()


def test_in_an_outage_dead_idle_connections_cost_no_more_than_the_one_callers_try(
    limited_store: tuple[str, StoreSettings],
) -> None:
    name, settings = limited_store
    app = open_application(settings)
    try:
        pool = app.recorder.datastore.pool  # type: ignore[attr-defined]
        gone_but_for_idle_connections(name, settings, pool)
        # When a request is let in for the pool's idle connections, and they are dead
        with pytest.raises(PoolTimeout) as refused:
            pool.getconn()
        # Then it waited for a new one no longer than the one caller's own try (not the
        # pool's whole timeout, for a connection that cannot come)
        assert f"after {TRY_WAIT_S:.2f} sec" in str(refused.value)
    finally:
        answered_again(name, settings)
        app.close()


def test_in_an_outage_a_commit_in_doubt_is_answered_unconfirmed_at_once(
    limited_store: tuple[str, StoreSettings], caplog: pytest.LogCaptureFixture,
) -> None:
    name, settings = limited_store
    app = open_application(settings)
    try:
        gone_but_for_idle_connections(name, settings, app.recorder.datastore.pool)  # type: ignore[attr-defined]
        event = StoredEvent(originator_id=uuid.uuid4(), originator_version=1, topic="t",
                            state=b"{}")
        # When a batch whose try was cut off is to be settled (was it committed?)
        with caplog.at_level("WARNING", logger="projections.store"), \
                pytest.raises(CommitUnconfirmed, match="refuses connections"):
            app.recorder.insert_events_in_doubt([event], ())  # type: ignore[attr-defined]
        # Then it is answered unconfirmed (the caller may send it again under its key) once a
        # look is refused for the outage: not after every attempt the store refuses the same way
        # (each dead idle connection may cost a try first, and the wait for a new one)
        tries = [r.message for r in caplog.records if "a commit's connection failed" in r.message]
        assert not [said for said in tries if "has refused connections" in said], tries
        assert len(tries) < app.recorder.record_attempts  # type: ignore[attr-defined]
    finally:
        answered_again(name, settings)
        app.close()
