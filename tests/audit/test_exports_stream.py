"""The journal's exports (Beancount, hledger, the general-ledger CSV) are written to their file as
the journal is read, a few lines at a time: what an export holds grows with the number of
accounts, never with the number of entries, so a ledger of a million entries is exported in the
memory of a small one."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TextIO

import pytest

from ledger import journal
from projections import beancount, exports, hledger
from tests.audit.test_beancount_export import bean_check

Export = Callable[[Iterator[dict[str, Any]], TextIO], None]
EXPORTS: dict[str, Export] = {
    "beancount": beancount.export,
    "hledger": hledger.export,
    "csv": exports.general_ledger_csv,
}
CUSTOMERS = 50
FIRST_DAY = date(2026, 3, 1)


def event_id(position: int) -> str:
    return f"ev-{position:07d}"  # no id is the start of another


def synthetic_entries(count: int, *, per_day: int = 1_000,
                      when_read: Callable[[int], None] = lambda position: None
                      ) -> Iterator[dict[str, Any]]:
    """``count`` journal entries as ``ReadModels.journal_entries`` gives them, made one at a
    time (never a list): deposits and purchases of ``CUSTOMERS`` customers, ``per_day`` entries
    a day. ``when_read(position)`` is told as each entry is handed over."""
    for position in range(1, count + 1):
        username = f"customer.{position % CUSTOMERS:03d}"
        amount = 1_000 + position % 997
        deposit = position % 3 != 0
        other = journal.DEPOSITS if deposit else journal.ORDERS_PAID
        sign = 1 if deposit else -1
        day = FIRST_DAY + timedelta(days=(position - 1) // per_day)
        when_read(position)
        yield {
            "position": position, "type": "deposit_received" if deposit else "purchase_paid",
            "event_id": event_id(position), "username": username, "currency": "USD",
            "at": f"{day.isoformat()}T12:00:00.000000Z",
            "order_no": None if deposit else f"ORD-{position}",
            "payment_reference": f"PAY-{position}" if deposit else None,
            "payout_reference": None, "case_id": None, "request_id": None,
            "actor": "system:bench",
            "postings": [{"account": other, "amount": sign * amount},
                         {"account": journal.customer(username), "amount": -sign * amount}],
        }


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_an_export_is_in_its_file_while_the_journal_is_still_being_read(
    name: str, tmp_path: Path
) -> None:
    # given a journal of 10,000 entries, and a look at the file as entry 5,000 is read
    path = tmp_path / f"journal.{name}"
    seen_at_5000: list[str] = []

    def when_read(position: int) -> None:
        if position == 5_000:
            seen_at_5000.append(path.read_text(encoding="utf-8"))

    # when it is exported to the file
    with path.open("w", encoding="utf-8", newline="") as out:
        EXPORTS[name](synthetic_entries(10_000, when_read=when_read), out)

    # then the first entry was written before the 5,000th was read, and the last after it
    whole = path.read_text(encoding="utf-8")
    assert event_id(1) in seen_at_5000[0] and event_id(10_000) not in seen_at_5000[0]
    assert event_id(1) in whole and event_id(10_000) in whole


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_an_export_of_50_000_entries_holds_a_small_fraction_of_what_it_writes(
    name: str, tmp_path: Path
) -> None:
    # given 50,000 entries over 50 days, 50 customers (each with a balance assertion a day)
    path = tmp_path / f"journal.{name}"

    # when they are exported to a file, memory traced
    tracemalloc.start()
    try:
        with path.open("w", encoding="utf-8", newline="") as out:
            EXPORTS[name](synthetic_entries(50_000), out)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # then the most it held at once is under a fiftieth of the file (a file many megabytes
    # long; held whole, as text and as lines, it would be more than the file)
    size_bytes = path.stat().st_size
    assert size_bytes > 5_000_000
    assert peak_bytes < size_bytes / 50, f"peak {peak_bytes:,} B for a file of {size_bytes:,} B"


def test_every_customer_s_every_day_is_asserted_once_when_the_beancount_export_streams(
    tmp_path: Path,
) -> None:
    # given 3,000 entries of 50 customers over three days
    path = tmp_path / "journal.beancount"

    # when they are exported
    with path.open("w", encoding="utf-8", newline="") as out:
        beancount.export(synthetic_entries(3_000), out)

    # then bean-check accepts it, and each customer's balance is asserted at the end of each
    # day, once
    checked = bean_check(path.read_text(), tmp_path)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    asserted = [line.split()[:3] for line in path.read_text().splitlines()
                if " balance " in line]
    ends = [(FIRST_DAY + timedelta(days=d)).isoformat() for d in (1, 2, 3)]
    expected = [[end, "balance", beancount.account_name(journal.customer(f"customer.{n:03d}"))]
                for end in ends for n in range(CUSTOMERS)]
    assert sorted(asserted) == sorted(expected)
