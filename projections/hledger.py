"""The journal as an hledger journal, for ``hledger check`` and an auditor's own reports.

- one transaction per money event: ``DATE * <user name> | <what happened, in words>``, with its
  log position, event id, order number, payment and payout references, case, refund request and
  actor as tags;
- customer accounts named from the user name (``liabilities:customers:ann.lee``: readable, and
  distinct since user names are unique and hledger names keep ``.``, ``_`` and ``-``);
- after each day's transactions, a balance assertion for every customer account that moved
  that day (``= <balance>``), so ``hledger check`` checks each day's closing balances.

It is written as the entries are read (``export``), never held whole.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any, TextIO

from ledger import journal
from ledger.money import decimal_text
from projections.event_log import event_name

ROOTS = {
    journal.DEPOSITS: "assets:clearing:deposits",
    journal.PAYOUTS: "assets:clearing:payouts",
    journal.SUPPLIERS_RECEIVABLE: "assets:suppliers:receivable",
    journal.ORDERS_PAID: "expenses:orders:paid",
    journal.FREIGHT_REVENUE: "income:freight",
}


def account_name(chart_account: str) -> str:
    if chart_account in ROOTS:
        return ROOTS[chart_account]
    kind, _, username = chart_account.partition(":")
    assert kind == "customer" and username, chart_account
    return f"liabilities:customers:{username}"


def _tag_value(text: str) -> str:
    # a tag's value ends at a comma or the line's end
    return " ".join(text.replace(",", ";").split())


def export(entries: Iterable[dict[str, Any]], out: TextIO) -> None:
    """Write the hledger journal of journal entries (``ReadModels.journal_entries`` items, in
    log order) to ``out``, a transaction at a time. What it holds meanwhile is each account's
    balance and the customers who moved money on the day being written: its memory grows with
    the number of accounts, never with the number of entries."""
    balances: dict[str, int] = defaultdict(int)
    currency_of: dict[str, str] = {}
    moved: dict[str, None] = {}  # the day's customers, in the order they first moved money
    day: str | None = None

    def assert_day() -> None:
        if day is None or not moved:
            return
        out.write(f"{day} * balances at the end of the day\n")
        for name in moved:
            currency = currency_of[name]
            out.write(f"    {name}  0 {currency} = "
                      f"{decimal_text(balances[name], currency)} {currency}\n")
        out.write("\n")
        moved.clear()

    for entry in entries:
        if entry["at"][:10] != day:
            assert_day()
            day = entry["at"][:10]
        currency = entry["currency"]
        words = event_name(entry["type"]).replace("_", " ")
        tags = [f"position:{entry['position']}", f"event:{entry['event_id']}"]
        for name, tag in (("order_no", "order"), ("payment_reference", "payment"),
                          ("payout_reference", "payout"), ("case_id", "case"),
                          ("request_id", "refund_request"), ("actor", "actor")):
            if entry.get(name):
                tags.append(f"{tag}:{_tag_value(str(entry[name]))}")
        lines = [f"{day} * {entry['username']} | {words}  ; {', '.join(tags)}"]
        for posting in entry["postings"]:
            name = account_name(posting["account"])
            balances[name] += posting["amount"]
            currency_of[name] = currency
            if name.startswith("liabilities:customers:"):
                moved[name] = None
            lines.append(f"    {name}  {decimal_text(posting['amount'], currency)} {currency}")
        out.write("\n".join(lines) + "\n\n")
    assert_day()


__all__ = ["account_name", "export"]
