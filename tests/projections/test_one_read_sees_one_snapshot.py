"""The queries of one read see the read models at one moment (PostgreSQL): CS asking what a
customer can get back is shown a balance and the orders it comes from as they stood together,
never a balance that counts a purchase beside orders that do not list it yet.

PostgreSQL only: there every read model commits its batch in one transaction, so one snapshot
holds them all together. On SQLite each read model has its file and commits in turn; a read of
several of them may see one a batch ahead of another (README, "Reads").
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ledger.application import LedgerApplication
from ledger.identity import Actor
from projections.readmodels import ReadModels


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
def test_a_purchase_kept_between_two_queries_of_one_read_shows_in_neither(
    app: LedgerApplication, read_models: ReadModels, system: Actor
) -> None:
    # Given a customer with a deposit, the read models current
    app.open_account("ivy", "USD", actor=system)
    app.deposit("ivy", 1_000, "pay-1", actor=system)
    read_models.wait_caught_up()

    def purchase_kept() -> None:  # another request's write, kept by the keeper meanwhile
        app.purchase("ivy", "order-1", 400, actor=system)
        read_models.wait_caught_up()

    # When one read asks for the balance, then (after a purchase is kept) for the orders
    with ThreadPoolExecutor(1) as other, read_models.one_snapshot():
        balance = read_models.account("ivy")
        other.submit(purchase_kept).result()
        orders = read_models.orders("ivy", limit=10, after=None).items

    # Then both answers are of the same moment: the purchase is in neither
    assert balance is not None and balance["posted"] == 1_000
    assert orders == []
    # and the next read sees it in both
    with read_models.one_snapshot():
        balance = read_models.account("ivy")
        orders = read_models.orders("ivy", limit=10, after=None).items
    assert balance is not None and balance["posted"] == 600
    assert [o["order_no"] for o in orders] == ["order-1"]
