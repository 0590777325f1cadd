"""Builders for domain tests: aggregates in memory, no store."""

from __future__ import annotations

import pytest

from ledger.account import Account
from ledger.identity import Actor


@pytest.fixture
def account(system: Actor) -> Account:
    """Alice's freshly opened USD account, its opening event already collected."""
    opened = Account.open("alice", "USD", actor=system)
    opened.collect_events()
    return opened


@pytest.fixture
def paid(account: Account, system: Actor) -> Account:
    """Alice deposited 2,000 and paid 1,500 for ORD-1: 500 available."""
    account.receive_deposit(2_000, "PAY-1", actor=system)
    account.pay_purchase("ORD-1", 1_500, actor=system)
    account.collect_events()
    return account


def balances(account: Account) -> tuple[int, int, int, int]:
    return account.posted, account.held, account.available, account.refundable


def state_of(account: Account) -> dict[str, object]:
    """Everything an account knows, to show that a refused command changed nothing."""
    return {
        "version": account.version,
        "balances": balances(account),
        "deposits": {k: list(v) for k, v in account.deposits.items()},
        "orders": {k: list(v) for k, v in account.orders.items()},
        "holds": dict(account.holds),
        "open_request_by_order": dict(account.open_request_by_order),
    }
