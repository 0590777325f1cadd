"""A commit whose acknowledgement is lost (PostgreSQL committed it; its answer never reached the
writer, whose connection failed) is answered as recorded, once. It is never decided again on
the stored state that already holds it: that applied a partial failure credit twice, and
answered a whole one with a refusal while the store held the credit.

On the event loop and on a thread, for one command and for a batch: the writer finds the batch
stored as it sent it and answers each command where its events stand. A try that commits only
after the writer looked for it is found all the same (its versions taken). A commit the store
cannot confirm is told so (``CommitUnconfirmed``: the store not answering, 503), decided and
recorded no more, and its key answers it when it is sent again.

PostgreSQL only: on SQLite the writer commits in its own process, and no acknowledgement is
lost on the way."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import OperationalError, StoredEvent

from api.handlers import STATUS_OF_OUTCOME
from api.problems import status_of
from ledger.application import LedgerApplication
from ledger.commands import Command, FailPurchase
from ledger.idempotency import KeyWrite
from ledger.identity import Actor
from ledger.pipeline import CommitUnconfirmed
from ledger.settings import StoreSettings
from projections.audit import verify
from projections.loopwriter import LoopWriter, writing_on_loop
from projections.store import (
    RECORD_ATTEMPTS,
    SealingPostgresRecorder,
    TornBatch,
    application_env,
    open_application,
    schema_lock,
    wire,
)
from tests.app.conftest import last_position, open_funded

on_postgres = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
pytestmark = on_postgres

LOST = "server closed the connection unexpectedly"


class AckLosingRecorder(SealingPostgresRecorder):
    """The event store's recorder, with the faults a test sets, each for its next commits:

    - ``acks_to_lose``: the commit is made, then its caller hears the connection fail (the
      server committed; the connection broke before its answer arrived). ``lost`` names where.
    - ``commits_late``: the try is sent and its caller hears it fail (on the event loop: the
      statement timed out), but it was still running on the server: it commits just after
      the writer's next look for it, or before its next try if it does not look.
    - ``looks_to_fail``: the writer's looks for a commit fail as the connection does.
    """

    record_retry_wait_s = 0.001  # bounded by ``record_attempts`` as in service, without waits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acks_to_lose = 0
        self.commits_late = 0
        self.looks_to_fail = 0
        self.lost: list[str] = []
        self._late: list[tuple[Sequence[StoredEvent], Sequence[KeyWrite]]] = []

    async def record_on(self, connection: psycopg.AsyncConnection[Any],
                        stored_events: Sequence[StoredEvent], keys: Sequence[KeyWrite],
                        ) -> list[int] | None:
        if self.commits_late:
            self.commits_late -= 1
            self._late.append((stored_events, keys))
            raise TimeoutError  # as ``asyncio.wait_for`` gives up on a slow statement
        ids = await super().record_on(connection, stored_events, keys)
        if ids is not None and self.acks_to_lose:
            self.acks_to_lose -= 1
            self.lost.append("on the event loop")
            raise psycopg.OperationalError(LOST)
        return ids

    def _record_after(self, head: tuple[int, str], stored_events: Sequence[StoredEvent],
                      keys: Sequence[KeyWrite]) -> tuple[list[int], str]:
        self._commit_late()
        recorded = super()._record_after(head, stored_events, keys)
        self._lose_ack("in one statement")
        return recorded

    def _record_under_lock(self, stored_events: Sequence[StoredEvent],
                           keys: Sequence[KeyWrite]) -> tuple[list[int], str]:
        self._commit_late()
        recorded = super()._record_under_lock(stored_events, keys)
        self._lose_ack("under the writers' lock")
        return recorded

    def _lose_ack(self, where: str) -> None:
        if self.acks_to_lose:
            self.acks_to_lose -= 1
            self.lost.append(where)
            raise OperationalError(LOST)  # as eventsourcing's datastore raises psycopg's

    def _found_recorded(self, stored_events: Sequence[StoredEvent],
                        keys: Sequence[KeyWrite]) -> list[int] | None:
        if self.looks_to_fail:
            self.looks_to_fail -= 1
            raise OperationalError("the server does not answer")
        found = super()._found_recorded(stored_events, keys)
        self._commit_late()
        return found

    def _commit_late(self) -> None:
        while self._late:  # a try still running on the server commits now
            SealingPostgresRecorder._record_under_lock(self, *self._late.pop())


@pytest.fixture
def app(settings: StoreSettings) -> Iterator[LedgerApplication]:
    """The ledger on a fresh PostgreSQL store whose recorder is an ``AckLosingRecorder``."""
    env = application_env(settings, makes_tables=True)
    env["APPLICATION_RECORDER_TOPIC"] = f"{__name__}:{AckLosingRecorder.__name__}"
    with schema_lock(settings):
        application = LedgerApplication(env)
        wire(application, settings)
    try:
        yield application
    finally:
        application.close()


@pytest.fixture
def recorder(app: LedgerApplication) -> AckLosingRecorder:
    assert isinstance(app.recorder, AckLosingRecorder)
    return app.recorder


def open_with_order(app: LedgerApplication, actor: Actor, username: str = "alice") -> None:
    """``username``'s account: 1,000 deposited, an order ORD-1 of 100 paid (900 posted)."""
    open_funded(app, actor, username, amount=1_000)
    app.purchase(username, "ORD-1", 100, actor=actor)


def credited_back(app: LedgerApplication, username: str = "alice") -> int:
    """How much of ORD-1 the store holds credited back (read from the store)."""
    return 100 - app.account(username).order_refundable("ORD-1")


async def answer(app: LedgerApplication, command: Command, actor: Actor,
                 key: str | None = None) -> tuple[int, dict[str, Any]]:
    """What the API answers a command (``api.handlers.command``): executed on the event loop
    first, else on a thread; its status and body (a refusal raises)."""
    outcome = await app.execute_on_loop(command, actor=actor, idempotency_key=key)
    if outcome is None:
        execute = functools.partial(app.execute, command, actor=actor, idempotency_key=key)
        outcome = await asyncio.get_running_loop().run_in_executor(None, execute)
    return STATUS_OF_OUTCOME[outcome.outcome], {**outcome.body, "position": outcome.position}


def recorder_of(writer: LoopWriter | None) -> Any:
    assert writer is not None
    return writer.recorder


# -- on the event loop ----------------------------------------------------------------------------


async def test_a_partial_failure_credit_whose_acknowledgement_is_lost_is_credited_once_201(
    app: LedgerApplication, recorder: AckLosingRecorder, settings: StoreSettings, system: Actor,
) -> None:
    open_with_order(app, system)
    async with writing_on_loop(app) as writer:
        recorder.acks_to_lose = 1

        status, body = await answer(app, FailPurchase("alice", "ORD-1", 30, "lost"), system)

        assert recorder.lost == ["on the event loop"]
        assert recorder_of(writer).connection_failures == 1
    assert status == 201
    assert body["account"]["posted"] == 930 and body["account"]["refundable"] == 930
    assert body["position"] == last_position(app)  # where it was first committed
    assert credited_back(app) == 30, "credited twice"
    assert app.account("alice").posted == 930
    assert recorder.found_recorded == 1
    assert verify(settings, app, read_models=False).problems == []


async def test_a_whole_failure_credit_whose_acknowledgement_is_lost_is_not_answered_a_refusal(
    app: LedgerApplication, recorder: AckLosingRecorder, system: Actor,
) -> None:
    open_with_order(app, system)
    async with writing_on_loop(app):
        recorder.acks_to_lose = 1

        status, body = await answer(app, FailPurchase("alice", "ORD-1", None, "lost"), system)

    assert recorder.lost == ["on the event loop"]
    assert status == 201 and body["account"]["posted"] == 1_000
    assert credited_back(app) == 100


async def test_a_batch_whose_acknowledgement_is_lost_answers_each_of_its_commands_once(
    app: LedgerApplication, recorder: AckLosingRecorder, settings: StoreSettings, system: Actor,
) -> None:
    names = ("alice", "bob", "carol")
    for name in names:
        open_with_order(app, system, name)
    before = last_position(app)
    async with writing_on_loop(app) as writer:
        assert writer is not None
        recorder.acks_to_lose = 1
        batches = writer.committer.batches

        answers = await asyncio.gather(*(
            answer(app, FailPurchase(name, "ORD-1", 10 * (n + 1), "lost"), system,
                   key="key-carol" if name == "carol" else None)
            for n, name in enumerate(names)))

        assert writer.committer.batches == batches + 1  # the three were one batch
        assert recorder.lost == ["on the event loop"] and recorder.found_recorded == 1
        again = await answer(app, FailPurchase("carol", "ORD-1", 30, "lost"), system,
                             key="key-carol")
    assert [status for status, _ in answers] == [201, 201, 201]
    assert [body["account"]["posted"] for _, body in answers] == [910, 920, 930]
    assert sorted(body["position"] for _, body in answers) == [before + 1, before + 2, before + 3]
    assert last_position(app) == before + 3  # nothing recorded twice
    assert [credited_back(app, name) for name in names] == [10, 20, 30]
    assert again == answers[2]  # its key holds the answer it was given
    assert verify(settings, app, read_models=False).problems == []


async def test_a_try_that_commits_after_the_writer_looked_for_it_is_answered_once(
    app: LedgerApplication, recorder: AckLosingRecorder, settings: StoreSettings, system: Actor,
) -> None:
    open_with_order(app, system)
    async with writing_on_loop(app):
        recorder.commits_late = 1

        status, body = await answer(app, FailPurchase("alice", "ORD-1", 30, "slow"), system)

    assert status == 201 and body["account"]["posted"] == 930
    assert body["position"] == last_position(app)
    assert credited_back(app) == 30
    assert recorder.found_recorded == 1  # found when its versions were found taken
    assert verify(settings, app, read_models=False).problems == []


# -- on a thread (eventsourcing's retry of a lost connection) ------------------------------------


@pytest.mark.parametrize("another_process_wrote", [False, True],
                         ids=["in one statement", "under the writers' lock"])
def test_on_a_thread_a_partial_failure_credit_whose_acknowledgement_is_lost_is_credited_once(
    app: LedgerApplication, recorder: AckLosingRecorder, settings: StoreSettings, system: Actor,
    another_process_wrote: bool,
) -> None:
    open_with_order(app, system)
    if another_process_wrote:  # this process no longer knows the log's head
        other = open_application(settings)
        try:
            open_funded(other, system, "bob")
        finally:
            other.close()
    recorder.acks_to_lose = 1

    outcome = app.fail_purchase("alice", "ORD-1", 30, "lost", actor=system)

    where = "under the writers' lock" if another_process_wrote else "in one statement"
    assert recorder.lost == [where]
    assert outcome.outcome == "created" and outcome.body["account"]["posted"] == 930
    assert outcome.position == last_position(app)
    assert credited_back(app) == 30, "credited twice"
    assert recorder.found_recorded == 1
    assert verify(settings, app, read_models=False).problems == []


def test_on_a_thread_a_whole_failure_credit_whose_acknowledgement_is_lost_is_not_refused(
    app: LedgerApplication, recorder: AckLosingRecorder, system: Actor,
) -> None:
    open_with_order(app, system)
    recorder.acks_to_lose = 1

    outcome = app.fail_purchase("alice", "ORD-1", None, "lost", actor=system)

    assert outcome.outcome == "created" and outcome.body["account"]["posted"] == 1_000
    assert credited_back(app) == 100


def test_a_commit_the_store_cannot_confirm_is_not_confirmed_and_its_key_answers_it_later(
    app: LedgerApplication, recorder: AckLosingRecorder, system: Actor,
) -> None:
    open_with_order(app, system)
    recorder.acks_to_lose = 1
    recorder.looks_to_fail = RECORD_ATTEMPTS  # no look is answered while the writer tries

    with pytest.raises(CommitUnconfirmed) as unconfirmed:
        app.fail_purchase("alice", "ORD-1", 30, "lost", actor=system, idempotency_key="k-1")

    assert status_of(unconfirmed.value) == 503  # the store not answering: send it again
    assert credited_back(app) == 30  # committed once, decided and recorded no more
    first_commit = last_position(app)
    recorder.looks_to_fail = 0
    again = app.fail_purchase("alice", "ORD-1", 30, "lost", actor=system, idempotency_key="k-1")
    assert again.replayed and again.outcome == "created"
    assert again.position == first_commit and again.body["account"]["posted"] == 930
    assert credited_back(app) == 30


# -- the look itself -----------------------------------------------------------------------------


def test_the_look_tells_this_batch_another_writer_s_and_a_torn_one_apart(
    app: LedgerApplication, recorder: AckLosingRecorder, system: Actor,
) -> None:
    open_with_order(app, system)
    alice = app.account("alice").id
    stored = list(recorder.select_events(alice))
    positions = [app.positions.position_of(alice, event.originator_version) for event in stored]
    elsewhere = replace(stored[-1], state=b'{"another": "writer"}')
    never = replace(stored[-1], originator_version=stored[-1].originator_version + 1)

    assert recorder._found_recorded(stored, []) == positions  # as sent: this batch, committed
    assert recorder._found_recorded([elsewhere], []) is None  # its version, another's state
    assert recorder._found_recorded([never], []) is None  # not stored at all
    with pytest.raises(TornBatch):  # part stored as sent, part not: a transaction torn
        recorder._found_recorded([*stored, never], [])
