"""A read that waits behind a lock on a read model's table (a rebuild's swap holds every one of
them, ACCESS EXCLUSIVE, while it applies the last events; an operator's DDL does too) ends at
its bound (API.md: 503 when the read models cannot answer within 5 s), on the async pool and on
the executor's; it does not wait for as long as the lock is held."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest
from eventsourcing.persistence import OperationalError as StoreOperationalError

from ledger.application import LedgerApplication
from ledger.errors import NotReady
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.accounts import account_query
from projections.current import CurrentReader
from projections.readmodels import PROJECTIONS, ReadModels
from tests.conftest import pg_url

postgres = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
BOUND_S = 0.5
# Far past the bound: a read still waiting then waits for the lock, not for its bound.
GIVE_UP_S = 10.0


@contextmanager
def swap_holding(settings: StoreSettings, table: str) -> Iterator[None]:
    """A transaction holding ``table`` as a rebuild's swap does, until the block ends."""
    with psycopg.connect(pg_url(settings.postgres["POSTGRES_DBNAME"])) as swap:
        swap.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            swap.rollback()


@postgres
@pytest.mark.parametrize("table", ["accounts_tracking", "rm_accounts"])
async def test_a_current_read_behind_a_held_table_answers_not_ready_at_its_bound(
    settings: StoreSettings, app: LedgerApplication, read_models: ReadModels, system: Actor,
    table: str,
) -> None:
    # Given an account the read models hold, and a reader that has answered it once
    app.open_account("ann", "USD", actor=system)
    read_models.wait_caught_up()
    reader = CurrentReader(settings, [f"{p.name}_tracking" for p in PROJECTIONS])
    await reader.open()
    try:
        assert (await reader.fetch(account_query("ann"), timeout_s=5))["username"] == "ann"
        app.deposit("ann", 100, "PAY-1", actor=system)  # the answer kept is not the log's now
        read_models.wait_caught_up()
        # When a read begins while a swap holds a read model's table
        with swap_holding(settings, table):
            read = asyncio.ensure_future(reader.fetch(account_query("ann"), timeout_s=BOUND_S))
            done, _ = await asyncio.wait([read], timeout=GIVE_UP_S)
            # Then it ends, refused as not ready, within its bound, the lock still held
            assert done, f"the read still waited {GIVE_UP_S} s behind the lock"
            with pytest.raises(NotReady):
                read.result()
        # And once the lock is gone, reads answer again
        assert (await reader.fetch(account_query("ann"), timeout_s=5))["posted"] == 100
    finally:
        await reader.close()


@postgres
@pytest.mark.parametrize("table", ["accounts_tracking", "rm_accounts"])
def test_an_executor_read_behind_a_held_table_is_refused_at_its_bound(
    settings: StoreSettings, app: LedgerApplication, read_models: ReadModels, system: Actor,
    table: str,
) -> None:
    app.open_account("bob", "USD", actor=system)
    read_models.wait_caught_up()
    models = ReadModels(settings, app, pool_size=1, lock_wait_s=BOUND_S)

    def read() -> object:
        models.wait_current(BOUND_S)
        return models.account("bob")

    try:
        with ThreadPoolExecutor(1) as pool, swap_holding(settings, table):
            answer = pool.submit(read)
            try:
                with pytest.raises((NotReady, StoreOperationalError)):
                    answer.result(timeout=GIVE_UP_S)
            except TimeoutError:
                pytest.fail(f"the read still waited {GIVE_UP_S} s behind the lock")
        account = models.account("bob")
        assert account is not None and account["username"] == "bob"
    finally:
        models.close()
