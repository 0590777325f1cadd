"""The journal as a Beancount file, for plain-text accounting tools (written here: Beancount
itself is GPL and only a test dependency, to check what this writes).

- an ``open`` for every account, on the earliest day it is used (customers with their
  currency);
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
    usernames: dict[str, str] = {}
    closings = _Closings()
    last_day: date | None = None
    for entry in entries:
        day = date.fromisoformat(entry["at"][:10])
        if last_day is not None and day != last_day:
            closings.leave(last_day, len(body))
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
            # opened on the earliest day it is used, which need not be its first use in the
            # log: commands on two accounts may land in the other order than decided (and
            # dated), so around midnight a clearing account's next entry can be a day earlier
            if name not in opened or day < opened[name][0]:
                is_customer = name.startswith("Liabilities:Customers:")
                opened[name] = (day, currency if is_customer else None)
            if name.startswith("Liabilities:Customers:"):
                usernames[name] = entry["username"]
                closings.post(day, name, posting["amount"], currency)
            body.append(f"  {name}  {decimal_text(posting['amount'], currency)} {currency}")
        body.append("")
    if last_day is not None:
        closings.leave(last_day, len(body))
    closings.assert_in(body)
    for name, (day, currency) in sorted(opened.items(), key=lambda item: (item[1][0], item[0])):
        lines.append(f"{day.isoformat()} open {name}" + (f" {currency}" if currency else ""))
        if name in usernames:
            lines.append(f"  username: {_quoted(usernames[name])}")
    return "\n".join([*lines, "", *body]) + "\n"


def _narration(entry: dict[str, Any]) -> str:
    words = event_name(entry["type"]).replace("_", " ")
    return f"{words}, order {entry['order_no']}" if entry.get("order_no") else words


class _Closings:
    """Each customer's balance at the end of each day they moved money, asserted where the log
    first leaves that day. The log may come back to a day (commands on two accounts can land in
    the other order than decided, and dated) but a customer's own entries never go back a day,
    so the balance after their last entry of a day is that day's closing balance: the figures
    are filled in once every entry is read."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = defaultdict(int)
        self.currency_of: dict[str, str] = {}
        self.closing: dict[tuple[date, str], int] = {}
        self.moved: dict[date, set[str]] = defaultdict(set)
        self.asserted: set[tuple[date, str]] = set()
        self.places: list[tuple[int, date, list[str]]] = []  # (line of the body, day, accounts)

    def post(self, day: date, name: str, amount: int, currency: str) -> None:
        self.balances[name] += amount
        self.currency_of[name] = currency
        self.closing[day, name] = self.balances[name]
        self.moved[day].add(name)

    def leave(self, day: date, line: int) -> None:
        names = sorted(n for n in self.moved.pop(day, set()) if (day, n) not in self.asserted)
        self.asserted.update((day, name) for name in names)
        if names:
            self.places.append((line, day, names))

    def assert_in(self, body: list[str]) -> None:
        for line, day, names in reversed(self.places):  # from the end: lines stay where they are
            end_of_day = (day + timedelta(days=1)).isoformat()
            body[line:line] = [
                *(f"{end_of_day} balance {name}  "
                  f"{decimal_text(self.closing[day, name], self.currency_of[name])} "
                  f"{self.currency_of[name]}" for name in names),
                "",
            ]
