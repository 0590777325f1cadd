"""``ledger export --format beancount`` (``projections.beancount.export``): a file ``bean-check``
accepts, whose balances are the ledger's (customers are liabilities: their balances negated)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
from beancount import loader
from beancount.core import account as bean_account
from beancount.core import data as bean
from hypothesis import example, given
from hypothesis import strategies as st

from ledger import journal
from ledger.identity import Actor
from ledger.money import MINOR_UNIT_DIGITS
from projections.beancount import account_name, export, user_name
from tests.audit.conftest import Ledger
from tests.audit.history import CS, FINANCE, PAYER, SYSTEM, Customer, History, RandomChooser
from tests.written import written

# What the store adds is covered on both by the tests above: the rest need one.
ONE_STORE = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
BEAN_CHECK = Path(sys.executable).with_name("bean-check")
# name -> currency: '.', '_' and '-' inside names; JPY counts whole yen (no minor digits)
CUSTOMERS = {
    "ann.lee": "USD",
    "bob_smith-2": "JPY",
    "chen.wei_88": "EUR",
    "dora-k": "JPY",
    "e.v_a-9": "USD",
}


def mixed_history(ledger: Ledger) -> None:
    """Every kind of money event, for several customers in three currencies."""
    app = ledger.app
    for username, currency in CUSTOMERS.items():
        app.open_account(username, currency, actor=SYSTEM)
        app.deposit(username, 50_000, "PAY-1", actor=SYSTEM)
        app.purchase(username, "ORD-1", 12_345, actor=SYSTEM)
        app.purchase(username, 'ORD "2" \\ b', 3_000, actor=SYSTEM)  # quotes in an order no.
    app.fail_purchase("ann.lee", "ORD-1", 2_345, "out of stock", actor=CS)
    app.fail_purchase("bob_smith-2", "ORD-1", None, "supplier closed", actor=CS)
    for username in ("ann.lee", "bob_smith-2"):
        request = UUID(app.request_refund(username, "PAY-1", 7_001, "moving", actor=CS).body["id"])
        app.approve_refund(request, "checked", actor=FINANCE)
        app.pay_refund(request, f"BANK-{username}", actor=PAYER)
    history = History(app, RandomChooser(seed=1))
    for customer in ("chen.wei_88", "dora-k"):
        case = history.walk_to_supplier(Customer(customer, CUSTOMERS[customer]), 'ORD "2" \\ b')
        app.resolve_return_case(case, "refund", None, 450, None, actor=CS)
    case = history.walk_to_supplier(Customer("e.v_a-9", "USD"), "ORD-1")
    app.resolve_return_case(case, "exchange", None, 999, "TRK-OUT-1", actor=CS)
    request = UUID(app.request_refund("dora-k", "ORD-1", 10, "changed mind", actor=CS).body["id"])
    app.cancel_refund(request, "stays", actor=CS)  # a hold released: nothing to post
    ledger.read_models.wait_caught_up()


def bean_check(text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / "ledger.beancount"
    path.write_text(text)
    return subprocess.run(
        [str(BEAN_CHECK), str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def beancount_balances(text: str) -> dict[str, dict[str, Decimal]]:
    entries, errors, _ = loader.load_string(text)
    assert errors == [], errors
    balances: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for entry in entries:
        if isinstance(entry, bean.Transaction):
            for posting in entry.postings:
                assert posting.units is not None
                balances[posting.account][posting.units.currency] += posting.units.number
    return balances


def minor_units(amount: Decimal, currency: str) -> int:
    scaled = amount.scaleb(MINOR_UNIT_DIGITS.get(currency, 2))
    assert scaled == scaled.to_integral_value(), f"{amount} {currency} has too many digits"
    return int(scaled)


@pytest.fixture
def exported(ledger: Ledger) -> tuple[Ledger, str]:
    mixed_history(ledger)
    return ledger, written(export, ledger.read_models.journal_entries())


def test_the_export_of_a_mixed_history_passes_bean_check(
    exported: tuple[Ledger, str], tmp_path: Path
) -> None:
    _, text = exported

    checked = bean_check(text, tmp_path)

    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    assert len(re.findall(r"^\d{4}-\d\d-\d\d balance ", text, re.MULTILINE)) == len(CUSTOMERS)
    # what matches an entry to the bank, a payout or a request, as metadata
    assert '  payment_reference: "PAY-1"' in text and '  payout_reference: "BANK-' in text
    assert "  request_id: " in text


def test_the_balances_beancount_computes_are_the_ledger_s_posted_balances_negated(
    exported: tuple[Ledger, str],
) -> None:
    ledger, text = exported

    balances = beancount_balances(text)

    for username, currency in CUSTOMERS.items():
        account = ledger.read_models.account(username)
        assert account is not None and account["posted"] > 0
        in_beancount = balances[account_name(journal.customer(username))]
        assert set(in_beancount) == {currency}
        assert minor_units(in_beancount[currency], currency) == -account["posted"]
    for currency in set(CUSTOMERS.values()):  # and the books balance per currency
        assert sum(b.get(currency, Decimal(0)) for b in balances.values()) == 0


@ONE_STORE
def test_an_export_of_one_currency_holds_only_its_customers_and_passes_bean_check(
    exported: tuple[Ledger, str], tmp_path: Path
) -> None:
    ledger, _ = exported

    text = written(export, ledger.read_models.journal_entries(currency="JPY"))

    assert bean_check(text, tmp_path).returncode == 0
    currencies = {c for b in beancount_balances(text).values() for c in b}
    assert currencies == {"JPY"}


@ONE_STORE
def test_end_of_day_balance_assertions_over_several_days_pass_and_catch_a_missing_entry(
    ledger: Ledger, tmp_path: Path
) -> None:
    # given a journal spread over five days (the store stamps events now: dates moved here)
    History(ledger.app, RandomChooser(seed=4)).run(40)
    ledger.read_models.wait_caught_up()
    entries = list(ledger.read_models.journal_entries())
    first_day = date(2028, 2, 27)  # across a month end and a leap day
    for n, entry in enumerate(entries):
        day = first_day + timedelta(days=n * 5 // len(entries))
        entry["at"] = day.isoformat() + entry["at"][10:]

    # when it is exported
    text = written(export, entries)

    # then every day's closing balances are asserted and hold
    assert bean_check(text, tmp_path).returncode == 0
    asserted_on = set(re.findall(r"^(\S+) balance ", text, re.MULTILINE))
    assert asserted_on == {(first_day + timedelta(days=d + 1)).isoformat() for d in range(5)}
    # and the assertions are live: without one of the first day's transactions they fail
    blocks = text.split("\n\n")
    dropped = next(b for b in blocks if b.startswith(f"{first_day.isoformat()} * "))
    failed = bean_check(text.replace(dropped + "\n\n", "", 1), tmp_path)
    assert failed.returncode != 0 and "Balance failed" in failed.stdout + failed.stderr


USERNAMES = st.from_regex(r"[a-z0-9._-]{3,64}", fullmatch=True)


@given(username=USERNAMES)
@example(username="-dash")
@example(username=".dot")
@example(username="_under")
def test_every_user_name_becomes_a_valid_beancount_account(username: str) -> None:
    name = account_name(journal.customer(username))

    assert bean_account.is_valid(name), f"{username!r} is exported as {name!r}"


@given(first=USERNAMES, second=USERNAMES)
def test_different_user_names_become_different_beancount_accounts(first: str, second: str) -> None:
    if first != second:
        assert account_name(journal.customer(first)) != account_name(journal.customer(second))


@given(username=USERNAMES)
@example(username="-dash.k")
@example(username="dash-dash.k")
@example(username="xdash")
@example(username="x-dot")
def test_a_customer_account_reads_back_as_its_user_name(username: str) -> None:
    # One user name per account, so no two customers can ever share one.
    assert user_name(account_name(journal.customer(username))) == username


@pytest.mark.parametrize(("username", "account"), [
    ("bob.smith_1", "Liabilities:Customers:Bob-Dot-smith-Us-1"),
    ("dora-k", "Liabilities:Customers:Dora-k"),
    ("-dash.k", "Liabilities:Customers:XDash-dash-Dot-k"),
    ("9lives", "Liabilities:Customers:9lives"),
])
def test_a_customer_account_is_the_user_name_as_people_read_it(username: str,
                                                                account: str) -> None:
    assert account_name(journal.customer(username)) == account


@ONE_STORE
def test_a_customer_whose_name_starts_with_a_dash_is_exported_in_a_file_bean_check_accepts(
    ledger: Ledger, tmp_path: Path
) -> None:
    ledger.app.open_account("-dash.k", "USD", actor=Actor("system:x", "r"))
    ledger.app.deposit("-dash.k", 100, "PAY-1", actor=Actor("system:x", "r"))
    ledger.read_models.wait_caught_up()

    checked = bean_check(written(export, ledger.read_models.journal_entries()), tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_entry_landing_after_another_account_s_of_the_next_day_passes_bean_check(
    tmp_path: Path,
) -> None:
    # given commands decided just before midnight that landed in the log after one decided
    # just after it (two threads, two servers): the log goes back a day, twice
    def deposit(position: int, username: str, at: str, amount: int) -> dict[str, object]:
        return {"position": position, "type": "deposit_received", "event_id": f"e/{position}",
                "username": username, "currency": "USD", "at": at, "actor": "system:x",
                "postings": [{"account": journal.DEPOSITS, "amount": amount},
                             {"account": journal.customer(username), "amount": -amount}]}

    entries = [deposit(1, "bob", "2026-03-02T00:00:00.000001Z", 200),
               deposit(2, "ann", "2026-03-01T23:59:59.999990Z", 100),
               deposit(3, "bob", "2026-03-02T00:00:00.000002Z", 10),
               deposit(4, "ann", "2026-03-01T23:59:59.999999Z", 50)]

    # when they are exported
    text = written(export, entries)

    # then bean-check accepts it: the clearing account is open on the earlier day, and ann's
    # end of the day is asserted once, with both her deposits of that day
    checked = bean_check(text, tmp_path)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    assert re.findall(r"^2026-03-02 balance Liabilities:Customers:Ann .*$", text,
                      re.MULTILINE) == ["2026-03-02 balance Liabilities:Customers:Ann  -1.50 USD"]
    assert "2026-03-01 open Assets:Clearing:Deposits" in text
