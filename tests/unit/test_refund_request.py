"""A balance-refund request's lifecycle.

    requested ──► approved ──► paid
        │             │
        └──► rejected / cancelled (from requested or approved)

Any other step is refused with InvalidTransition and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import pytest

from ledger.errors import FourEyes, InvalidInput, InvalidTransition, LedgerError
from ledger.identity import Actor
from ledger.refund_request import RefundRequest, second_approval_thresholds

STEPS = ("approve", "reject", "cancel", "pay")
ARRIVES_AT = {"approve": "approved", "reject": "rejected", "cancel": "cancelled", "pay": "paid"}
ALLOWED = {
    "requested": {"approve", "reject", "cancel"},
    "approved": {"reject", "cancel", "pay"},
    "rejected": set(),
    "cancelled": set(),
    "paid": set(),
}
# Every state, reached by every route the lifecycle allows.
ROUTES = {
    "requested": [],
    "approved": ["approve"],
    "rejected-at-once": ["reject"],
    "rejected-after-approval": ["approve", "reject"],
    "cancelled-at-once": ["cancel"],
    "cancelled-after-approval": ["approve", "cancel"],
    "paid": ["approve", "pay"],
}


def new_request(actor: Actor, amount: int = 700) -> RefundRequest:
    return RefundRequest.request(
        id=uuid4(), username="alice", currency="USD", order_no="ORD-1", amount=amount,
        reason="moving abroad", actor=actor,
    )


# Four eyes: the person who approved a request cannot pay it, so another person pays.
PAYER = Actor.of_person("bea", "finance", "req-pay")


def take(request: RefundRequest, step: str, actor: Actor) -> None:
    do: dict[str, Callable[[], None]] = {
        "approve": lambda: request.approve("checked", actor=actor),
        "reject": lambda: request.reject("not eligible", actor=actor),
        "cancel": lambda: request.cancel("customer withdrew", actor=actor),
        "pay": lambda: request.pay("WIRE-1", actor=PAYER),
    }
    do[step]()


def test_a_new_request_is_requested_and_open_and_shows_what_was_asked(cs: Actor) -> None:
    request = new_request(cs)

    assert request.status == "requested"
    assert request.is_open
    assert request.version == 1
    assert request.snapshot() == {
        "id": str(request.id),
        "username": "alice",
        "currency": "USD",
        "order_no": "ORD-1",
        "amount": 700,
        "reason": "moving abroad",
        "status": "requested",
        "decision_reason": None,
        "approvers": [],
    }


@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
@pytest.mark.parametrize("step", STEPS)
def test_a_step_is_taken_only_from_the_states_that_allow_it(
    cs: Actor, finance: Actor, route: list[str], step: str,
) -> None:
    request = new_request(cs)
    for earlier in route:
        take(request, earlier, finance)
    status, version = request.status, request.version

    if step in ALLOWED[status]:
        take(request, step, finance)

        assert request.status == ARRIVES_AT[step]
        assert request.version == version + 1
    else:
        with pytest.raises(InvalidTransition) as refused:
            take(request, step, finance)

        assert refused.value.context == {"status": status}
        assert (request.status, request.version) == (status, version)


def test_the_transition_table_covers_every_state_the_routes_reach(
    cs: Actor, finance: Actor,
) -> None:
    reached = set()
    for route in ROUTES.values():
        request = new_request(cs)
        for step in route:
            take(request, step, finance)
        reached.add(request.status)

    assert reached == set(ALLOWED)


@pytest.mark.parametrize(
    ("route", "is_open"),
    [([], True), (["approve"], True), (["reject"], False), (["approve", "cancel"], False),
     (["approve", "pay"], False)],
)
def test_a_request_is_open_until_it_is_paid_rejected_or_cancelled(
    cs: Actor, finance: Actor, route: list[str], is_open: bool,
) -> None:
    request = new_request(cs)
    for step in route:
        take(request, step, finance)

    assert request.is_open is is_open


def test_an_invalid_transition_is_an_expected_refusal(cs: Actor, finance: Actor) -> None:
    request = new_request(cs)

    with pytest.raises(LedgerError) as refused:
        request.pay("WIRE-1", actor=finance)

    assert refused.value.code == "invalid_transition"


def test_each_step_s_event_records_what_its_actor_said(cs: Actor, finance: Actor) -> None:
    request = new_request(cs)
    request.approve("balance checked", actor=finance)
    request.pay("WIRE-9", actor=PAYER)
    other = new_request(cs)
    other.reject("not eligible", actor=finance)
    third = new_request(cs)
    third.cancel("customer withdrew", actor=cs)

    requested, approved, paid = request.collect_events()
    rejected = other.collect_events()[-1]
    cancelled = third.collect_events()[-1]

    assert (requested.reason, requested.amount, requested.order_no) == (
        "moving abroad", 700, "ORD-1",
    )
    assert approved.note == "balance checked"
    assert paid.payout_reference == "WIRE-9"
    assert rejected.reason == "not eligible"
    assert cancelled.reason == "customer withdrew"


def test_every_event_carries_the_actor_and_the_http_request_that_caused_it(
    cs: Actor, finance: Actor,
) -> None:
    other = Actor("cs:99999999", "req-cancel")
    request = new_request(cs)
    request.approve("ok", actor=finance)
    request.cancel("customer withdrew", actor=other)

    events = request.collect_events()

    assert [type(e) for e in events] == [
        RefundRequest.Requested, RefundRequest.Approved, RefundRequest.Cancelled,
    ]
    assert [(e.actor, e.correlation_id) for e in events] == [
        (cs.name, cs.request_id), (finance.name, finance.request_id),
        (other.name, other.request_id),
    ]


# -- four eyes -------------------------------------------------------------------------------

ANN = Actor.of_person("ann", "finance", "req-ann")
BEA = Actor.of_person("bea", "finance", "req-bea")


def test_the_person_who_approved_cannot_pay_and_another_person_can(cs: Actor) -> None:
    request = new_request(cs)
    request.approve("checked", actor=ANN)

    with pytest.raises(FourEyes) as refused:
        request.pay("WIRE-1", actor=Actor.of_person("ann", "finance", "req-again"))
    assert refused.value.code == "four_eyes"
    assert request.status == "approved"

    request.pay("WIRE-1", actor=BEA)
    assert request.status == "paid"
    assert request.approvers == ["ann"]


def test_a_shared_role_token_s_person_is_its_role_so_no_finance_token_pays_what_one_approved(
    cs: Actor, finance: Actor,
) -> None:
    request = new_request(cs)
    request.approve("checked", actor=finance)
    with pytest.raises(FourEyes):
        request.pay("WIRE-1", actor=Actor("finance:0a0b0c0d", "req-rotated"))


def test_above_the_threshold_two_people_approve_before_anyone_else_pays(cs: Actor) -> None:
    request = new_request(cs, amount=1_001)
    request.approve("first look", actor=ANN, second_approval_above=1_000)
    assert request.status == "requested"
    assert request.approvers == ["ann"]
    with pytest.raises(FourEyes):
        request.approve("again", actor=ANN, second_approval_above=1_000)
    with pytest.raises(InvalidTransition):
        request.pay("WIRE-1", actor=BEA)

    request.approve("second look", actor=BEA, second_approval_above=1_000)
    assert request.status == "approved"
    with pytest.raises(FourEyes):
        request.pay("WIRE-1", actor=BEA)
    request.pay("WIRE-1", actor=Actor.of_person("cy", "finance", "req-cy"))

    kinds = [type(e) for e in request.collect_events()]
    assert kinds[1:] == [RefundRequest.FirstApproved, RefundRequest.Approved,
                         RefundRequest.PaidOut]


def test_at_or_below_the_threshold_one_approval_is_enough(cs: Actor) -> None:
    request = new_request(cs, amount=1_000)
    request.approve("checked", actor=ANN, second_approval_above=1_000)
    assert request.status == "approved"


def test_the_thresholds_are_read_per_currency() -> None:
    assert second_approval_thresholds(None) == {}
    assert second_approval_thresholds("usd=100000, EUR=90000") == {"USD": 100_000,
                                                                   "EUR": 90_000}
    with pytest.raises(InvalidInput):
        second_approval_thresholds("USD=lots")
