"""``ledger rebuild`` (``projections.replay.rebuild``): dropping every read model and replaying the
log gives exactly the live read models (DOMAIN.md, invariant 4), on both stores; while a keeper
keeps them it swaps fresh ones in and the keeper goes on; and how fast it goes on PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections import accounts as accounts_module
from projections import replay as replay_module
from projections.accounts import AccountsProjection
from projections.leadership import LeadershipBusy, RebuildBusy, rebuilding
from projections.readmodels import PROJECTIONS, ReadModels, prepare_read_models
from projections.replay import (
    SHADOW_SCHEMA,
    differences,
    rebuild,
    replay,
    scratch_views,
    tables_of,
)
from projections.views import _to_sqlite
from tests.audit.conftest import Ledger, dump_read_models
from tests.audit.history import SYSTEM, History, RandomChooser
from tests.conftest import pg_url


def test_a_rebuild_after_a_random_history_reproduces_every_read_model_row_for_row(
    ledger: Ledger,
) -> None:
    # given a random history the keeper has followed to the end
    History(ledger.app, RandomChooser(seed=5)).run(60)
    position = ledger.settle()
    ledger.stop_keeper()
    live = dump_read_models(ledger.settings)
    assert {name: tracked for name, (tracked, _) in live.items()} == dict.fromkeys(
        (p.name for p in PROJECTIONS), position
    )

    # when every read model is dropped and rebuilt from the log
    report = rebuild(ledger.settings, ledger.app)

    # then each table holds the same rows, and the same tracked position
    assert report.events == position
    rebuilt = dump_read_models(ledger.settings)
    for name, (tracked, tables) in live.items():
        assert rebuilt[name][0] == tracked, name
        for table, rows in tables.items():
            assert rows, f"{table} is empty: the history should touch every read model"
            assert rebuilt[name][1][table] == rows, f"{name}.{table} differs after the rebuild"


def test_a_rebuild_while_a_keeper_keeps_the_read_models_swaps_fresh_ones_in(
    ledger: Ledger,
) -> None:
    History(ledger.app, RandomChooser(seed=8)).run(10)
    position = ledger.read_models.wait_caught_up()
    assert ledger.keeper.is_leader.wait(10)
    # a live row gone wrong behind the keeper's back: only a rebuild puts it right
    username = _some_user(ledger)
    _execute(ledger, "UPDATE rm_accounts SET posted = posted + 1 WHERE username = %(u)s",
             {"u": username})
    assert ledger.read_models.account(username)["posted"] != _replayed_posted(ledger, username)

    report = rebuild(ledger.settings, ledger.app, lock_timeout_s=30)

    # the fresh read models are in, at the live position at least, and the row is right again
    assert report.events >= position
    assert all(at >= position for at in ledger.read_models.tracked().values())
    assert ledger.read_models.account(username)["posted"] == _replayed_posted(ledger, username)
    assert ledger.keeper.is_leader.is_set()  # the keeper was never stopped
    ledger.app.deposit(username, 5, "PAY-AFTER-REBUILD", actor=Actor("system:x", "r"))
    ledger.read_models.wait_caught_up()  # and it goes on keeping them
    ledger.stop_keeper()
    assert _differences_from_a_fresh_replay(ledger) == []


def _execute(ledger: Ledger, sql: str, params: dict[str, Any]) -> None:
    view: Any = ledger.read_models.views["accounts"]
    with view.datastore.transaction(commit=True) as cursor:
        cursor.execute(_to_sqlite(sql) if ledger.settings.kind == "sqlite" else sql, params)


def _replayed_posted(ledger: Ledger, username: str) -> int:
    with scratch_views((AccountsProjection,)) as views:
        replay(ledger.app, views)
        found = accounts_module.account(views[0][1], username)
        assert found is not None
        return int(found["posted"])


def _differences_from_a_fresh_replay(ledger: Ledger) -> list[str]:
    live = dump_read_models(ledger.settings)
    found = []
    with scratch_views() as views:
        replay(ledger.app, views)
        for projection, view in views:
            tracked, tables = view.dump(tables_of(projection))
            if tracked != live[projection.name][0]:
                found.append(f"{projection.name}: at {live[projection.name][0]}, not {tracked}")
            found += differences(live[projection.name][1], tables)
    return found


def _some_user(ledger: Ledger) -> str:
    row = ledger.read_models.views["accounts"].query("SELECT username FROM rm_accounts LIMIT 1")
    return str(row[0]["username"])


ACCOUNTS = 10
DEPOSITS_EACH = 500


def save_many_deposits(app: LedgerApplication, actor: Actor) -> dict[str, int]:
    """5,010 events in ten saves (the application's one-save-per-command path would take a
    PostgreSQL minute): every account's deposits recorded through the domain, saved at once."""
    posted = {}
    for n in range(ACCOUNTS):
        username = f"bulk.customer_{n}"
        app.open_account(username, "USD" if n % 2 else "JPY", actor=actor)
        account = app.account(username)
        for d in range(DEPOSITS_EACH):
            account.receive_deposit(1 + d, f"PAY-{d}", actor=actor)
        app.save(account)
        posted[username] = sum(range(1, DEPOSITS_EACH + 1))
    return posted


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_rebuild_of_five_thousand_events_on_postgresql_reports_its_pace(
    settings: StoreSettings,
    app: LedgerApplication,
    system: Actor,
    record_property: Callable[[str, Any], None],
) -> None:
    posted = save_many_deposits(app, system)
    prepare_read_models(settings)

    report = rebuild(settings, app)

    assert report.events == ACCOUNTS * (DEPOSITS_EACH + 1)
    assert report.events_per_second > 0
    record_property("rebuild_events", report.events)
    record_property("rebuild_events_per_second", round(report.events_per_second))
    print(
        f"\nrebuild on PostgreSQL: {report.events} events in {report.seconds:.2f} s"
        f" = {report.events_per_second:,.0f} events/s"
    )
    models = ReadModels(settings, app, pool_size=1)
    try:
        assert set(models.tracked().values()) == {report.events}
        for username, amount in posted.items():
            account = models.account(username)
            assert account is not None and account["posted"] == amount
    finally:
        models.close()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_rebuild_keeps_what_other_roles_may_do_with_the_read_models(
    settings: StoreSettings, app: LedgerApplication, system: Actor
) -> None:
    # given a role (the service's, under least privilege) granted rights on read-model tables
    app.open_account("granted", "USD", actor=system)
    prepare_read_models(settings)
    role = f"ledger_rebuild_test_{uuid.uuid4().hex[:8]}"
    pg = settings.postgres
    with psycopg.connect(dbname=pg["POSTGRES_DBNAME"], host=pg["POSTGRES_HOST"],
                         port=pg["POSTGRES_PORT"], user=pg["POSTGRES_USER"],
                         password=pg["POSTGRES_PASSWORD"], autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role}")
        try:
            admin.execute(f"GRANT SELECT ON rm_accounts TO {role}")
            admin.execute(f"GRANT SELECT, INSERT, UPDATE ON accounts_tracking TO {role}")
            admin.execute(f"CREATE ROLE {role}_owner")
            admin.execute(f"ALTER TABLE rm_orders OWNER TO {role}_owner")  # not the rebuild's

            # when the read models are rebuilt (fresh tables take the live ones' places)
            before = _oid(admin, "rm_accounts")
            rebuild(settings, app)
            assert _oid(admin, "rm_accounts") != before

            # then the role may do with the fresh tables what it could with the old ones
            def may(table: str, privilege: str) -> bool:
                row = admin.execute("SELECT has_table_privilege(%s, %s, %s)",
                                    (role, table, privilege)).fetchone()
                return bool(row and row[0])

            assert may("rm_accounts", "SELECT") and not may("rm_accounts", "UPDATE")
            assert all(may("accounts_tracking", p) for p in ("SELECT", "INSERT", "UPDATE"))
            assert not may("accounts_tracking", "DELETE")
            owner = admin.execute("SELECT pg_get_userbyid(relowner) FROM pg_class"
                                  " WHERE oid = 'rm_orders'::regclass").fetchone()
            assert owner == (f"{role}_owner",)
        finally:
            admin.execute(f"DROP OWNED BY {role}, {role}_owner")
            admin.execute(f"DROP ROLE IF EXISTS {role}")
            admin.execute(f"DROP ROLE IF EXISTS {role}_owner")


def _oid(connection: psycopg.Connection[Any], table: str) -> int:
    row = connection.execute("SELECT %s::regclass::oid", (table,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_second_rebuild_at_once_is_refused_and_touches_nothing(ledger: Ledger) -> None:
    History(ledger.app, RandomChooser(seed=3)).run(5)
    ledger.read_models.wait_caught_up()
    before = dump_read_models(ledger.settings)
    with rebuilding(ledger.settings):  # a rebuild runs
        with pytest.raises(RebuildBusy):
            rebuild(ledger.settings, ledger.app, lock_timeout_s=0.3)
    assert dump_read_models(ledger.settings) == before


# How long a step of the test waits for the next at most: far beyond each.
BLOCK_S = 20.0


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_read_waiting_behind_the_swap_sees_every_write_acknowledged_before_it_began(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, read_models = ledger.app, ledger.read_models
    app.open_account("ann", "USD", actor=SYSTEM)
    for n in range(5):
        app.deposit("ann", 100, f"PAY-{n}", actor=SYSTEM)
    ledger.settle()
    seen: dict[str, Any] = {}
    asked, go = threading.Event(), threading.Event()

    def read() -> None:  # as api.context.read_at: the position first, then one snapshot
        seen["target"] = read_models.wait_current(5.0)
        asked.set()
        go.wait(BLOCK_S)
        with read_models.one_snapshot():
            seen["account"] = read_models.account("ann")

    reader = threading.Thread(target=read, name="read-behind-the-swap", daemon=True)
    real_schema_lock, real_catch_up = replay_module.schema_lock, replay_module.catch_up_to

    @contextmanager
    def a_write_then_a_read(settings: StoreSettings) -> Iterator[None]:
        # Given a deposit acknowledged (and kept) after the rebuild's rounds, before its swap,
        # and a read that began after it
        app.deposit("ann", 7, "PAY-LATE", actor=SYSTEM)
        ledger.settle()
        reader.start()
        assert asked.wait(BLOCK_S)
        with real_schema_lock(settings):
            yield

    def once_the_read_waits(*args: Any, **kwargs: Any) -> int:
        # When the read's snapshot comes while the swap holds the live tables
        go.set()
        with psycopg.connect(pg_url(ledger.settings.postgres["POSTGRES_DBNAME"]),
                             autocommit=True) as watcher:
            for _ in range(int(BLOCK_S / 0.01)):  # bounded: until the read waits for a lock
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()").fetchone()
                if row is not None and row[0] > 0:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the read never waited for the swap's locks")
        return int(real_catch_up(*args, **kwargs))

    monkeypatch.setattr(replay_module, "schema_lock", a_write_then_a_read)
    monkeypatch.setattr(replay_module, "catch_up_to", once_the_read_waits)
    rebuild(ledger.settings, app, lock_timeout_s=30)
    reader.join(BLOCK_S)
    # Then the read answers every write acknowledged before it began: the late deposit too
    assert not reader.is_alive()
    assert seen["target"] == app.recorder.max_notification_id()
    assert seen["account"] is not None and seen["account"]["posted"] == 507, seen


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_swap_that_cannot_lock_the_live_tables_gives_up_and_leaves_them_as_they_were(
    ledger: Ledger,
) -> None:
    History(ledger.app, RandomChooser(seed=4)).run(5)
    ledger.read_models.wait_caught_up()
    before = dump_read_models(ledger.settings)
    pg = ledger.settings.postgres
    with psycopg.connect(dbname=pg["POSTGRES_DBNAME"], host=pg["POSTGRES_HOST"],
                         port=pg["POSTGRES_PORT"], user=pg["POSTGRES_USER"],
                         password=pg["POSTGRES_PASSWORD"]) as reader:
        reader.execute("SELECT count(*) FROM rm_accounts")  # a long read holds the table
        with pytest.raises(LeadershipBusy, match="stayed locked"):
            rebuild(ledger.settings, ledger.app, lock_timeout_s=1.5)
        reader.rollback()
        left = reader.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (SHADOW_SCHEMA,)
        ).fetchone()
    assert left == (0,)  # the fresh read models were dropped
    assert dump_read_models(ledger.settings) == before
    username = _some_user(ledger)
    ledger.app.deposit(username, 5, "PAY-AFTER-GIVING-UP", actor=Actor("system:x", "r"))
    ledger.read_models.wait_caught_up()  # the keeper goes on
