"""The journal as a Beancount file, for plain-text accounting tools (written here: Beancount
itself is GPL and only a test dependency, to check what this writes).

- an ``open`` for every account, on the earliest day it is used (customers with their
  currency);
- one transaction per money event: the customer as payee, what happened in words as narration,
  its event id, log position, event type, order number, payment and payout references, case
  refund request and actor (who did it) as metadata;
- a ``balance`` assertion per customer at the end of every day they moved money (Beancount
  asserts a balance at the *start* of its date, so the end of day D is asserted on D + 1).

The file is written as the entries are read, a transaction at a time, and its size is not held:
what ``export`` keeps is one line per account (the day it is opened, and for a customer their
running balance and the last day they moved money), so its memory grows with the number of
accounts, never with the number of entries or days. Beancount sorts directives by date
whatever their order in the file, and that order is what lets it stream:

- a customer's own entries never go back a day (the log may: commands on two accounts can land
  in the other order than decided, and dated), so their balance is final for a day once they
  move money on a later one: that day's assertion is written there, before the transaction
  that moved on, and the last day's of each customer after the last transaction;
- the ``open`` directives come last: an account is opened on the earliest day it is used,
  which need not be its first use in the log (around midnight a clearing account's next entry
  can be a day earlier), so it is known only once every entry is read.

Chart accounts map to Beancount's five roots; a customer's account is their user name, first
letter capital (Beancount's rule), with ``.`` written ``-Dot-`` and ``_`` written ``-Us-``
(``bob.smith_1`` → ``Liabilities:Customers:Bob-Dot-smith-Us-1``, ``dora-k`` → ``Dora-k``):
readable, and different user names never meet, since a capital past the first letter only ever
starts one of those marks (``user_name`` reads the name back). Each customer's ``open`` carries
the user name as metadata too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TextIO

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


def export(entries: Iterable[dict[str, Any]], out: TextIO, *,
           title: str = "Ledger journal") -> None:
    """Write the Beancount file of journal entries (``ReadModels.journal_entries`` items, in log
    order) to ``out``, a transaction at a time."""
    out.write(f"option {_quoted('title')} {_quoted(title)}\n\n")
    accounts = _Accounts()
    for entry in entries:
        day = date.fromisoformat(entry["at"][:10])
        currency = entry["currency"]
        # payee: the customer; narration: what happened, in words (issue 10)
        lines = [f"{day.isoformat()} * {_quoted(entry['username'])} "
                 f"{_quoted(_narration(entry))}",
                 f"  event_id: {_quoted(entry['event_id'])}",
                 f"  position: {entry['position']}",
                 f"  event_type: {_quoted(entry['type'])}"]
        for key in ("order_no", "payment_reference", "payout_reference", "case_id",
                    "request_id", "actor"):  # what matches it to a bank statement, a payout, a case
            if entry.get(key):
                lines.append(f"  {key}: {_quoted(str(entry[key]))}")
        closed: list[str] = []
        for posting in entry["postings"]:
            name = account_name(posting["account"])
            closed += accounts.post(day, name, posting["amount"], currency, entry["username"])
            lines.append(f"  {name}  {decimal_text(posting['amount'], currency)} {currency}")
        if closed:
            out.write("\n".join(closed) + "\n\n")
        out.write("\n".join(lines) + "\n\n")
    for line in accounts.last_closings():
        out.write(line + "\n")
    if accounts.customers:
        out.write("\n")
    for line in accounts.opens():
        out.write(line + "\n")


def _narration(entry: dict[str, Any]) -> str:
    words = event_name(entry["type"]).replace("_", " ")
    return f"{words}, order {entry['order_no']}" if entry.get("order_no") else words


@dataclass
class _Customer:
    """A customer's account as the file has it so far: their balance after their latest entry,
    and that entry's day."""

    name: str
    username: str
    currency: str
    day: date
    balance: int = 0

    def closing(self) -> str:
        """The balance assertion of the end of ``day`` (at the start of the next)."""
        return (f"{(self.day + timedelta(days=1)).isoformat()} balance {self.name}  "
                f"{decimal_text(self.balance, self.currency)} {self.currency}")


class _Accounts:
    """Every account's earliest day, and each customer's running balance: one item per
    account, whatever the number of entries."""

    def __init__(self) -> None:
        self.opened: dict[str, date] = {}
        self.customers: dict[str, _Customer] = {}

    def post(self, day: date, name: str, amount: int, currency: str,
             username: str) -> list[str]:
        """Count a posting of ``day``; the balance assertion it makes final, if any (the
        customer's previous day, once they move money on a later one)."""
        # opened on the earliest day it is used, which need not be its first use in the log
        if name not in self.opened or day < self.opened[name]:
            self.opened[name] = day
        if not name.startswith(CUSTOMERS):
            return []
        customer = self.customers.get(name)
        if customer is None:
            self.customers[name] = _Customer(name, username, currency, day, amount)
            return []
        # Their entries never go back a day (were one to, an assertion written before it would
        # fail in bean-check: the history's days would not be its order)
        closed = [customer.closing()] if day > customer.day else []
        customer.day = max(customer.day, day)
        customer.balance += amount
        return closed

    def last_closings(self) -> Iterator[str]:
        """Each customer's last day's balance assertion, by day and account."""
        for customer in sorted(self.customers.values(), key=lambda c: (c.day, c.name)):
            yield customer.closing()

    def opens(self) -> Iterator[str]:
        """The ``open`` directives' lines, by day and account (a customer's in their currency,
        with their user name)."""
        for name, day in sorted(self.opened.items(), key=lambda item: (item[1], item[0])):
            customer = self.customers.get(name)
            if customer is None:
                yield f"{day.isoformat()} open {name}"
            else:
                yield f"{day.isoformat()} open {name} {customer.currency}"
                yield f"  username: {_quoted(customer.username)}"
