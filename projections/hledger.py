"""The journal as an hledger journal, for ``hledger check`` and an auditor's own reports.

- one transaction per money event: ``DATE * <user name> | <what happened, in words>``, with its
  log position, event id, order number, payment and payout references, case, refund request and
  actor as tags;
- customer accounts named from the user name (``liabilities:customers:ann.lee``: readable, and
  distinct since user names are unique and hledger names keep ``.``, ``_`` and ``-``);
- after each day's transactions, a balance assertion for every customer account that moved
  that day (``= <balance>``), so ``hledger check`` checks each day's closing balances.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

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


def export(entries: Iterable[dict[str, Any]]) -> str:
    lines: list[str] = []
    balances: dict[str, int] = defaultdict(int)
    currency_of: dict[str, str] = {}
    moved: list[str] = []
    day: str | None = None

    def assert_day() -> None:
        if day is None or not moved:
            return
        lines.append(f"{day} * balances at the end of the day")
        for name in dict.fromkeys(moved):
            currency = currency_of[name]
            lines.append(f"    {name}  0 {currency} = "
                         f"{decimal_text(balances[name], currency)} {currency}")
        lines.append("")
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
        lines.append(f"{day} * {entry['username']} | {words}  ; {', '.join(tags)}")
        for posting in entry["postings"]:
            name = account_name(posting["account"])
            balances[name] += posting["amount"]
            currency_of[name] = currency
            if name.startswith("liabilities:customers:"):
                moved.append(name)
            lines.append(f"    {name}  {decimal_text(posting['amount'], currency)} {currency}")
        lines.append("")
    assert_day()
    return "\n".join(lines) + ("\n" if lines else "")


__all__ = ["account_name", "export"]
