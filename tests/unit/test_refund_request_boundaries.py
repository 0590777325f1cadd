"""Balance-refund requests recorded before people had names: their approver is the actor's role,
and four eyes still holds on replay."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import uuid4

import pytest

from ledger.errors import FourEyes
from ledger.identity import Actor
from ledger.refund_request import RefundRequest


def approved_before_people_had_names(cs: Actor) -> RefundRequest:
    """A request approved by ann in finance, replayed as its events were stored before people
    had names: the Approved event names only the actor, ``finance:ann``."""
    live = RefundRequest.request(
        id=uuid4(), username="alice", currency="EUR", order_no="ORD-1", amount=300,
        reason="not buying for a while", actor=cs,
    )
    live.approve("ok", actor=Actor.of_person("ann", "finance", "req-ann"))
    requested, approval = live.collect_events()
    assert isinstance(approval, RefundRequest.Approved)
    # The field by name: mypy does not see eventsourcing's event fields.
    as_stored_then: dict[str, Any] = {"person": ""}
    old_approval = replace(approval, **as_stored_then)

    replayed = old_approval.mutate(requested.mutate(None))
    assert isinstance(replayed, RefundRequest)
    return replayed


def test_an_approval_recorded_without_a_person_is_the_approval_of_the_actor_s_role(
    cs: Actor,
) -> None:
    # Given an approval stored before people had names
    # When it is replayed
    request = approved_before_people_had_names(cs)

    # Then the request is approved, by the role the actor acted in (not the name after it)
    assert request.status == "approved"
    assert request.approvers == ["finance"]


def test_a_shared_finance_token_cannot_pay_what_finance_approved_before_names(
    cs: Actor, finance: Actor,
) -> None:
    request = approved_before_people_had_names(cs)

    with pytest.raises(FourEyes):
        request.pay("WIRE-1", actor=finance)

    # while a named person pays it
    request.pay("WIRE-1", actor=Actor.of_person("bea", "finance", "req-bea"))
    assert request.status == "paid"
