"""The exports finance and auditors read (CSV, hledger, Beancount) account for every minor unit,
per currency, whatever the journal holds: currencies of 0, 2 and 3 minor digits, amounts up to
the largest a command takes, and outside text (order numbers, references, the actor a JWT's
``sub`` names) with quotes, semicolons, commas, ``#``, formulas, newlines or any other
character: such text never adds, moves or hides a posting, and every figure is exact decimal
text."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import tempfile
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from beancount import loader
from beancount.core import data as bean
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger import journal
from ledger.money import MAX_AMOUNT_MINOR, MINOR_UNIT_DIGITS, decimal_text
from projections import beancount, exports, hledger
from tests.conftest import IN_CI
from tests.written import written

HLEDGER = shutil.which("hledger")
EXPORTS = settings(max_examples=30, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CURRENCIES = ("USD", "JPY", "BHD", "KWD")
# the chart accounts each kind of money event debits and credits ("customer": the user's)
ENTRIES = {
    "deposit_received": (journal.DEPOSITS, "customer"),
    "purchase_paid": ("customer", journal.ORDERS_PAID),
    "purchase_failed": (journal.ORDERS_PAID, "customer"),
    "return_refund_credited": (journal.SUPPLIERS_RECEIVABLE, "customer"),
    "freight_charged": ("customer", journal.FREIGHT_REVENUE),
    "balance_refund_paid_out": ("customer", journal.PAYOUTS),
}
HOSTILE = [
    '=HYPERLINK("http://x","y")', "+1+1", "-1-1", "@SUM(A1)", '"; 5 USD', "a, payout:FAKE",
    "#comment", "; comment", "x\\", '"', "ORD  2026-01-01 * x", "\t=1", "'quoted",
]
# an outside identifier: printable ASCII, no surrounding space (ledger.identity.reference)
REFERENCE = st.one_of(
    st.sampled_from([h for h in HOSTILE if h == h.strip() and h.isascii() and h.isprintable()]),
    st.from_regex(r"[\x21-\x7e](?:[\x20-\x7e]{0,20}[\x21-\x7e])?", fullmatch=True),
)
# who did it: ``role:person``, the person a JWT's ``sub`` (any text, trimmed)
ACTOR = st.one_of(
    st.sampled_from(["finance:ann", "cs:1f2e3d4c"]),
    st.builds(lambda person: f"finance:{person}",
              st.one_of(st.sampled_from([*HOSTILE, 'x\n2026-01-01 * "a" "b"\n  Income:Freight'
                                         " 5 USD\n\u2028y", "ünïcödé ¥€"]),
                        st.text(min_size=1, max_size=30).filter(lambda t: t.strip() == t
                                                                and "\x00" not in t))),
)


@st.composite
def journal_entries(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Entries as ``ReadModels.journal_entries`` gives them, in log order. An event is dated
    when its command was decided, and two accounts' commands may land in the log in the other
    order: around midnight the log may go back a day, but never before what was in the log when
    the account's previous event landed (that command was decided after it committed)."""
    usernames = draw(st.lists(st.from_regex(r"[a-z0-9._-]{3,12}", fullmatch=True), min_size=1,
                              max_size=4, unique=True))
    currency_of = {u: draw(st.sampled_from(CURRENCIES)) for u in usernames}
    entries: list[dict[str, Any]] = []
    latest, floor = 1, dict.fromkeys(usernames, 1)  # days of the month
    for position in range(1, draw(st.integers(1, 12)) + 1):
        username, kind = draw(st.sampled_from(usernames)), draw(st.sampled_from(sorted(ENTRIES)))
        amount = draw(st.one_of(st.integers(1, MAX_AMOUNT_MINOR),
                                st.sampled_from([1, 9, 10, 999, 1000, 1001, MAX_AMOUNT_MINOR])))
        day = draw(st.integers(max(floor[username], latest - 1), latest + 1))
        latest = max(latest, day)
        floor[username] = latest
        debit, credit = (f"customer:{username}" if side == "customer" else side
                         for side in ENTRIES[kind])
        entries.append({
            "position": position, "type": kind, "event_id": f"e{position}/1",
            "username": username, "currency": currency_of[username],
            "at": f"2026-03-{day:02d}T12:00:00.000000Z",
            "order_no": draw(st.none() | REFERENCE),
            "payment_reference": draw(st.none() | REFERENCE),
            "payout_reference": draw(st.none() | REFERENCE),
            "case_id": None, "request_id": None, "actor": draw(ACTOR),
            "postings": [{"account": debit, "amount": amount},
                         {"account": credit, "amount": -amount}],
        })
    return entries


def ledger_balances(entries: list[dict[str, Any]]) -> dict[tuple[str, str], Decimal]:
    """(chart account, currency) -> balance in major units, exactly (debits positive)."""
    balances: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for entry in entries:
        scale = Decimal(10) ** MINOR_UNIT_DIGITS.get(entry["currency"], 2)
        for posting in entry["postings"]:
            balances[posting["account"], entry["currency"]] += posting["amount"] / scale
    return {key: value for key, value in balances.items() if value}


def nonzero(balances: dict[tuple[str, str], Decimal]) -> dict[tuple[str, str], Decimal]:
    return {key: value for key, value in balances.items() if value}


@EXPORTS
@given(entries=journal_entries())
def test_the_csv_has_two_exact_rows_per_event_and_no_cell_a_spreadsheet_runs(
    entries: list[dict[str, Any]],
) -> None:
    rows = list(csv.DictReader(io.StringIO(written(exports.general_ledger_csv, entries))))

    assert len(rows) == 2 * len(entries)  # no text ever made a row of its own
    balances: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        assert bool(row["debit"]) != bool(row["credit"]), row
        balances[row["account"], row["currency"]] += (Decimal(row["debit"] or 0)
                                                      - Decimal(row["credit"] or 0))
        # a cell beginning =, +, -, @, tab or CR is a formula to a spreadsheet: never written
        assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in row.values()), row
    assert nonzero(balances) == ledger_balances(entries)
    for row, entry in zip(rows[::2], entries, strict=True):  # read back with the quote dropped
        assert exports.cell_text(row["order_no"]) == (entry["order_no"] or "")
        assert exports.cell_text(row["actor"]) == entry["actor"]


@pytest.mark.skipif(HLEDGER is None and not IN_CI,
                    reason="hledger is not installed (make test installs it)")
@EXPORTS
@example(entries=[{
    "position": 1, "type": "deposit_received", "event_id": "e1/1", "username": "-x_",
    "currency": "BHD", "at": "2026-03-01T12:00:00.000000Z", "order_no": "a, payout:FAKE",
    "payment_reference": "#x; y", "payout_reference": None, "case_id": None,
    "request_id": None, "actor": 'finance:x\n2026-03-01 * y\n    income:freight  5 BHD',
    "postings": [{"account": journal.DEPOSITS, "amount": 1_000},
                 {"account": "customer:-x_", "amount": -1_000}],
}])
@given(entries=journal_entries())
def test_hledger_reads_the_export_s_balances_as_the_ledger_s_to_the_minor_unit(
    entries: list[dict[str, Any]],
) -> None:
    assert HLEDGER is not None, "hledger is required under CI=true and is not installed"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ledger.journal"
        path.write_text(written(hledger.export, entries))
        checked = subprocess.run([HLEDGER, "-f", str(path), "check"], capture_output=True,
                                 text=True, timeout=60, check=False)
        assert checked.returncode == 0, checked.stderr
        balances: dict[tuple[str, str], Decimal] = {}
        for currency in sorted({e["currency"] for e in entries}):
            answer = subprocess.run(
                [HLEDGER, "-f", str(path), "balance", "-N", "--flat", "-O", "csv",
                 f"cur:^{currency}$"],
                capture_output=True, text=True, timeout=60, check=True).stdout
            for row in list(csv.reader(io.StringIO(answer)))[1:]:
                figure, code = row[1].split()
                assert code == currency, row
                balances[_chart(row[0], hledger.ROOTS, "liabilities:customers:"), code] = (
                    Decimal(figure))
    assert nonzero(balances) == ledger_balances(entries)


@EXPORTS
@given(entries=journal_entries())
def test_beancount_reads_one_transaction_per_event_and_the_ledger_s_balances(
    entries: list[dict[str, Any]],
) -> None:
    found, errors, _ = loader.load_string(written(beancount.export, entries))

    assert errors == []
    transactions = sorted((e for e in found if isinstance(e, bean.Transaction)),
                          key=lambda t: int(t.meta["position"]))  # Beancount sorts by date
    assert len(transactions) == len(entries)
    balances: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for transaction in transactions:
        for posting in transaction.postings:
            assert posting.units is not None and posting.units.number is not None
            account = posting.account
            chart = (f"customer:{beancount.user_name(account)}"
                     if account.startswith(beancount.CUSTOMERS)
                     else _chart(account, beancount.ROOTS, beancount.CUSTOMERS))
            balances[chart, str(posting.units.currency)] += Decimal(posting.units.number)
    assert nonzero(balances) == ledger_balances(entries)
    assert [t.meta.get("actor") for t in transactions] == [e["actor"] for e in entries]


def _chart(name: str, roots: dict[str, str], customers: str) -> str:
    by_name = {text: chart for chart, text in roots.items()}
    return by_name.get(name) or f"customer:{name.removeprefix(customers)}"


@settings(max_examples=500, deadline=None)
@given(amount=st.integers(-(10**18), 10**18),
       currency=st.sampled_from(sorted({*CURRENCIES, *MINOR_UNIT_DIGITS, "EUR"})))
def test_decimal_text_is_the_exact_amount_in_the_major_unit(amount: int, currency: str) -> None:
    digits = MINOR_UNIT_DIGITS.get(currency, 2)
    text = decimal_text(amount, currency)

    assert Decimal(text) == Decimal(amount).scaleb(-digits)
    assert "e" not in text.lower() and text.lstrip("-").isdigit() is (digits == 0)
    assert len(text.partition(".")[2]) == digits
