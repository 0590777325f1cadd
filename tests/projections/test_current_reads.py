"""Current reads in one round trip on PostgreSQL (``projections.current``): one statement learns
where the log and the read models stand and fetches the rows; a read the read models have not
caught up with is asked again, and refused past its bound, never answered stale. An answer
kept while the log stands still is answered again after one look at the head, which reads
arriving together share, and never once the log has moved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection

from ledger.application import LedgerApplication
from ledger.errors import NotReady
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections import current
from projections.accounts import account_query, balance_query
from projections.current import CurrentReader, HeadLooks
from projections.readmodels import (
    MAX_PACE_S,
    PROJECTIONS,
    ReadModelKeeper,
    ReadModels,
    close_views,
    open_views,
    prepare_read_models,
)
from projections.replay import rebuild, replay

postgres = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)


class Counted:
    statements = 0
    answered = 0  # statements the server has answered


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> type[Counted]:
    original = AsyncConnection.execute

    async def execute(self: AsyncConnection[Any], *args: Any, **kwargs: Any) -> Any:
        Counted.statements += 1
        cursor = await original(self, *args, **kwargs)
        Counted.answered += 1
        return cursor

    Counted.statements = Counted.answered = 0
    monkeypatch.setattr(AsyncConnection, "execute", execute)
    return Counted


@pytest.fixture
async def reader(settings: StoreSettings) -> AsyncIterator[CurrentReader]:
    prepare_read_models(settings)
    current = CurrentReader(settings, [f"{p.name}_tracking" for p in PROJECTIONS])
    await current.open()
    try:
        yield current
    finally:
        await current.close()


@postgres
async def test_a_current_read_is_one_statement_and_reflects_every_acknowledged_write(
    app: LedgerApplication, read_models: ReadModels, reader: CurrentReader, counted: type[Counted],
    system: Actor,
) -> None:
    app.open_account("ann", "USD", actor=system)
    app.deposit("ann", 1_200, "PAY-1", actor=system)
    read_models.wait_caught_up()
    counted.statements = 0

    balance = await reader.fetch(balance_query("ann"), timeout_s=5)
    account = await reader.fetch(account_query("ann"), timeout_s=5)

    assert counted.statements == 2
    assert (balance["posted"], balance["available"]) == (1_200, 1_200)
    assert balance == read_models.balance("ann")  # the executor's way says the same
    assert account == read_models.account("ann")
    assert await reader.fetch(account_query("nobody"), timeout_s=5) is None


@postgres
async def test_a_read_the_read_models_have_not_caught_up_with_is_refused_not_stale(
    settings: StoreSettings, app: LedgerApplication, reader: CurrentReader, system: Actor,
) -> None:
    prepare_read_models(settings)  # and no keeper: the read models never reach the write
    app.open_account("bea", "USD", actor=system)

    with pytest.raises(NotReady):
        await reader.fetch(account_query("bea"), timeout_s=0.2)


@postgres
async def test_a_read_waits_for_the_writes_before_it_not_for_those_landing_meanwhile(
    settings: StoreSettings, app: LedgerApplication, reader: CurrentReader,
    counted: type[Counted], system: Actor,
) -> None:
    prepare_read_models(settings)  # no keeper: the test applies the log itself
    app.open_account("max", "USD", actor=system)  # position 1, acknowledged before the read
    reading = asyncio.ensure_future(reader.fetch(account_query("max"), timeout_s=5))
    for _ in range(5_000):  # bounded: until the read's first statement has been answered
        if counted.answered:
            break
        await asyncio.sleep(0.001)
    assert counted.answered and not reading.done()  # it saw the read models short of 1

    app.open_account("ned", "USD", actor=system)  # position 2: lands while the read waits
    views = open_views(settings, pool_size=2)
    try:
        replay(app, [(p, views[p.name]) for p in PROJECTIONS], upto=1)
    finally:
        close_views(views)

    assert (await reading)["username"] == "max"  # read models at 1 of 2: current for it


@postgres
async def test_a_read_has_a_keeper_pacing_its_batches_apply_the_writes_before_it_at_once(
    settings: StoreSettings, app: LedgerApplication, reader: CurrentReader, system: Actor,
) -> None:
    prepare_read_models(settings)
    # Given a keeper that, unasked, lets a whole second pass between one batch and the next
    keeper = ReadModelKeeper(settings, pace_s=MAX_PACE_S)
    keeper.start()
    try:
        app.open_account("ann", "USD", actor=system)
        # (once it has applied the opening: the half second below is for the read's ask, not
        # for the keeper's start, which a loaded machine can make longer)
        assert (await reader.fetch(balance_query("ann"), timeout_s=30))["posted"] == 0
        for n in range(1, 4):
            # When a deposit follows the keeper's last batch at once
            app.deposit("ann", 100, f"PAY-{n}", actor=system)
            # Then a read that began after it answers it, well within the keeper's pace: its
            # look found the read models behind and asked for them
            balance = await reader.fetch(balance_query("ann"), timeout_s=MAX_PACE_S / 2)
            assert balance["posted"] == 100 * n
    finally:
        keeper.stop()


# -- answers kept while the log stands still ---------------------------------------------------


@postgres
async def test_an_answer_asked_again_while_the_log_stands_still_costs_one_look(
    app: LedgerApplication, read_models: ReadModels, reader: CurrentReader, counted: type[Counted],
    system: Actor,
) -> None:
    app.open_account("cat", "USD", actor=system)
    app.deposit("cat", 700, "PAY-1", actor=system)
    read_models.wait_caught_up()
    first = await reader.fetch(balance_query("cat"), timeout_s=5)
    counted.statements = 0

    again = await reader.fetch(balance_query("cat"), timeout_s=5)

    assert again == first == read_models.balance("cat")
    assert (counted.statements, reader.heads.looks, reader.kept_answers) == (1, 1, 1)


@postgres
async def test_a_write_acknowledged_before_a_read_is_in_its_answer_though_one_was_kept(
    app: LedgerApplication, read_models: ReadModels, reader: CurrentReader, system: Actor,
) -> None:
    app.open_account("dan", "USD", actor=system)
    app.deposit("dan", 500, "PAY-1", actor=system)
    read_models.wait_caught_up()
    assert (await reader.fetch(balance_query("dan"), timeout_s=5))["posted"] == 500
    assert (await reader.fetch(account_query("dan"), timeout_s=5))["posted"] == 500

    app.deposit("dan", 250, "PAY-2", actor=system)  # acknowledged: the reader was not told
    balance = await reader.fetch(balance_query("dan"), timeout_s=5)
    account = await reader.fetch(account_query("dan"), timeout_s=5)

    assert (balance["posted"], account["posted"]) == (750, 750)
    assert reader.kept_answers == 0


@postgres
async def test_a_kept_answer_is_not_answered_once_a_rebuild_put_the_read_models_anew(
    settings: StoreSettings, app: LedgerApplication, read_models: ReadModels,
    reader: CurrentReader, system: Actor,
) -> None:
    # Given an account answered from a row changed behind the service's back, and kept
    app.open_account("fay", "USD", actor=system)
    app.deposit("fay", 400, "PAY-1", actor=system)
    read_models.wait_caught_up()
    view = read_models.views["accounts"]
    with view.datastore.transaction(commit=True) as cursor:
        cursor.execute("UPDATE rm_accounts SET posted = 1 WHERE username = 'fay'")
    assert (await reader.fetch(account_query("fay"), timeout_s=5))["posted"] == 1
    # When a rebuild puts the read models right, the log standing still
    rebuild(settings, app, lock_timeout_s=30)
    # Then the account is read again from them, not answered as kept
    assert (await reader.fetch(account_query("fay"), timeout_s=5))["posted"] == 400
    assert reader.kept_answers == 0


@postgres
async def test_a_kept_answer_is_not_answered_once_the_log_moved_past_the_read_models(
    settings: StoreSettings, app: LedgerApplication, reader: CurrentReader, system: Actor,
) -> None:
    prepare_read_models(settings)  # and no keeper: the read models never reach the write
    assert await reader.fetch(account_query("eve"), timeout_s=5) is None  # kept: none

    app.open_account("eve", "USD", actor=system)

    with pytest.raises(NotReady):
        await reader.fetch(account_query("eve"), timeout_s=0.2)
    assert reader.kept_answers == 0


@postgres
async def test_while_the_log_moves_a_kept_answer_older_than_it_is_read_again_without_a_look(
    app: LedgerApplication, read_models: ReadModels, reader: CurrentReader, counted: type[Counted],
    system: Actor,
) -> None:
    app.open_account("kim", "USD", actor=system)
    read_models.wait_caught_up()
    await reader.fetch(account_query("kim"), timeout_s=5)  # kept
    app.open_account("lee", "USD", actor=system)
    await reader.fetch(account_query("lee"), timeout_s=5)  # a read sees the log moved on
    counted.statements = 0

    assert (await reader.fetch(account_query("kim"), timeout_s=5))["username"] == "kim"
    assert (counted.statements, reader.heads.looks, reader.kept_answers) == (1, 0, 0)


@postgres
async def test_reads_arriving_together_share_one_look(
    app: LedgerApplication, read_models: ReadModels, reader: CurrentReader, counted: type[Counted],
    system: Actor,
) -> None:
    names = [f"fay{n}" for n in range(20)]
    for n, name in enumerate(names):
        app.open_account(name, "USD", actor=system)
        app.deposit(name, 100 + n, "PAY-1", actor=system)
    read_models.wait_caught_up()
    for name in names:
        await reader.fetch(balance_query(name), timeout_s=5)
    counted.statements = 0

    answers = await asyncio.gather(
        *(reader.fetch(balance_query(name), timeout_s=5) for name in names))

    assert [a["posted"] for a in answers] == [100 + n for n in range(len(names))]
    assert (counted.statements, reader.heads.looks, reader.kept_answers) == (1, 1, 20)


@postgres
async def test_a_failed_look_reads_in_full(
    app: LedgerApplication, read_models: ReadModels, reader: CurrentReader, counted: type[Counted],
    system: Actor,
) -> None:
    app.open_account("gus", "USD", actor=system)
    read_models.wait_caught_up()
    await reader.fetch(account_query("gus"), timeout_s=5)

    async def broken() -> tuple[int, int]:
        raise psycopg.OperationalError("the connection was lost")

    reader.heads = HeadLooks(broken)
    counted.statements = 0

    assert (await reader.fetch(account_query("gus"), timeout_s=5))["username"] == "gus"
    assert (counted.statements, reader.kept_answers) == (1, 0)


@postgres
async def test_the_kept_answers_are_bounded_the_least_recently_asked_dropped_first(
    app: LedgerApplication, read_models: ReadModels, reader: CurrentReader,
    monkeypatch: pytest.MonkeyPatch, system: Actor,
) -> None:
    monkeypatch.setattr(current, "MAX_KEPT_ANSWERS", 2)
    for name in ("hal", "ida", "joe"):
        app.open_account(name, "USD", actor=system)
    read_models.wait_caught_up()
    for name in ("hal", "ida", "hal", "joe"):  # ida is the least recently asked
        await reader.fetch(account_query(name), timeout_s=5)

    for name in ("hal", "joe", "ida"):
        await reader.fetch(account_query(name), timeout_s=5)

    assert reader.kept_answers == 3  # hal once, then hal and joe; ida was dropped: read again
    assert reader.kept == 2


# -- looks at the head, shared (no store) --------------------------------------------------------


class Looks:
    """A look at the head the test lets end: each answers its own number."""

    def __init__(self) -> None:
        self.begun = 0
        self.may_end: list[asyncio.Event] = []

    async def __call__(self) -> tuple[int, int]:
        self.begun += 1
        number = self.begun
        self.may_end.append(asyncio.Event())
        await self.may_end[number - 1].wait()
        return number, number

    async def end(self, number: int) -> None:
        for _ in range(100):  # bounded: the look begins within a few turns of the loop
            if len(self.may_end) >= number:
                break
            await asyncio.sleep(0)
        self.may_end[number - 1].set()


async def test_a_read_asking_while_a_look_is_under_way_gets_the_next_look() -> None:
    looks = Looks()
    heads = HeadLooks(looks)
    early = asyncio.ensure_future(heads.after_now())
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first look has begun
    assert looks.begun == 1
    late = asyncio.ensure_future(heads.after_now())

    await looks.end(1)
    assert await early == (1, 1)
    assert not late.done()  # the first look may have been sent before it asked
    await looks.end(2)
    assert await late == (2, 2)
    assert heads.looks == 2


async def test_a_read_that_gives_up_does_not_end_the_look_of_the_others() -> None:
    looks = Looks()
    heads = HeadLooks(looks)
    leaving = asyncio.ensure_future(heads.after_now())
    staying = asyncio.ensure_future(heads.after_now())
    await asyncio.sleep(0)
    await asyncio.sleep(0)

    leaving.cancel()
    await looks.end(1)

    assert await staying == (1, 1)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    await heads.close()
