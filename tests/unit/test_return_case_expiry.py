"""A return case expires only once its ``return_by`` day has passed: the rule lives in the
aggregate (``ReturnCase.expire``), which knows the date, not in the use case that asks it."""

from __future__ import annotations

from uuid import uuid4

import pytest

from ledger.errors import InvalidTransition
from ledger.identity import Actor
from ledger.return_case import ReturnCase

CS = Actor("cs:4e5f6a7b", "req-cs")


def accepted(return_by: str) -> ReturnCase:
    case = ReturnCase.open(
        id=uuid4(), username="alice", currency="USD", order_no="ORD-1", kind="damaged",
        shipped_on="2026-03-01", items=[{"sku": "SKU-7", "description": "lamp", "quantity": 1}],
        evidence={"goods": ["photo://g"], "package": ["photo://p"]}, guarantee_until=None,
        conditions={}, note="customer wrote in", actor=CS, on="2026-03-05",
    )
    case.start_supplier_review("asked", actor=CS, on="2026-03-06")
    case.accept(return_by, "Dock 4", "keep the box", actor=CS, on="2026-03-07")
    return case


@pytest.mark.parametrize("on", ["2026-03-10", "2026-03-20"])
def test_a_case_is_not_expired_on_or_before_its_return_by(on: str) -> None:
    case = accepted(return_by="2026-03-20")
    with pytest.raises(InvalidTransition, match="not past its return_by 2026-03-20"):
        case.expire("nothing came", actor=CS, on=on)
    assert case.state == "accepted"


def test_a_case_expires_the_day_after_its_return_by() -> None:
    case = accepted(return_by="2026-03-20")
    case.expire("nothing came", actor=CS, on="2026-03-21")
    assert case.state == "expired"
