"""Balance refunds, on both stores: request (hold), approve, reject, cancel, pay out.

Every step that moves money saves the request and the account in one transaction.
"""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from ledger.application import LedgerApplication
from ledger.errors import (
    FourEyes,
    InsufficientFunds,
    InvalidInput,
    InvalidTransition,
    NotFound,
    RequestOpenForOrder,
    UnknownOrder,
)
from ledger.identity import Actor
from tests.app.conftest import last_position, open_funded


@pytest.fixture
def funded(app: LedgerApplication, system: Actor) -> LedgerApplication:
    """Alice deposited 2,000 (PAY-FUND) and paid 500 for ORD-1: 1,500 available."""
    open_funded(app, system, amount=2_000)
    app.purchase("alice", "ORD-1", 500, actor=system)
    return app


def balances(app: LedgerApplication) -> tuple[int, int, int]:
    account = app.account("alice")
    return account.posted, account.held, account.available


def requested(app: LedgerApplication, actor: Actor, amount: int = 600) -> UUID:
    outcome = app.request_refund("alice", "ORD-1", amount, "moving abroad", actor=actor)
    return UUID(outcome.body["id"])


def test_a_refund_request_holds_its_amount_and_answers_the_request(
    funded: LedgerApplication, cs: Actor,
) -> None:
    outcome = funded.request_refund("alice", "ORD-1", 600, "moving abroad", actor=cs)

    request_id = UUID(outcome.body["id"])
    assert outcome.outcome == "created"
    assert outcome.body == {
        "id": str(request_id), "username": "alice", "currency": "USD", "order_no": "ORD-1",
        "amount": 600, "reason": "moving abroad", "status": "requested",
        "decision_reason": None, "approvers": [],
    }
    assert outcome.position == last_position(funded)
    assert balances(funded) == (1_500, 600, 900)
    assert funded.refund_request(request_id).status == "requested"
    assert funded.account("alice").holds == {str(request_id): 600}


def test_a_refund_request_and_its_hold_are_written_in_one_transaction(
    funded: LedgerApplication, cs: Actor,
) -> None:
    before = last_position(funded)

    outcome = funded.request_refund("alice", "PAY-FUND", 100, "overpaid", actor=cs)

    written = funded.recorder.select_notifications(start=before + 1, limit=10)
    assert {n.originator_id for n in written} == {
        funded.account("alice").id, UUID(outcome.body["id"]),
    }
    assert outcome.position == max(n.id for n in written)


def test_an_approved_request_still_holds_its_amount(
    funded: LedgerApplication, cs: Actor, finance: Actor,
) -> None:
    request_id = requested(funded, cs)

    outcome = funded.approve_refund(request_id, "balance checked", actor=finance)

    assert (outcome.outcome, outcome.body["status"]) == ("ok", "approved")
    assert outcome.position == last_position(funded)
    assert balances(funded) == (1_500, 600, 900)


def test_paying_out_an_approved_request_takes_it_off_the_balance_and_releases_the_hold(
    funded: LedgerApplication, cs: Actor, finance: Actor, payer: Actor,
) -> None:
    request_id = requested(funded, cs)
    funded.approve_refund(request_id, "ok", actor=finance)

    outcome = funded.pay_refund(request_id, "WIRE-2026-1", actor=payer)

    assert (outcome.outcome, outcome.body["status"]) == ("ok", "paid")
    assert balances(funded) == (900, 0, 900)
    paid_out = list(funded.repository.event_store.get(request_id))[-1]
    assert paid_out.payout_reference == "WIRE-2026-1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("approved_first", [False, True], ids=["requested", "approved"])
@pytest.mark.parametrize("step", ["reject", "cancel"])
def test_rejecting_or_cancelling_an_open_request_releases_its_hold(
    funded: LedgerApplication, cs: Actor, finance: Actor, step: str, approved_first: bool,
) -> None:
    request_id = requested(funded, cs)
    if approved_first:
        funded.approve_refund(request_id, "ok", actor=finance)
    do = funded.reject_refund if step == "reject" else funded.cancel_refund

    outcome = do(request_id, "not eligible", actor=finance)

    assert outcome.body["status"] == {"reject": "rejected", "cancel": "cancelled"}[step]
    assert balances(funded) == (1_500, 0, 1_500)
    # and the order may carry a new request
    requested(funded, cs, amount=1_500)
    assert balances(funded) == (1_500, 1_500, 0)


def test_a_request_that_was_not_approved_cannot_be_paid_out(
    funded: LedgerApplication, cs: Actor, finance: Actor, payer: Actor,
) -> None:
    request_id = requested(funded, cs)
    before = last_position(funded)

    with pytest.raises(InvalidTransition):
        funded.pay_refund(request_id, "WIRE-1", actor=payer)

    assert last_position(funded) == before
    assert balances(funded) == (1_500, 600, 900)
    assert funded.refund_request(request_id).status == "requested"


@pytest.mark.parametrize("finished_by", ["pay", "reject", "cancel"])
@pytest.mark.parametrize("then", ["approve", "reject", "cancel", "pay"])
def test_a_finished_request_takes_no_further_step(
    funded: LedgerApplication, cs: Actor, finance: Actor, payer: Actor, finished_by: str, then: str,
) -> None:
    request_id = requested(funded, cs)
    funded.approve_refund(request_id, "ok", actor=finance)
    steps = {
        "approve": lambda: funded.approve_refund(request_id, "again", actor=finance),
        "reject": lambda: funded.reject_refund(request_id, "late", actor=finance),
        "cancel": lambda: funded.cancel_refund(request_id, "late", actor=cs),
        "pay": lambda: funded.pay_refund(request_id, "WIRE-2", actor=payer),
    }
    steps[finished_by]()
    before, money_before = last_position(funded), balances(funded)

    with pytest.raises(InvalidTransition):
        steps[then]()

    assert last_position(funded) == before
    assert balances(funded) == money_before


def test_a_request_id_that_names_no_refund_request_is_not_found(
    funded: LedgerApplication, finance: Actor, payer: Actor,
) -> None:
    for unknown in (uuid4(), funded.account("alice").id):
        with pytest.raises(NotFound):
            funded.approve_refund(unknown, "ok", actor=finance)
        with pytest.raises(NotFound):
            funded.pay_refund(unknown, "WIRE-1", actor=payer)
        with pytest.raises(NotFound):
            funded.cancel_refund(unknown, "no", actor=finance)


def test_a_refund_request_beyond_the_refundable_balance_is_refused(
    funded: LedgerApplication, cs: Actor,
) -> None:
    before = last_position(funded)

    with pytest.raises(InsufficientFunds):
        funded.request_refund("alice", "ORD-1", 1_501, "all and more", actor=cs)

    assert last_position(funded) == before
    assert balances(funded) == (1_500, 0, 1_500)


def test_a_refund_request_must_name_an_order_or_deposit_reference_of_the_account(
    funded: LedgerApplication, cs: Actor,
) -> None:
    with pytest.raises(UnknownOrder):
        funded.request_refund("alice", "ORD-404", 100, "?", actor=cs)

    funded.request_refund("alice", "PAY-FUND", 100, "overpaid", actor=cs)
    assert balances(funded) == (1_500, 100, 1_400)


def test_a_second_open_request_on_the_same_order_is_refused(
    funded: LedgerApplication, cs: Actor,
) -> None:
    requested(funded, cs, amount=100)
    before = last_position(funded)

    with pytest.raises(RequestOpenForOrder):
        funded.request_refund("alice", "ORD-1", 100, "again", actor=cs)

    assert last_position(funded) == before


@pytest.mark.parametrize(
    ("order_no", "amount", "reason", "field"),
    [("ORD-1", 0, "r", "amount"), (" ORD-1", 100, "r", "order_no"),
     ("ORD-1", 100, "r" * 2001, "reason")],
)
def test_a_refund_request_with_invalid_input_is_refused(
    funded: LedgerApplication, cs: Actor, order_no: str, amount: int, reason: str, field: str,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        funded.request_refund("alice", order_no, amount, reason, actor=cs)

    assert refused.value.field == field


def test_a_payout_reference_must_be_printable_ascii(
    funded: LedgerApplication, cs: Actor, finance: Actor, payer: Actor,
) -> None:
    request_id = requested(funded, cs)
    funded.approve_refund(request_id, "ok", actor=finance)

    with pytest.raises(InvalidInput) as refused:
        funded.pay_refund(request_id, "", actor=payer)

    assert refused.value.field == "payout_reference"
    assert funded.refund_request(request_id).status == "approved"


def test_the_request_s_stored_events_say_who_took_each_step(
    funded: LedgerApplication, cs: Actor, finance: Actor, payer: Actor,
) -> None:
    request_id = requested(funded, cs)
    funded.approve_refund(request_id, "balance checked", actor=finance)
    funded.pay_refund(request_id, "WIRE-1", actor=payer)

    stored = list(funded.repository.event_store.get(request_id))

    assert [(type(e).__name__, e.actor) for e in stored] == [  # type: ignore[attr-defined]
        ("Requested", cs.name), ("Approved", finance.name), ("PaidOut", payer.name),
    ]


def test_two_named_finance_people_are_named_in_the_events_and_the_approver_cannot_pay(
    funded: LedgerApplication, cs: Actor,
) -> None:
    ann = Actor.of_person("ann", "finance", "req-ann")
    bea = Actor.of_person("bea", "finance", "req-bea")
    request_id = requested(funded, cs)
    funded.approve_refund(request_id, "checked", actor=ann)

    with pytest.raises(FourEyes):
        funded.pay_refund(request_id, "WIRE-1", actor=ann)
    funded.pay_refund(request_id, "WIRE-1", actor=bea)

    stored = list(funded.repository.event_store.get(request_id))
    actors = [e.actor for e in stored]  # type: ignore[attr-defined]
    assert actors[1:] == ["finance:ann", "finance:bea"]
    assert balances(funded) == (900, 0, 900)
