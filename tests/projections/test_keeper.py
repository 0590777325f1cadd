"""The keeper's loop, on both stores: a batch of events is applied once (the same batch applied
again is refused and changes nothing), on PostgreSQL for every read model or for none, only as
far as ``_admit`` lets it, and a failure never leaves the keeper dead; it wakes on a NOTIFY and,
when none comes, after its poll interval."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.process import BaseProcess

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, Notification

from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections import readmodels
from projections.readmodels import (
    ReadModelKeeper,
    ReadModels,
    prepare_read_models,
)
from projections.store import _SCHEMA_LOCK_KEY
from projections.wakeup import NUDGE, PostgresDoorbell
from tests.conftest import pg_url
from tests.projections.conftest import WAIT_S, applier, log, read_model_sql, wait_until


@contextmanager
def read_models(settings: StoreSettings, app: LedgerApplication) -> Iterator[ReadModels]:
    models = ReadModels(settings, app, pool_size=1)
    try:
        yield models
    finally:
        models.close()


def test_a_batch_applied_a_second_time_is_refused_and_changes_nothing(
    settings: StoreSettings, app: LedgerApplication, system: Actor
) -> None:
    prepare_read_models(settings)
    app.open_account("ann", "USD", actor=system)
    app.deposit("ann", 100, "pay-1", actor=system)
    events = log(app)

    with applier(settings, app) as first, applier(settings, app) as second:
        first.apply(events)
        with pytest.raises(IntegrityError):
            second.apply(events)  # it began where the first did: the tracking has moved

    with read_models(settings, app) as models:
        account = models.account("ann")
        assert account is not None and account["posted"] == 100
        assert len(models.history("ann", limit=10, after=None).items) == 2
        assert set(models.tracked().values()) == {events[-1].id}


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_on_postgresql_a_batch_commits_for_every_read_model_or_for_none(
    settings: StoreSettings, app: LedgerApplication, system: Actor
) -> None:
    prepare_read_models(settings)
    app.open_account("bea", "USD", actor=system)
    deposit = app.deposit("bea", 100, "pay-1", actor=system)
    # the journal already holds a row where the deposit's first posting goes
    read_model_sql(
        settings,
        "journal",
        [
            "INSERT INTO rm_journal (position, leg, type, account, amount, currency, username,"
            f" event_id, at) VALUES ({deposit.position}, 0, 'x', 'x', 1, 'USD', 'x', 'x', 'x')"
        ],
    )

    with applier(settings, app) as batches, pytest.raises(IntegrityError):
        batches.apply(log(app))

    with read_models(settings, app) as models:
        assert models.account("bea") is None  # the accounts' rows went with the journal's
        assert set(models.tracked().values()) == {0}


@pytest.mark.parametrize("events", [1, 70], ids=["a small batch", "a batch copied"])
def test_a_batch_another_keeper_applied_first_is_refused_whole(
    settings: StoreSettings, app: LedgerApplication, system: Actor, events: int
) -> None:
    """Two keepers (two processes) reading the same events: the tracking records move only
    from where a batch began, so the second batch is refused and applies nothing twice, whether
    its rows go in the pipeline (few) or by COPY (many)."""
    prepare_read_models(settings)
    app.open_account("cyd", "USD", actor=system)
    for n in range(events - 1):
        app.deposit("cyd", 100, f"pay-{n}", actor=system)
    batch = log(app)
    assert len(batch) == events
    with applier(settings, app) as first, applier(settings, app) as second:
        first.apply(batch)
        with pytest.raises(IntegrityError):
            second.apply(batch)

    with read_models(settings, app) as models:
        assert set(models.tracked().values()) == {batch[-1].id}
        shown = models.account("cyd")
        assert shown is not None and shown["posted"] == 100 * (events - 1)


class AdmittingUpTo(ReadModelKeeper):
    """A keeper whose ``_admit`` stops before a position, as one checking seals would."""

    def __init__(self, settings: StoreSettings, last: int) -> None:
        super().__init__(settings, lock_retry_s=0.1)
        self.last = last
        self.held_back = 0  # batches that had events after ``last``

    def _admit(self, after: int, notifications: Sequence[Notification]) -> Sequence[Notification]:
        sealed = super()._admit(after, notifications)
        admitted = [n for n in sealed if n.id <= self.last]
        self.held_back += len(admitted) < len(sealed)
        return admitted


def test_the_keeper_applies_what_admit_lets_through_and_nothing_after_it(
    settings: StoreSettings, app: LedgerApplication, system: Actor
) -> None:
    prepare_read_models(settings)
    app.open_account("cat", "USD", actor=system)
    first = app.deposit("cat", 100, "pay-1", actor=system)
    app.deposit("cat", 50, "pay-2", actor=system)
    keeper = AdmittingUpTo(settings, last=first.position)
    keeper.start()
    try:
        with read_models(settings, app) as models:
            wait_until(lambda: set(models.tracked().values()) == {first.position})
            seen = keeper.held_back
            wait_until(lambda: keeper.held_back >= seen + 3)  # three batches later, still there
            assert set(models.tracked().values()) == {first.position}
            account = models.account("cat")
            assert account is not None and account["posted"] == 100
            assert keeper.is_leader.is_set()
    finally:
        keeper.stop()


REFUSE_HISTORY = {
    "sqlite": (
        [
            "CREATE TRIGGER refuse BEFORE INSERT ON rm_account_history"
            " BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
        ],
        ["DROP TRIGGER refuse"],
    ),
    "postgres": (
        [
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'refused for the test'; END $$",
            "CREATE TRIGGER refuse BEFORE INSERT ON rm_account_history"
            " FOR EACH ROW EXECUTE FUNCTION refuse()",
        ],
        ["DROP TRIGGER refuse ON rm_account_history", "DROP FUNCTION refuse()"],
    ),
}


def test_a_keeper_that_fails_starts_again_and_catches_up_once_the_fault_is_gone(
    settings: StoreSettings, app: LedgerApplication, system: Actor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    prepare_read_models(settings)
    keeper = ReadModelKeeper(settings, lock_retry_s=0.1)
    keeper.start()
    refuse, allow = REFUSE_HISTORY[settings.kind]

    def fresh_starts() -> int:
        return sum("starting again" in r.getMessage() for r in caplog.records
                   if r.name == readmodels.log.name)

    try:
        with read_models(settings, app) as models, caplog.at_level("WARNING", readmodels.log.name):
            app.open_account("dan", "USD", actor=system)
            models.wait_caught_up()
            read_model_sql(settings, "accounts", refuse)
            app.deposit("dan", 70, "pay-1", actor=system)
            wait_until(lambda: fresh_starts() >= 3)  # its batch refused, and again after a start
            assert models.tracked()["accounts"] < models.log_position()

            read_model_sql(settings, "accounts", allow)
            models.wait_caught_up(stall_timeout_s=WAIT_S)
            account = models.account("dan")
            assert account is not None and account["posted"] == 70
    finally:
        keeper.stop()


@pytest.fixture
def bell(settings: StoreSettings) -> Iterator[PostgresDoorbell]:
    """A doorbell listening on the events' channel (PostgreSQL)."""
    doorbell = PostgresDoorbell(settings)
    with doorbell.listening("ledger_events"):
        yield doorbell


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_the_doorbell_rings_on_a_notify_and_otherwise_after_its_pause(
    bell: PostgresDoorbell, app: LedgerApplication, system: Actor
) -> None:
    started = time.monotonic()
    bell.wait(0.3)  # nothing written: the pause passes
    assert time.monotonic() - started >= 0.29

    app.open_account("eve", "USD", actor=system)
    started = time.monotonic()
    bell.wait(WAIT_S)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_keeper_pacing_its_batches_applies_at_once_when_a_read_finds_it_behind(
    settings: StoreSettings, app: LedgerApplication, system: Actor
) -> None:
    prepare_read_models(settings)
    # Given a keeper that, unasked, lets a whole second pass between one batch and the next
    keeper = ReadModelKeeper(settings, pace_s=readmodels.MAX_PACE_S)
    keeper.start()
    within = readmodels.MAX_PACE_S / 2
    try:
        with read_models(settings, app) as models:
            app.open_account("ann", "USD", actor=system)
            head = models.log_position()
            # (looking at where the read models stand asks for nothing: the pace passes)
            wait_until(lambda: min(models.tracked().values()) >= head)

            # When a write follows its last batch at once, while no one reads
            app.deposit("ann", 100, "PAY-1", actor=system)
            head = models.log_position()
            # Then the read models stay behind it
            assert min(models.tracked().values()) < head
            # and a read that finds them behind has them at once, well within the pace
            started = time.monotonic()
            assert models.wait_current(timeout_s=within) >= head
            assert time.monotonic() - started < within

            # And while readers ask, each write is applied at its notice, unasked
            app.deposit("ann", 100, "PAY-2", actor=system)
            head = models.log_position()
            wait_until(lambda: min(models.tracked().values()) >= head, timeout_s=within)
    finally:
        keeper.stop()


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_the_doorbell_holds_until_its_time_or_until_a_reader_wants_the_read_models(
    bell: PostgresDoorbell, settings: StoreSettings, app: LedgerApplication, system: Actor
) -> None:
    with psycopg.connect(pg_url(settings.postgres["POSTGRES_DBNAME"]),
                         autocommit=True) as reader:
        started = time.monotonic()
        app.open_account("eve", "USD", actor=system)
        bell.hold(since=started, until=started + 0.3)  # new events do not end a hold
        assert time.monotonic() - started >= 0.29

        reader.execute(f"SELECT {NUDGE}")  # a reader asking does
        started = time.monotonic()
        bell.hold(since=started, until=started + WAIT_S)
        assert time.monotonic() - started < WAIT_S / 2
        assert bell.asked_at >= started

        started = time.monotonic()  # and one asking before it began does not
        bell.hold(since=started, until=started + 0.3)
        assert time.monotonic() - started >= 0.29


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_the_keeper_makes_its_application_under_the_schema_lock(
    settings: StoreSettings, app: LedgerApplication, system: Actor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its recorder runs eventsourcing's DDL as it is made (CREATE OR REPLACE FUNCTION among
    # it): run at the same moment as another process's (``ledger staff add`` beside a server
    # starting), PostgreSQL failed one with "tuple concurrently updated". Every process makes
    # it holding the schema lock; here, the database says whether it is held at that moment.
    prepare_read_models(settings)
    held: list[int] = []

    def made(env: dict[str, str]) -> LedgerApplication:
        with psycopg.connect(pg_url(settings.postgres["POSTGRES_DBNAME"])) as db:
            row = db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                             " AND objid = %s AND granted", (_SCHEMA_LOCK_KEY,)).fetchone()
        held.append(0 if row is None else row[0])
        return LedgerApplication(env)

    monkeypatch.setattr(readmodels, "LedgerApplication", made)
    app.open_account("gus", "USD", actor=system)
    keeper = ReadModelKeeper(settings, lock_retry_s=0.1)  # a thread: made in this process
    keeper.start()
    try:
        with read_models(settings, app) as models:
            models.wait_caught_up(stall_timeout_s=WAIT_S)
            assert models.account("gus") is not None
    finally:
        keeper.stop()
    assert held == [1]


def keeper_children() -> list[BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "read-model-keeper"]


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_keeper_in_a_child_process_keeps_the_read_models_and_is_replaced_when_it_dies(
    settings: StoreSettings, app: LedgerApplication, system: Actor
) -> None:
    prepare_read_models(settings)
    keeper = ReadModelKeeper(settings, lock_retry_s=0.1, in_child_process=True)
    keeper.start()
    try:
        with read_models(settings, app) as models:
            app.open_account("fay", "USD", actor=system)
            app.deposit("fay", 40, "pay-1", actor=system)
            models.wait_caught_up(stall_timeout_s=WAIT_S)
            assert keeper.is_leader.is_set()
            [child] = keeper_children()
            assert child.pid is not None and child.pid != os.getpid()

            os.kill(child.pid, signal.SIGKILL)  # this process goes on leading: a new child
            wait_until(lambda: [c.pid for c in keeper_children()] not in ([], [child.pid]))
            app.deposit("fay", 2, "pay-2", actor=system)
            models.wait_caught_up(stall_timeout_s=WAIT_S)
            account = models.account("fay")
            assert account is not None and account["posted"] == 42
    finally:
        keeper.stop()
    assert keeper_children() == []
