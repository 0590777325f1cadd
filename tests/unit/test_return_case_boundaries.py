"""Return cases at their edges: the steps CS may take today (expire only once return_by has
passed, never on its last day), and which states are open."""

from __future__ import annotations

from uuid import uuid4

import pytest

from ledger.identity import Actor
from ledger.return_case import ENDED_STATES, OPEN_STATES, REFUSED, ReturnCase, allowed_actions

CS = Actor("cs:4e5f6a7b", "req-cs")


@pytest.mark.parametrize(
    ("state", "actions"),
    [
        ("opened", ["supplier-review", "cancel", "notes", "evidence"]),
        ("supplier_review", ["accept", "reject", "cancel", "notes", "evidence"]),
        ("goods_in_transit", ["receive", "cancel", "notes", "evidence"]),
        ("received", ["forward", "cancel", "notes", "evidence"]),
        ("with_supplier", ["resolve", "cancel", "notes", "evidence"]),
        ("resolved", ["close", "notes"]),
        ("closed", ["notes"]),
        ("late", ["notes"]),
        (REFUSED, []),
    ],
)
def test_each_state_allows_exactly_its_steps_in_lifecycle_order(
    state: str, actions: list[str]
) -> None:
    assert allowed_actions(state, return_by="2028-02-29", today="2028-03-15") == actions


def test_an_accepted_case_may_not_expire_on_or_before_its_return_by() -> None:
    for today in ("2028-02-01", "2028-02-29"):
        # Given a case accepted with return_by 29 February, on or before that day
        actions = allowed_actions("accepted", return_by="2028-02-29", today=today)

        # Then CS may wait for the goods, but not expire it
        assert actions == ["ship-back", "receive", "cancel", "notes", "evidence"]


def test_an_accepted_case_may_expire_from_the_day_after_its_return_by() -> None:
    actions = allowed_actions("accepted", return_by="2028-02-29", today="2028-03-01")

    assert actions == ["ship-back", "receive", "expire", "cancel", "notes", "evidence"]


def test_an_accepted_case_without_a_return_by_never_offers_expire() -> None:
    assert "expire" not in allowed_actions("accepted", return_by=None, today="2099-12-31")


def test_only_an_accepted_case_offers_expire_however_late_it_is() -> None:
    for state in sorted((OPEN_STATES | ENDED_STATES) - {"accepted"}):
        assert "expire" not in allowed_actions(state, return_by="2028-02-29", today="2099-12-31")


def opened_case() -> ReturnCase:
    return ReturnCase.open(
        id=uuid4(), username="alice", currency="USD", order_no="ORD-1", kind="damaged",
        shipped_on="2028-02-01", items=[{"sku": "SKU-7", "description": "lamp", "quantity": 1}],
        evidence={"goods": ["photo://g"], "package": ["photo://p"]}, guarantee_until=None,
        conditions={}, note="customer wrote in", actor=CS, on="2028-02-05",
    )


def test_a_case_is_open_until_it_ends_and_not_after() -> None:
    # Given a case taken through its lifecycle
    case = opened_case()
    seen = [(case.state, case.is_open)]
    case.start_supplier_review("asked", actor=CS, on="2028-02-06")
    seen.append((case.state, case.is_open))
    case.accept("2028-03-01", "Dock 4", "keep the box", actor=CS, on="2028-02-07")
    seen.append((case.state, case.is_open))
    case.cancel("the customer changed their mind", actor=CS, on="2028-02-08")
    seen.append((case.state, case.is_open))

    # Then it was open in each open state, and is not once cancelled
    assert seen == [
        ("opened", True), ("supplier_review", True), ("accepted", True), ("cancelled", False),
    ]
