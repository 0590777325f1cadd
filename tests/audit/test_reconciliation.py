"""Finance's reconciliation (DOMAIN.md, "Invariants" 1-3 and 7), on both stores.

Over long random histories, the reconciliation at every position of the log holds and its
figures are the plain-Python model's at that point. A read-model row changed by hand makes it
report not ok where the two read models it compares (journal and accounts) disagree.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.audit.conftest import Intruder, Ledger, fresh_ledger
from tests.audit.history import (
    INVARIANTS,
    PLANS,
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
