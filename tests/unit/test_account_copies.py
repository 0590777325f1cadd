"""The copy of an account a command is handed shares nothing that command can change,
the versions of its purchases included (they answer a purchase retried by its order number)."""

from __future__ import annotations

import copy

from ledger.account import Account
from ledger.identity import Actor


def test_a_purchase_decided_on_a_copy_leaves_the_original_s_purchase_versions_alone(
    account: Account, system: Actor
) -> None:
    # Given an account that has paid for one order (so it remembers a purchase version)
    account.receive_deposit(1_000, "PAY-1", actor=system)
    account.pay_purchase("ORD-1", 100, actor=system)
    account.collect_events()

    # When a command pays for another order on a copy (a decision that may yet be discarded)
    copied = copy.deepcopy(account)
    copied.pay_purchase("ORD-2", 200, actor=system)

    # Then the original knows nothing of that purchase, its version included
    assert "ORD-2" not in account.orders
    assert account.purchase_version("ORD-2") is None
    assert account.purchase_version("ORD-1") == copied.purchase_version("ORD-1") == 3
    assert copied.purchase_version("ORD-2") == 4
