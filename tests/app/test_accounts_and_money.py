"""Use cases on money, on both stores: open an account, deposit, purchase, fail a purchase.

Every write answers an Outcome: ``created`` (or ``existing`` for a natural duplicate), the body
the API shows, and the log position of the last event it wrote.
"""

from __future__ import annotations

from typing import Any

import pytest

from ledger.application import LedgerApplication
from ledger.clock import rfc3339
from ledger.errors import (
    AccountExists,
    DuplicateOrder,
    DuplicateReference,
    InsufficientFunds,
    InvalidInput,
    NotFound,
    OverRefundable,
    UnknownOrder,
)
from ledger.identity import Actor
from tests.app.conftest import last_position, open_funded

# -- opening accounts --------------------------------------------------------------------------


def test_opening_an_account_answers_the_new_account_at_its_log_position(
    app: LedgerApplication, system: Actor,
) -> None:
    outcome = app.open_account("  Alice ", "USD", actor=system)

    account = app.account("alice")
    assert outcome.outcome == "created"
    assert outcome.replayed is False
    assert outcome.body == {
        "username": "alice", "currency": "USD", "posted": 0, "held": 0, "available": 0,
        "refundable": 0, "opened_at": rfc3339(account.created_on), "version": 1,
    }
    assert outcome.position == last_position(app) > 0


@pytest.mark.parametrize(("second_name", "currency"), [("alice", "USD"), ("ALICE ", "EUR")])
def test_a_user_name_has_one_account_only(
    app: LedgerApplication, system: Actor, cs: Actor, second_name: str, currency: str,
) -> None:
    app.open_account("alice", "USD", actor=system)
    before = last_position(app)

    with pytest.raises(AccountExists) as refused:
        app.open_account(second_name, currency, actor=cs)

    assert refused.value.context == {"username": "alice"}
    assert last_position(app) == before
    assert app.account("alice").currency == "USD"


@pytest.mark.parametrize(
    ("username", "currency", "field"),
    [("al", "USD", "username"), ("alice smith", "USD", "username"), ("alice", "usd", "currency"),
     ("alice", "XXX", "currency")],
)
def test_an_account_with_an_invalid_name_or_currency_is_refused_and_nothing_is_stored(
    app: LedgerApplication, system: Actor, username: str, currency: str, field: str,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        app.open_account(username, currency, actor=system)

    assert refused.value.field == field
    assert last_position(app) == 0


def test_an_account_nobody_opened_is_not_found(app: LedgerApplication, system: Actor) -> None:
    with pytest.raises(NotFound):
        app.account("nobody")
    with pytest.raises(NotFound):
        app.deposit("nobody", 100, "PAY-1", actor=system)
    with pytest.raises(NotFound):
        app.purchase("nobody", "ORD-1", 100, actor=system)
    with pytest.raises(NotFound):
        app.fail_purchase("nobody", "ORD-1", None, "failed", actor=system)

    assert last_position(app) == 0


# -- deposits ----------------------------------------------------------------------------------


def test_a_deposit_credits_the_account_and_answers_it(
    app: LedgerApplication, system: Actor,
) -> None:
    app.open_account("alice", "USD", actor=system)

    outcome = app.deposit("Alice", 2_500, "PAY-1", actor=system)

    assert outcome.outcome == "created"
    assert outcome.body["account"]["posted"] == outcome.body["account"]["available"] == 2_500
    assert outcome.body["account"]["version"] == 2
    assert outcome.position == last_position(app)
    assert app.account("alice").posted == 2_500


def test_every_write_lands_at_a_later_log_position(app: LedgerApplication, system: Actor) -> None:
    positions = [
        app.open_account("alice", "USD", actor=system).position,
        app.deposit("alice", 2_500, "PAY-1", actor=system).position,
        app.open_account("bob", "EUR", actor=system).position,
        app.purchase("alice", "ORD-1", 500, actor=system).position,
        app.deposit("bob", 10, "PAY-1", actor=system).position,
        app.fail_purchase("alice", "ORD-1", 100, "failed", actor=system).position,
    ]

    assert positions == sorted(set(positions))


def test_a_deposit_seen_before_with_the_same_amount_answers_the_original_and_writes_nothing(
    app: LedgerApplication, system: Actor,
) -> None:
    app.open_account("alice", "USD", actor=system)
    original = app.deposit("alice", 2_500, "PAY-1", actor=system)
    app.purchase("alice", "ORD-1", 100, actor=system)
    before = last_position(app)

    again = app.deposit("alice", 2_500, "PAY-1", actor=system)

    assert again.outcome == "existing"
    assert again.position == original.position < before
    assert again.replayed is False
    assert last_position(app) == before
    assert app.account("alice").posted == 2_400


def test_a_payment_reference_seen_before_with_another_amount_is_refused(
    app: LedgerApplication, system: Actor,
) -> None:
    app.open_account("alice", "USD", actor=system)
    app.deposit("alice", 2_500, "PAY-1", actor=system)
    before = last_position(app)

    with pytest.raises(DuplicateReference):
        app.deposit("alice", 2_499, "PAY-1", actor=system)

    assert last_position(app) == before
    assert app.account("alice").posted == 2_500


def test_the_same_payment_reference_on_two_accounts_is_two_deposits(
    app: LedgerApplication, system: Actor,
) -> None:
    app.open_account("alice", "USD", actor=system)
    app.open_account("bob", "USD", actor=system)

    app.deposit("alice", 100, "PAY-1", actor=system)
    outcome = app.deposit("bob", 100, "PAY-1", actor=system)

    assert outcome.outcome == "created"
    assert app.account("bob").posted == 100


@pytest.mark.parametrize(
    ("amount", "reference", "field"),
    [(0, "PAY-1", "amount"), (10**12 + 1, "PAY-1", "amount"), (True, "PAY-1", "amount"),
     (100.0, "PAY-1", "amount"), (100, " PAY-1", "reference"), (100, "P" * 129, "reference"),
     (100, "", "reference")],
)
def test_a_deposit_with_an_invalid_amount_or_reference_is_refused_and_nothing_is_stored(
    app: LedgerApplication, system: Actor, amount: Any, reference: str, field: str,
) -> None:
    app.open_account("alice", "USD", actor=system)
    before = last_position(app)

    with pytest.raises(InvalidInput) as refused:
        app.deposit("alice", amount, reference, actor=system)

    assert refused.value.field == field
    assert last_position(app) == before


def test_the_largest_deposits_are_kept_exactly(app: LedgerApplication, system: Actor) -> None:
    app.open_account("alice", "USD", actor=system)
    for n in range(3):
        app.deposit("alice", 10**12, f"PAY-{n}", actor=system)

    assert app.account("alice").posted == 3 * 10**12


# -- purchases ---------------------------------------------------------------------------------


def test_a_purchase_debits_the_account_and_answers_it(
    app: LedgerApplication, system: Actor,
) -> None:
    open_funded(app, system, amount=2_000)

    outcome = app.purchase("alice", "ORD-1", 1_500, actor=system)

    assert outcome.outcome == "created"
    assert outcome.body["account"]["available"] == 500
    assert outcome.position == last_position(app)
    assert app.account("alice").orders == {"ORD-1": [1_500, 0]}


def test_a_purchase_beyond_the_available_balance_is_refused_and_changes_nothing(
    app: LedgerApplication, system: Actor,
) -> None:
    open_funded(app, system, amount=2_000)
    before = last_position(app)

    with pytest.raises(InsufficientFunds):
        app.purchase("alice", "ORD-1", 2_001, actor=system)

    assert last_position(app) == before
    assert app.account("alice").available == 2_000


def test_an_order_number_is_paid_once_only(app: LedgerApplication, system: Actor) -> None:
    open_funded(app, system, amount=2_000)
    first = app.purchase("alice", "ORD-1", 500, actor=system)
    before = last_position(app)

    again = app.purchase("alice", "ORD-1", 500, actor=system)
    assert (again.outcome, again.position) == ("existing", first.position)
    with pytest.raises(DuplicateOrder):
        app.purchase("alice", "ORD-1", 501, actor=system)

    assert last_position(app) == before
    assert app.account("alice").available == 1_500


@pytest.mark.parametrize(
    ("order_no", "amount", "field"),
    [("ORD-1", 0, "amount"), ("ORD-1", -100, "amount"), ("ORD 1 ", 100, "order_no"),
     ("O" * 129, 100, "order_no")],
)
def test_a_purchase_with_an_invalid_order_number_or_amount_is_refused(
    app: LedgerApplication, system: Actor, order_no: str, amount: int, field: str,
) -> None:
    open_funded(app, system)
    before = last_position(app)

    with pytest.raises(InvalidInput) as refused:
        app.purchase("alice", order_no, amount, actor=system)

    assert refused.value.field == field
    assert last_position(app) == before


# -- failed purchases --------------------------------------------------------------------------


def test_a_failed_purchase_credits_back_what_is_left_on_the_order_by_default(
    app: LedgerApplication, system: Actor, cs: Actor,
) -> None:
    open_funded(app, system, amount=2_000)
    app.purchase("alice", "ORD-1", 1_500, actor=system)

    outcome = app.fail_purchase("alice", "ORD-1", None, "  supplier out of stock ", actor=cs)

    assert outcome.outcome == "created"
    assert outcome.body["account"]["available"] == 2_000
    assert app.account("alice").orders["ORD-1"] == [1_500, 1_500]


def test_a_failed_purchase_may_credit_part_and_never_more_than_is_left(
    app: LedgerApplication, system: Actor, cs: Actor,
) -> None:
    open_funded(app, system, amount=2_000)
    app.purchase("alice", "ORD-1", 1_500, actor=system)
    app.fail_purchase("alice", "ORD-1", 1_000, "partly failed", actor=cs)
    before = last_position(app)

    with pytest.raises(OverRefundable):
        app.fail_purchase("alice", "ORD-1", 501, "the rest and a bit", actor=cs)
    assert last_position(app) == before

    app.fail_purchase("alice", "ORD-1", 500, "the rest", actor=cs)
    with pytest.raises(OverRefundable):
        app.fail_purchase("alice", "ORD-1", None, "nothing left", actor=cs)
    assert app.account("alice").posted == 2_000


def test_a_failure_of_an_order_the_account_never_paid_is_refused(
    app: LedgerApplication, system: Actor, cs: Actor,
) -> None:
    open_funded(app, system)
    before = last_position(app)

    with pytest.raises(UnknownOrder):
        app.fail_purchase("alice", "ORD-404", None, "failed", actor=cs)

    assert last_position(app) == before


def test_a_failure_reason_longer_than_2000_characters_is_refused(
    app: LedgerApplication, system: Actor, cs: Actor,
) -> None:
    open_funded(app, system)
    app.purchase("alice", "ORD-1", 100, actor=system)

    with pytest.raises(InvalidInput) as refused:
        app.fail_purchase("alice", "ORD-1", None, "x" * 2001, actor=cs)

    assert refused.value.field == "reason"


def test_events_stored_by_a_use_case_carry_its_actor_and_http_request(
    app: LedgerApplication, system: Actor, cs: Actor,
) -> None:
    open_funded(app, system)
    app.purchase("alice", "ORD-1", 100, actor=system)
    app.fail_purchase("alice", "ORD-1", None, "failed", actor=cs)

    stored = app.repository.event_store.get(app.account("alice").id)

    assert [(e.actor, e.correlation_id) for e in stored] == [  # type: ignore[attr-defined]
        (system.name, system.request_id)
    ] * 3 + [(cs.name, cs.request_id)]
