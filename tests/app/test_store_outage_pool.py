"""A full house is not an outage: one connection the server refuses for want of slots, while
the pool holds idle connections, refuses no request (``projections.pgpool.StoreOutage``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from ledger.settings import StoreSettings
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
