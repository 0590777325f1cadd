"""Current reads in one round trip on PostgreSQL (``projections.current``): one statement learns
where the log and the read models stand and fetches the rows; a read the read models have not
caught up with is asked again, and refused past its bound, never answered stale."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import AsyncConnection

from ledger.application import LedgerApplication
from ledger.errors import NotReady
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.accounts import account_query, balance_query
from projections.current import CurrentReader
from projections.readmodels import PROJECTIONS, ReadModels, prepare_read_models

pytestmark = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)


class Counted:
    statements = 0


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> type[Counted]:
    original = AsyncConnection.execute

    async def execute(self: AsyncConnection[Any], *args: Any, **kwargs: Any) -> Any:
        Counted.statements += 1
        return await original(self, *args, **kwargs)

    Counted.statements = 0
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


async def test_a_read_the_read_models_have_not_caught_up_with_is_refused_not_stale(
    settings: StoreSettings, app: LedgerApplication, reader: CurrentReader, system: Actor,
) -> None:
    prepare_read_models(settings)  # and no keeper: the read models never reach the write
    app.open_account("bea", "USD", actor=system)

    with pytest.raises(NotReady):
        await reader.fetch(account_query("bea"), timeout_s=0.2)
