"""The double-entry journal: every money event as balanced postings (DOMAIN.md).

A posting is (chart account, amount) with debits positive and credits negative; the postings of
one event sum to zero, so the trial balance is zero at every position. The chart:

    clearing:deposits       asset      money received from customers, not yet settled
    clearing:payouts        asset      money paid back out to customers (credited as it leaves)
    customer:<user>         liability  what the shop owes the customer (their posted balance)
    orders:paid             expense    customer money spent on their orders
    suppliers:receivable    asset      return refunds the supplier owes the shop back
    revenue:freight         income     freight the customer bears on returns and exchanges

A failure credit reverses the order's expense; a return refund is owed back by the supplier.
Holds of open balance-refund requests move no money and post nothing.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ledger.account import Account

DEPOSITS = "clearing:deposits"
PAYOUTS = "clearing:payouts"
ORDERS_PAID = "orders:paid"
SUPPLIERS_RECEIVABLE = "suppliers:receivable"
FREIGHT_REVENUE = "revenue:freight"


def customer(username: str) -> str:
    return f"customer:{username}"


class Posting(NamedTuple):  # immutable, and quick to make: a replay makes two per event
    account: str
    amount: int  # minor units; debit > 0, credit < 0
    currency: str


# For each money event: (the account debited, the account credited); "customer" is the user's.
_ENTRIES: dict[type[Any], tuple[str, str]] = {
    Account.DepositReceived: (DEPOSITS, "customer"),
    Account.PurchasePaid: ("customer", ORDERS_PAID),
    Account.PurchaseFailed: (ORDERS_PAID, "customer"),
    Account.ReturnRefundCredited: (SUPPLIERS_RECEIVABLE, "customer"),
    Account.FreightCharged: ("customer", FREIGHT_REVENUE),
    Account.BalanceRefundPaidOut: ("customer", PAYOUTS),
}
MONEY_EVENTS = frozenset(_ENTRIES)


def postings(event: Any, username: str, currency: str) -> list[Posting]:
    """The balanced postings of one event (none for events that move no money)."""
    entry = _ENTRIES.get(type(event))
    if entry is None:
        return []
    amount: int = event.amount
    assert isinstance(amount, int) and amount > 0, "a money event moves a positive amount"
    debit, credit = (customer(username) if side == "customer" else side for side in entry)
    result = [Posting(debit, amount, currency), Posting(credit, -amount, currency)]
    assert sum(p.amount for p in result) == 0
    return result
