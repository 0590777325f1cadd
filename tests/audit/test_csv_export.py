"""The general-ledger CSV (``projections.exports``): debits equal credits per currency, and each
customer's credits less debits is their balance in the ledger, on a mixed USD/EUR/JPY history
with odd user names."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from decimal import Decimal

from ledger.money import MINOR_UNIT_DIGITS
from projections.exports import COLUMNS, general_ledger_csv
from tests.audit.conftest import Ledger
from tests.audit.test_beancount_export import CUSTOMERS, mixed_history
from tests.written import written


def test_the_general_ledger_balances_per_currency_and_matches_every_customer(
    ledger: Ledger,
) -> None:
    mixed_history(ledger)
    ledger.settle()

    text = written(general_ledger_csv, ledger.read_models.journal_entries())

    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == COLUMNS and len(rows) > 20
    debits: dict[str, Decimal] = defaultdict(Decimal)
    credits: dict[str, Decimal] = defaultdict(Decimal)
    owed: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        assert bool(row["debit"]) != bool(row["credit"]), row
        debit, credit = Decimal(row["debit"] or 0), Decimal(row["credit"] or 0)
        debits[row["currency"]] += debit
        credits[row["currency"]] += credit
        if row["account"].startswith("customer:"):
            owed[row["account"].removeprefix("customer:")] += credit - debit
    assert set(debits) == {"USD", "EUR", "JPY"}
    assert debits == credits
    # Each row names what matches it outside: the bank's payment, the payout, the request
    deposits = [r for r in rows if r["event"] == "deposit_received"]
    assert deposits and all(r["payment_reference"] == "PAY-1" for r in deposits)
    payouts = [r for r in rows if r["payout_reference"]]
    assert payouts and all(r["payout_reference"] == f"BANK-{r['username']}" for r in payouts)
    assert all(r["request_id"] for r in payouts)
    assert all(r["actor"] for r in rows)  # who did each, role:person
    for username, currency in CUSTOMERS.items():
        account = ledger.read_models.account(username)
        assert account is not None
        posted = account["posted"]
        scale = Decimal(10) ** MINOR_UNIT_DIGITS.get(currency, 2)
        assert owed[username] * scale == posted, username
