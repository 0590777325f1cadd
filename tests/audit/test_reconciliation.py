"""Finance's reconciliation (DOMAIN.md, "Invariants" 1-3 and 7), on both stores.

Over long random histories, the reconciliation at every position of the log holds and its
figures are the plain-Python model's at that point. A read-model row changed by hand makes it
report not ok where the two read models it compares (journal and accounts) disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.account import Account, account_id
from tests.audit.conftest import Intruder, Ledger, fresh_ledger
from tests.audit.history import (
    INVARIANTS,
    PLANS,
    SYSTEM,
    Customer,
    Figures,
    History,
    PlanChooser,
    RandomChooser,
)

STORES = ["sqlite", "postgres"]


@pytest.mark.parametrize("store", STORES)
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=PLANS, commands=st.integers(30, 60))
def test_reconciliation_holds_at_every_position_with_the_model_s_figures(
    store: str, plan: list[int], commands: int
) -> None:
    with fresh_ledger(store) as ledger:
        # given a random history of deposits, purchases, failures, refunds and return cases
        history = History(ledger.app, PlanChooser(plan)).run(commands)
        ledger.read_models.wait_caught_up()
        figures = Figures(history)

        # when finance reconciles each currency at each position, then it holds with the
        # model's figures there
        for currency in history.currencies():
            for expected in figures.at_every_position(currency):
                report = ledger.read_models.reconciliation(currency, expected["position"])
                invariants = report.pop("invariants")
                assert report == expected
                assert invariants.keys() >= set(INVARIANTS) and all(invariants.values()), report


@pytest.fixture
def reconciled(ledger: Ledger) -> tuple[Ledger, History]:
    history = History(ledger.app, RandomChooser(seed=7)).run(40)
    ledger.read_models.wait_caught_up()
    ledger.stop_keeper()  # nothing may repair what the intruder changes
    assert all(ledger.read_models.reconciliation(c)["ok"] for c in history.currencies())
    return ledger, history


def change_history_row(reconciled: tuple[Ledger, History], intruder: Intruder, move: int,
                       assignment: str) -> tuple[Customer, int]:
    """Change by hand (``SET assignment``) the row of the first customer's balance history at
    its ``move``-th event (Python's indexing); answers the customer and the row's position."""
    ledger, history = reconciled
    customer = next(iter(history.customers.values()))
    row = ledger.read_models.history(customer.username, limit=1000, after=None).items[move]
    intruder.read_model_sql(
        "accounts",
        f"UPDATE rm_account_history SET {assignment} WHERE position = {row['position']}",
    )
    return customer, int(row["position"])


def test_an_account_history_row_changed_by_hand_breaks_reconciliation_from_that_position(
    reconciled: tuple[Ledger, History], intruder: Intruder
) -> None:
    ledger, _ = reconciled
    customer, position = change_history_row(reconciled, intruder, -1,
                                            "posted_after = posted_after + 1")

    report = ledger.read_models.reconciliation(customer.currency)
    assert not report["ok"]
    assert not report["invariants"]["journal_equals_account_balances"]
    assert not report["invariants"]["customer_balances_equal_flows"]
    assert report["invariants"]["trial_balance_zero"]  # the journal itself is untouched
    assert ledger.read_models.reconciliation(customer.currency, position - 1)["ok"]


def test_a_journal_posting_changed_by_hand_unbalances_the_trial_balance_from_its_position(
    reconciled: tuple[Ledger, History], intruder: Intruder
) -> None:
    ledger, _ = reconciled
    entry = next(ledger.read_models.journal_entries())
    position, currency = entry["position"], entry["currency"]

    intruder.read_model_sql(
        "journal",
        f"UPDATE rm_journal SET amount = amount + 1 WHERE position = {position} AND leg = 0",
    )

    report = ledger.read_models.reconciliation(currency)
    assert not report["ok"]
    assert report["trial_balance"] == 1
    assert not report["invariants"]["trial_balance_zero"]
    assert ledger.read_models.reconciliation(currency, position - 1)["ok"]
    assert not ledger.read_models.reconciliation(currency, position)["ok"]


def test_an_account_balance_changed_by_hand_makes_today_s_reconciliation_not_ok(
    reconciled: tuple[Ledger, History], intruder: Intruder
) -> None:
    # given the balance customers and CS are shown (rm_accounts) raised by one cent
    ledger, history = reconciled
    customer = next(iter(history.customers.values()))
    intruder.read_model_sql(
        "accounts",
        f"UPDATE rm_accounts SET posted = posted + 1 WHERE username = '{customer.username}'",
    )
    shown = ledger.read_models.account(customer.username)
    assert shown is not None and shown["posted"] == customer.posted + 1

    # when finance reconciles the customer's currency now
    report = ledger.read_models.reconciliation(customer.currency)

    # then the sum of the balances the ledger shows no longer equals the journal's
    assert not report["ok"], (
        "reconciliation sums customer balances from rm_account_history only, so a balance "
        f"shown to the customer that disagrees with the journal goes unnoticed: {report}"
    )


def test_a_credit_back_on_an_order_never_paid_breaks_refunds_within_paid(
    reconciled: tuple[Ledger, History], intruder: Intruder
) -> None:
    # given a deposit's journal entry turned by hand into a credit back on an order never paid
    ledger, _ = reconciled
    entry = next(e for e in ledger.read_models.journal_entries()
                 if e["type"] == "deposit_received")
    intruder.read_model_sql(
        "journal",
        "UPDATE rm_journal SET type = 'purchase_failed', order_no = 'NEVER-PAID'"
        f" WHERE position = {entry['position']}",
    )

    # when finance reconciles its currency, then refunds are no longer within what was paid
    report = ledger.read_models.reconciliation(entry["currency"])
    assert not report["ok"]
    assert not report["invariants"]["refunds_within_paid"]
    assert report["invariants"]["trial_balance_zero"]  # the postings still balance
    assert ledger.read_models.reconciliation(entry["currency"], entry["position"] - 1)["ok"]


def test_a_balance_history_row_below_zero_breaks_available_never_negative(
    reconciled: tuple[Ledger, History], intruder: Intruder
) -> None:
    # given a row of a customer's balance history holding more than it had
    ledger, _ = reconciled
    customer, _ = change_history_row(reconciled, intruder, 0, "held_after = posted_after + 1")

    # when finance reconciles the currency, then an available balance went below zero
    report = ledger.read_models.reconciliation(customer.currency)
    assert not report["ok"]
    assert not report["invariants"]["available_never_negative"]


def test_reconciliation_as_of_any_moment_sums_every_balance_as_of_that_moment(
    ledger: Ledger,
) -> None:
    # given a history in two currencies, and every moment an account event was recorded at
    history = History(ledger.app, RandomChooser(seed=11)).run(40)
    ledger.read_models.wait_caught_up()
    rm = ledger.read_models
    recorded = sorted(
        (row["at"], row["position"])
        for customer in history.customers.values()
        for row in rm.history(customer.username, limit=1000, after=None).items
    )
    first, last = _moment(recorded[0][0]), _moment(recorded[-1][0])
    tick = timedelta(microseconds=1)
    asked = [first - tick, last + timedelta(days=365 * 100)]
    for at, _ in recorded:  # exactly at it, just before it, and the same instant at +05:30
        asked += [_moment(at), _moment(at) - tick,
                  _moment(at).astimezone(timezone(timedelta(hours=5, minutes=30)))]

    for moment in asked:
        # when finance reconciles as of that moment
        position = rm.position_as_of(moment)

        # then it stands after the last event recorded at or before it (0 before the first)
        assert position == max((p for at, p in recorded if _moment(at) <= moment), default=0)
        for currency in history.currencies():
            report = rm.reconciliation(currency, position)
            assert report["ok"], (moment, report)
            # and its customers' balances are those each account shows as of the moment
            balances = [rm.balance(c.username, as_of=moment)
                        for c in history.customers.values() if c.currency == currency]
            shown = [b for b in balances if b is not None]
            assert report["customer_balances"]["posted"] == sum(b["posted"] for b in shown)
            assert report["customer_balances"]["held"] == sum(b["held"] for b in shown)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_reconciliation_as_of_a_moment_never_counts_an_event_recorded_after_it(
    ledger: Ledger,
) -> None:
    # given two deposits decided in one order and committed in the other, as two requests'
    # threads (or two servers) may: ann's is decided first, bob's lands first in the log
    app = ledger.app
    for username in ("ann", "bob"):
        app.open_account(username, "USD", actor=SYSTEM)
        app.deposit(username, 1_000, f"{username}-1", actor=SYSTEM)
    ann: Account = app.repository.get(account_id("ann"))
    bob: Account = app.repository.get(account_id("bob"))
    ann.receive_deposit(100, "ann-2", actor=SYSTEM)
    bob.receive_deposit(200, "bob-2", actor=SYSTEM)
    app.save(bob)
    app.save(ann)
    ledger.read_models.wait_caught_up()
    rm = ledger.read_models
    entries = list(rm.journal_entries(currency="USD"))
    late_ann, early_bob = entries[-1], entries[-2]
    assert (late_ann["username"], early_bob["username"]) == ("ann", "bob")
    assert late_ann["at"] < early_bob["at"] and late_ann["position"] > early_bob["position"]

    # when finance reconciles as of the moment ann's deposit was decided, before bob's
    moment = _moment(late_ann["at"])
    position = rm.position_as_of(moment)

    # then nothing recorded after that moment is counted: bob's deposit was not history yet,
    # and neither was ann's, which landed in the log after it
    assert all(_moment(e["at"]) <= moment for e in entries if e["position"] <= position)
    assert position < early_bob["position"]
    report = rm.reconciliation("USD", position)
    assert report["ok"] and report["totals"]["deposits"] == 2_000


def test_refund_requests_paged_at_any_size_are_each_listed_once_and_sum_to_their_totals(
    reconciled: tuple[Ledger, History],
) -> None:
    ledger, _ = reconciled
    rm = ledger.read_models
    every = rm.refund_requests(status=None, username=None, limit=1000, after=None)
    assert every.next is None and len(every.items) >= 3  # the history asked for refunds
    for status in (None, "open", "requested", "approved", "paid", "rejected", "cancelled"):
        totals = {t["currency"]: t for t in rm.refund_request_totals(
            status=status, username=None, currency=None)}
        for limit in (1, 2, 3, 7):
            # when finance pages through the requests a few at a time
            seen: list[dict[str, Any]] = []
            after: str | None = None
            for _ in range(len(every.items) + 1):  # bounded: one page per request at most
                page = rm.refund_requests(status=status, username=None, limit=limit,
                                          after=after)
                seen += page.items
                if page.next is None:
                    break
                after = page.next
            # then each is listed once, and the pages add up to the totals per currency
            assert len({r["id"] for r in seen}) == len(seen), (status, limit)
            paged: dict[str, list[int]] = {}
            for r in seen:
                paged.setdefault(r["currency"], []).append(r["amount"])
            assert {c: (len(a), sum(a)) for c, a in paged.items()} == {
                c: (t["count"], t["amount"]) for c, t in totals.items()}, (status, limit)
    # and what finance is told stands out counts the same requests
    report = rm.unmatched(currency=None, idle_before=datetime.now(UTC), limit=1)
    for section, status in (("refunds_waiting", "requested"), ("payouts_not_paid", "approved")):
        totals_of = rm.refund_request_totals(status=status, username=None, currency=None)
        assert [(c["currency"], c["count"], c["amount"]) for c in report[section]["by_currency"]
                ] == [(t["currency"], t["count"], t["amount"]) for t in totals_of]
        assert len(report[section]["items"]) == min(1, report[section]["count"])
