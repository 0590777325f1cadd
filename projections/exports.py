"""The journal as a general-ledger detail in CSV, for an auditor's spreadsheet or tool.

One row per posting, in log order: ``date, position, event, type, account, debit, credit,
currency, username, order_no, payment_reference, payout_reference, case_id, request_id,
actor, event_id``: the references match a row to a bank statement, a payout or a case (empty
where the event has none), the actor says who did it (``role:person``). Amounts are decimal
text in the currency's unit (``12.34``; JPY whole yen); a posting is a debit (positive in the
journal) or a credit (negative), never both, so within each currency the debits' sum equals
the credits'. Accounts are the journal's chart names (``customer:<user name>``,
``clearing:deposits``, …): readable and distinct, since a user name is unique.

Text from outside (order numbers, references, user names, the actor) never acts in a
spreadsheet: a cell beginning ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (a formula
to a spreadsheet, OWASP's "CSV injection") is written with a ``'`` in front, and so is one
already beginning ``'``, so dropping one leading ``'`` always gives the text back
(``cell_text``); a row with a carriage return in a cell is quoted in full, since a bare one
ends a row for a spreadsheet.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, TextIO

from ledger.money import decimal_text
from projections.event_log import event_name
from projections.journal import REFERENCES

COLUMNS = ("date", "position", "event", "type", "account", "debit", "credit", "currency",
           "username", "order_no", *REFERENCES, "actor", "event_id")


# What a spreadsheet takes for the start of a formula; and the mark that neutralises it.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NEUTRAL = "'"


def _cell(text: str) -> str:
    return NEUTRAL + text if text.startswith((*FORMULA_STARTS, NEUTRAL)) else text


def cell_text(cell: str) -> str:
    """A text cell of the export as the ledger holds it (one leading ``'`` dropped)."""
    return cell.removeprefix(NEUTRAL)


def general_ledger_csv(entries: Iterable[dict[str, Any]], out: TextIO) -> None:
    """Write the CSV of journal entries (``ReadModels.journal_entries`` items, in log order) to
    ``out``, a row at a time: nothing is held from one entry to the next."""
    writer = csv.writer(out, lineterminator="\n")
    # csv quotes a cell holding the line terminator ("\n") but not a bare "\r"
    quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(COLUMNS)
    for entry in entries:
        currency = entry["currency"]
        for posting in entry["postings"]:
            amount = posting["amount"]
            row = [
                entry["at"][:10], str(entry["position"]), event_name(entry["type"]),
                entry["type"], posting["account"],
                decimal_text(amount, currency) if amount > 0 else "",
                decimal_text(-amount, currency) if amount < 0 else "",
                currency, entry["username"], entry.get("order_no") or "",
                *(entry.get(name) or "" for name in REFERENCES), entry.get("actor") or "",
                entry["event_id"],
            ]
            cells = [_cell(text) for text in row]
            (quoted if any("\r" in c for c in cells) else writer).writerow(cells)


__all__ = ["COLUMNS", "cell_text", "general_ledger_csv"]
