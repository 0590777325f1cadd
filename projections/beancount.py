"""The journal as a Beancount file, for plain-text accounting tools (written here: Beancount
itself is GPL and only a test dependency, to check what this writes).

- an ``open`` for every account, on the day it is first used (customers with their currency);
- one transaction per money event: the customer as payee, what happened in words as narration,
  its event id, log position, event type, order number, payment and payout references, case
  refund request and actor (who did it) as metadata;
- a ``balance`` assertion per customer at the end of every day they moved money (Beancount
  asserts a balance at the *start* of its date, so the end of day D is asserted on D + 1).

Chart accounts map to Beancount's five roots; a customer's account is their user name, first
letter capital (Beancount's rule), with ``.`` written ``-Dot-`` and ``_`` written ``-Us-``
(``bob.smith_1`` → ``Liabilities:Customers:Bob-Dot-smith-Us-1``, ``dora-k`` → ``Dora-k``):
readable, and different user names never meet, since a capital past the first letter only ever
starts one of those marks (``user_name`` reads the name back). Each customer's ``open`` carries
the user name as metadata too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from ledger import journal
from ledger.money import decimal_text
from projections.event_log import event_name

ROOTS = {
    journal.DEPOSITS: "Assets:Clearing:Deposits",
    journal.PAYOUTS: "Assets:Clearing:Payouts",
    journal.SUPPLIERS_RECEIVABLE: "Assets:Suppliers:Receivable",
    journal.ORDERS_PAID: "Expenses:Orders:Paid",
    journal.FREIGHT_REVENUE: "Income:Freight",
}
# Past the first letter a user name is lower case, so a capital marks a character Beancount's
# account names cannot hold. At the start (a capital or a digit there) an ``X`` followed by a
# capital: a name beginning with ``x`` goes on in lower case, a digit or a dash.
_MARKS = {".": "-Dot-", "_": "-Us-"}
_FIRST_MARKS = {".": "XDot-", "_": "XUs-", "-": "XDash-"}
CUSTOMERS = "Liabilities:Customers:"


def account_name(chart_account: str) -> str:
    if chart_account in ROOTS:
        return ROOTS[chart_account]
    kind, _, username = chart_account.partition(":")
    assert kind == "customer" and username, chart_account
    first, rest = username[0], username[1:]
    head = first.upper() if first.isalpha() else first if first.isdigit() else _FIRST_MARKS[first]
    return CUSTOMERS + head + "".join(_MARKS.get(c, c) for c in rest)


def user_name(account: str) -> str:
    """The user name a customer's account was written from (``account_name``'s inverse)."""
    assert account.startswith(CUSTOMERS), account
    text = account.removeprefix(CUSTOMERS)
    for char, mark in _FIRST_MARKS.items():
        if text.startswith(mark):
            name, text = char, text.removeprefix(mark)
            break
    else:
        name, text = text[0].lower(), text[1:]
    while text:
        for char, mark in _MARKS.items():
            if text.startswith(mark):
                name, text = name + char, text.removeprefix(mark)
                break
        else:
            name, text = name + text[0], text[1:]
    return name


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def export(entries: Iterable[dict[str, Any]], *, title: str = "Ledger journal") -> str:
    """Beancount text of journal entries (``ReadModels.journal`` items, in log order)."""
    lines = [f"option {_quoted('title')} {_quoted(title)}", ""]
    body: list[str] = []
    opened: dict[str, tuple[date, str | None]] = {}
    balances: dict[str, int] = defaultdict(int)
    currency_of: dict[str, str] = {}
    usernames: dict[str, str] = {}
    day_moves: dict[date, set[str]] = defaultdict(set)
    last_day: date | None = None
    for entry in entries:
        day = date.fromisoformat(entry["at"][:10])
        if last_day is not None and day != last_day:
            body += _assertions(last_day, day_moves.pop(last_day, set()), balances, currency_of)
        last_day = day
        currency = entry["currency"]
        # payee: the customer; narration: what happened, in words (issue 10)
        body.append(f"{day.isoformat()} * {_quoted(entry['username'])} "
                    f"{_quoted(_narration(entry))}")
        body.append(f"  event_id: {_quoted(entry['event_id'])}")
        body.append(f"  position: {entry['position']}")
        body.append(f"  event_type: {_quoted(entry['type'])}")
        for key in ("order_no", "payment_reference", "payout_reference", "case_id",
                    "request_id", "actor"):  # what matches it to a bank statement, a payout, a case
            if entry.get(key):
                body.append(f"  {key}: {_quoted(str(entry[key]))}")
        for posting in entry["postings"]:
            name = account_name(posting["account"])
            if name not in opened:
                is_customer = name.startswith("Liabilities:Customers:")
                opened[name] = (day, currency if is_customer else None)
            if name.startswith("Liabilities:Customers:"):
                usernames[name] = entry["username"]
                balances[name] += posting["amount"]
                currency_of[name] = currency
                day_moves[day].add(name)
            body.append(f"  {name}  {decimal_text(posting['amount'], currency)} {currency}")
        body.append("")
    if last_day is not None:
        body += _assertions(last_day, day_moves.pop(last_day, set()), balances, currency_of)
    for name, (day, currency) in sorted(opened.items(), key=lambda item: (item[1][0], item[0])):
        lines.append(f"{day.isoformat()} open {name}" + (f" {currency}" if currency else ""))
        if name in usernames:
            lines.append(f"  username: {_quoted(usernames[name])}")
    return "\n".join([*lines, "", *body]) + "\n"


def _narration(entry: dict[str, Any]) -> str:
    words = event_name(entry["type"]).replace("_", " ")
    return f"{words}, order {entry['order_no']}" if entry.get("order_no") else words


def _assertions(
    day: date, moved: set[str], balances: dict[str, int], currency_of: dict[str, str]
) -> list[str]:
    end_of_day = (day + timedelta(days=1)).isoformat()
    lines = [
        f"{end_of_day} balance {name}  {decimal_text(balances[name], currency_of[name])} "
        f"{currency_of[name]}"
        for name in sorted(moved)
    ]
    return [*lines, ""] if lines else []
