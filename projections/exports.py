"""The journal as a general-ledger detail in CSV, for an auditor's spreadsheet or tool.

One row per posting, in log order: ``date, position, event, type, account, debit, credit,
currency, username, order_no, payment_reference, payout_reference, case_id, request_id,
actor, event_id``: the references match a row to a bank statement, a payout or a case (empty
where the event has none), the actor says who did it (``role:person``). Amounts are decimal
text in the currency's unit (``12.34``; JPY whole yen); a posting is a debit (positive in the
journal) or a credit (negative), never both, so within each currency the debits' sum equals
the credits'. Accounts are the journal's chart names (``customer:<user name>``,
``clearing:deposits``, …): readable and distinct, since a user name is unique.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from ledger.money import decimal_text
from projections.event_log import event_name
from projections.journal import REFERENCES

COLUMNS = ("date", "position", "event", "type", "account", "debit", "credit", "currency",
           "username", "order_no", *REFERENCES, "actor", "event_id")


def general_ledger_csv(entries: Iterable[dict[str, Any]]) -> str:
    """CSV text of journal entries (``ReadModels.journal_entries`` items, in log order)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for entry in entries:
        currency = entry["currency"]
        for posting in entry["postings"]:
            amount = posting["amount"]
            writer.writerow((
                entry["at"][:10], entry["position"], event_name(entry["type"]), entry["type"],
                posting["account"],
                decimal_text(amount, currency) if amount > 0 else "",
                decimal_text(-amount, currency) if amount < 0 else "",
                currency, entry["username"], entry.get("order_no") or "",
                *(entry.get(name) or "" for name in REFERENCES), entry.get("actor") or "",
                entry["event_id"],
            ))
    return out.getvalue()


__all__ = ["COLUMNS", "general_ledger_csv"]
