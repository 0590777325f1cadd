"""The event store as the service runs it: append-only in the database itself, durable, and
answering where each event stands in the log."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.audit import verify
from projections.store import StoreNotDurable, open_application
from tests.app.conftest import last_position, open_funded
from tests.conftest import PG_ADMIN_URL, pg_url

TAMPERING = {
    "update": "UPDATE {table} SET state = state",
    "delete": "DELETE FROM {table}",
}


def execute_behind_the_service_s_back(settings: StoreSettings, statement: str) -> None:
    """Run SQL on the store with a connection of its own, as an intruder or a careless DBA would."""
    if settings.kind == "sqlite":
        assert settings.sqlite_path is not None
        connection = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        try:
            connection.execute(statement.format(table="stored_events"))
        finally:
            connection.close()
        return
    with psycopg.connect(pg_url(settings.postgres["POSTGRES_DBNAME"]), autocommit=True) as pg:
        pg.execute(statement.format(table="ledger_events"))  # type: ignore[arg-type]


def stored_log(app: LedgerApplication) -> list[tuple[int, str, bytes]]:
    return [(n.id, n.topic, n.state) for n in app.recorder.select_notifications(start=1, limit=100)]


@pytest.mark.parametrize("tampering", TAMPERING.values(), ids=TAMPERING.keys())
def test_the_database_refuses_to_change_or_remove_stored_events(
    app: LedgerApplication, settings: StoreSettings, system: Actor, tampering: str,
) -> None:
    open_funded(app, system)
    before = stored_log(app)

    with pytest.raises((sqlite3.DatabaseError, psycopg.Error)) as refused:
        execute_behind_the_service_s_back(settings, tampering)

    assert "immutable" in str(refused.value)
    assert stored_log(app) == before
    assert app.account("alice").posted == 2_000


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_postgresql_refuses_to_truncate_the_stored_events(
    app: LedgerApplication, settings: StoreSettings, system: Actor,
) -> None:
    open_funded(app, system)
    before = stored_log(app)

    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="immutable"):
        execute_behind_the_service_s_back(settings, "TRUNCATE {table}")

    assert stored_log(app) == before


def test_a_second_process_opening_the_same_store_keeps_its_guards_and_sees_its_events(
    app: LedgerApplication, settings: StoreSettings, system: Actor,
) -> None:
    open_funded(app, system)
    other = open_application(settings)
    try:
        assert other.account("alice").posted == 2_000
        with pytest.raises((sqlite3.DatabaseError, psycopg.Error)):
            execute_behind_the_service_s_back(settings, TAMPERING["delete"])
    finally:
        other.close()


def test_the_position_of_a_stored_event_is_where_the_write_said_it_landed(
    app: LedgerApplication, system: Actor,
) -> None:
    opened = app.open_account("alice", "USD", actor=system)
    deposited = app.deposit("alice", 100, "PAY-1", actor=system)
    account = app.account("alice")

    assert app.positions.position_of(account.id, 1) == opened.position
    assert app.positions.position_of(account.id, 2) == deposited.position == last_position(app)


# -- durability --------------------------------------------------------------------------------


@pytest.fixture
def pg_database(settings: StoreSettings) -> str:
    return settings.postgres["POSTGRES_DBNAME"]


def set_on_database(database: str, setting: str, value: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" SET {setting} = {value}')  # type: ignore[arg-type]


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_the_ledger_refuses_to_start_on_postgresql_that_acknowledges_commits_not_on_disk(
    settings: StoreSettings, pg_database: str,
) -> None:
    set_on_database(pg_database, "synchronous_commit", "off")

    with pytest.raises(StoreNotDurable, match="synchronous_commit"):
        open_application(settings)


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("value", ["on", "local", "remote_write"])
def test_the_ledger_starts_on_postgresql_that_commits_to_disk(
    settings: StoreSettings, pg_database: str, value: str,
) -> None:
    set_on_database(pg_database, "synchronous_commit", value)

    app = open_application(settings)
    app.close()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_every_sqlite_connection_of_the_store_syncs_each_commit_to_disk(
    app: LedgerApplication, system: Actor,
) -> None:
    open_funded(app, system)
    pool = app.recorder.datastore.pool  # type: ignore[attr-defined]
    connections = [pool.get_connection(is_writer=False) for _ in range(3)]
    try:
        settings = {
            conn._sqlite_conn.execute("PRAGMA synchronous").fetchone()[0] for conn in connections
        }
        journal = {
            conn._sqlite_conn.execute("PRAGMA journal_mode").fetchone()[0] for conn in connections
        }
    finally:
        for conn in connections:
            pool.put_connection(conn)

    assert len({id(c) for c in connections}) == 3
    assert settings == {2}  # FULL
    assert journal == {"wal"}


# -- a write refused by the store ----------------------------------------------------------------


def test_a_write_the_store_refuses_leaves_nothing_behind_and_the_next_one_lands(
    settings: StoreSettings, app: LedgerApplication, system: Actor,
) -> None:
    """A save whose aggregate version another save took first is refused whole: no event, no
    link of the chain, no transaction left open on the connection it used."""
    app.open_account("alice", "USD", actor=system)
    account_id = app.account("alice").id
    first, second = (app.repository.get(account_id) for _ in range(2))
    first.receive_deposit(100, "PAY-1", actor=system)
    app.save(first)
    before = stored_log(app)

    second.receive_deposit(7, "PAY-2", actor=system)
    with pytest.raises(IntegrityError):
        app.save(second)

    assert stored_log(app) == before
    if settings.kind == "postgres":
        with psycopg.connect(pg_url(settings.postgres["POSTGRES_DBNAME"])) as pg:
            states = pg.execute(
                "SELECT state FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()").fetchall()
        assert ("idle in transaction",) not in states
        assert ("idle in transaction (aborted)",) not in states
    app.deposit("alice", 5, "PAY-3", actor=system)  # on the same pool: it is usable
    assert app.account("alice").available == 105
    assert verify(settings, app).problems == []
