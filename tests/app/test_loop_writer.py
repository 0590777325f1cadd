"""Writes on the event loop (``projections.loopwriter``): on PostgreSQL a command on an account
this process holds is decided and committed on the event loop, in one statement, and commands
on one account wait there for each other; another
process's write in between, a version taken first, a lost connection and an account this
process does not hold are each met as on a thread, and the history stays whole. On SQLite
nothing is committed on the loop."""

from __future__ import annotations

import asyncio
import functools

import psycopg
import pytest

from ledger.application import LedgerApplication
from ledger.commands import Deposit
from ledger.identity import Actor
from ledger.pipeline import Outcome
from ledger.settings import StoreSettings
from projections import loopwriter
from projections.audit import verify
from projections.loopwriter import LoopRecorder, LoopWriter, writing_on_loop
from projections.store import open_application
from tests.app.conftest import last_position, open_funded
from tests.conftest import PG_ADMIN_URL

on_postgres = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)


async def on_a_thread(app: LedgerApplication, command: Deposit, actor: Actor) -> Outcome:
    """``app.execute`` as a request's job runs it: on a thread, not the event loop's."""
    execute = functools.partial(app.execute, command, actor=actor)
    return await asyncio.get_running_loop().run_in_executor(None, execute)


def recorder_of(writer: LoopWriter | None) -> LoopRecorder:
    assert writer is not None
    return writer.recorder


@on_postgres
async def test_a_deposit_is_decided_and_committed_on_the_event_loop_in_one_statement(
    app: LedgerApplication, settings: StoreSettings, system: Actor,
) -> None:
    open_funded(app, system)
    async with writing_on_loop(app) as writer:
        outcome = await app.execute_on_loop(Deposit("alice", 100, "PAY-2"), actor=system)

        assert outcome is not None and outcome.outcome == "created"
        assert outcome.position == last_position(app)
        assert recorder_of(writer).statements == 1
        assert recorder_of(writer).on_thread == 0
    assert app.account("alice").posted == 2_100
    assert verify(settings, app, read_models=False).problems == []


@on_postgres
async def test_deposits_to_one_account_at_once_wait_for_each_other_on_the_event_loop(
    app: LedgerApplication, settings: StoreSettings, system: Actor,
) -> None:
    open_funded(app, system)
    before = last_position(app)
    async with writing_on_loop(app):
        outcomes = await asyncio.gather(*(
            app.execute_on_loop(Deposit("alice", 100, f"PAY-{n}"), actor=system)
            for n in range(5)))

    assert all(outcome is not None for outcome in outcomes)  # none went to a thread
    assert sorted(o.position for o in outcomes if o) == list(range(before + 1, before + 6))
    assert app.account("alice").posted == 2_500
    assert verify(settings, app, read_models=False).problems == []


@on_postgres
async def test_another_process_s_write_in_between_is_found_and_the_batch_placed_after_it(
    app: LedgerApplication, settings: StoreSettings, system: Actor,
) -> None:
    open_funded(app, system)
    other = open_application(settings)
    try:
        async with writing_on_loop(app) as writer:
            open_funded(other, system, "bob")  # the position this process expects is taken
            outcome = await app.execute_on_loop(Deposit("alice", 100, "PAY-2"), actor=system)
            again = await app.execute_on_loop(Deposit("alice", 100, "PAY-3"), actor=system)

            assert outcome is not None and again is not None
            assert again.position == outcome.position + 1 == last_position(app)
            assert recorder_of(writer).on_thread == 1  # under the writers' lock, once
            assert recorder_of(writer).statements == 1  # then the head is known again
    finally:
        other.close()
    assert app.account("alice").posted == 2_200
    assert verify(settings, app, read_models=False).problems == []


@on_postgres
async def test_a_version_another_process_took_first_is_decided_again_not_applied_on_stale_state(
    app: LedgerApplication, settings: StoreSettings, system: Actor,
) -> None:
    open_funded(app, system)
    other = open_application(settings)
    try:
        async with writing_on_loop(app):
            app.account("alice")  # this process holds alice as she was
            other.deposit("alice", 500, "PAY-OTHER", actor=system)

            on_loop = await app.execute_on_loop(Deposit("alice", 100, "PAY-2"), actor=system)
            assert on_loop is None  # refused by the store, nothing recorded: to the thread
            on_thread = await on_a_thread(app, Deposit("alice", 100, "PAY-2"), system)
    finally:
        other.close()
    assert on_thread.position == last_position(app)
    assert app.account("alice").posted == 2_600
    assert verify(settings, app, read_models=False).problems == []


@on_postgres
async def test_a_lost_connection_loses_no_write_and_is_made_again(
    app: LedgerApplication, settings: StoreSettings, system: Actor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loopwriter, "RECONNECT_AFTER_S", 0.0)
    open_funded(app, system)
    async with writing_on_loop(app) as writer:
        record = recorder_of(writer)
        assert await app.execute_on_loop(Deposit("alice", 100, "PAY-2"), actor=system)
        connection = record._connection
        assert connection is not None
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (connection.info.backend_pid,))

        lost = await app.execute_on_loop(Deposit("alice", 100, "PAY-3"), actor=system)
        made_again = await app.execute_on_loop(Deposit("alice", 100, "PAY-4"), actor=system)

        assert lost is not None and made_again is not None
        assert made_again.position == lost.position + 1 == last_position(app)
        assert record.on_thread == 1 and record.statements == 2
        assert record.connection_failures == 1
        assert record._connection is not None and record._connection is not connection
    assert app.account("alice").posted == 2_300
    assert verify(settings, app, read_models=False).problems == []


@on_postgres
async def test_an_account_this_process_does_not_hold_is_decided_on_a_thread(
    app: LedgerApplication, settings: StoreSettings, system: Actor,
) -> None:
    other = open_application(settings)
    try:
        open_funded(other, system, "bob")
    finally:
        other.close()
    async with writing_on_loop(app):
        before = last_position(app)

        assert await app.execute_on_loop(Deposit("bob", 100, "PAY-2"), actor=system) is None
        assert last_position(app) == before
        await on_a_thread(app, Deposit("bob", 100, "PAY-2"), system)  # reads bob from the store
        again = await app.execute_on_loop(Deposit("bob", 100, "PAY-3"), actor=system)

    assert again is not None and again.position == last_position(app)
    assert app.account("bob").posted == 2_200


@on_postgres
async def test_a_command_decided_on_a_thread_is_committed_by_the_loop_s_committer(
    app: LedgerApplication, system: Actor,
) -> None:
    open_funded(app, system)
    async with writing_on_loop(app) as writer:
        assert writer is not None
        await on_a_thread(app, Deposit("alice", 100, "PAY-2"), system)
    assert writer.committer.commands == 1
    assert app.account("alice").posted == 2_100


@on_postgres
async def test_a_thread_s_command_late_for_the_loop_s_committer_is_committed_on_its_thread(
    app: LedgerApplication, system: Actor,
) -> None:
    open_funded(app, system)
    async with writing_on_loop(app) as writer:
        assert writer is not None
    # The loop handed the commits back and closed its recorder; a thread that read the loop's
    # committer just before still holds it
    app.committer.on_loop = writer.committer
    try:
        outcome = await on_a_thread(app, Deposit("alice", 100, "PAY-LATE"), system)
    finally:
        app.committer.on_loop = None
    # It is committed on its thread, once, and nothing went through the loop's closed recorder
    assert outcome.outcome == "created" and outcome.position == last_position(app)
    assert (writer.committer.commands, writer.recorder.statements) == (0, 0)
    assert app.account("alice").posted == 2_100


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_on_sqlite_nothing_is_committed_on_the_event_loop(
    app: LedgerApplication, system: Actor,
) -> None:
    open_funded(app, system)
    async with writing_on_loop(app) as writer:
        assert writer is None
        assert await app.execute_on_loop(Deposit("alice", 100, "PAY-2"), actor=system) is None
    assert app.account("alice").posted == 2_000
