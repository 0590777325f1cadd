"""What the customer is told of each ending of a case (the outbox, ``projections.outbox``), on
both stores: the read models kept by the keeper, read once current. The HTTP tests
(tests/http/test_webhooks.py) walk the main path and the refusal; these take the other
branches: rejected, expired, late, cancelled, an exchange, a note kept inside the shop, goods
back with parts missing, a refund request refused or cancelled, a purchase failed."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from ledger.commands import AddCaseNote
from projections import outbox
from projections.readmodels import ReadModels
from tests.cases.conftest import (
    ORDER_PAID,
    POSTMARK,
    RECEIVED_ON,
    RETURN_BY,
    CaseDesk,
    order_of,
)


def told(read_models: ReadModels, case_id: UUID) -> list[dict[str, Any]]:
    read_models.wait_current()
    return outbox.messages_of(read_models.views["outbox"], case_id=str(case_id))


@pytest.mark.parametrize(("state", "last", "words"), [
    ("rejected", "return_case.rejected", "supplier says misuse"),
    ("expired", "return_case.expired", RETURN_BY.isoformat()),
    ("late", "return_case.late", RETURN_BY.isoformat()),
    ("cancelled", "return_case.cancelled", "customer changed their mind"),
    ("closed", "return_case.closed", "is closed"),
])
def test_each_ending_tells_the_customer_in_words(
    desk: CaseDesk, read_models: ReadModels, state: str, last: str, words: str
) -> None:
    case_id = desk.reach("defective", state)
    messages = told(read_models, case_id)
    assert messages[0]["type"] == "return_case.opened"
    assert messages[-1]["type"] == last
    assert words in messages[-1]["customer_message"]
    assert all(m["username"] == desk.customer and m["case_id"] == str(case_id)
               for m in messages)
    assert [m["position"] for m in messages] == sorted(m["position"] for m in messages)


def test_an_exchange_names_its_tracking_and_moves_no_money(
    desk: CaseDesk, read_models: ReadModels
) -> None:
    case_id = desk.reach("defective", "resolved")
    resolved = told(read_models, case_id)[-1]
    assert resolved["type"] == "return_case.resolved"
    assert "exchange" in resolved["customer_message"]
    assert "EX-OUT-1" in resolved["customer_message"]
    assert resolved["amount"] is None
    assert resolved["details"]["outcome"] == "exchange"


def test_only_notes_meant_for_the_customer_are_told(
    desk: CaseDesk, read_models: ReadModels
) -> None:
    case_id = desk.reach("defective", "supplier_review")
    desk.app.add_case_note(case_id, "supplier is slow, chase on Monday", actor=desk.actor)
    desk.app.execute(AddCaseNote(case_id, "We have chased the supplier for you.",
                                 for_customer=True), actor=desk.actor)
    messages = told(read_models, case_id)
    notes = [m for m in messages if m["type"] == "return_case.note"]
    assert [m["customer_message"] for m in notes] == ["We have chased the supplier for you."]
    assert "chase on Monday" not in str(messages)


def test_message_ids_come_from_the_events(
    desk: CaseDesk, read_models: ReadModels
) -> None:
    case_id = desk.reach("defective", "accepted")
    messages = told(read_models, case_id)
    events = desk.events(case_id)
    assert [m["id"] for m in messages] == [
        outbox.message_id(event, message["type"])
        for event, message in zip(events, messages, strict=True)
    ]
    assert len({m["id"] for m in messages}) == len(messages)


def told_customer(read_models: ReadModels, username: str) -> list[dict[str, Any]]:
    """Every message of the customer's, in log order (a test's customer has a few)."""
    read_models.wait_current()
    return read_models.views["outbox"].query(
        "SELECT type, amount, order_no, request_id, customer_message, details"
        " FROM ob_messages WHERE username = %(u)s ORDER BY position LIMIT 100",
        {"u": username})


def test_goods_back_with_parts_missing_says_what_is_missing(
    desk: CaseDesk, read_models: ReadModels
) -> None:
    case_id = desk.reach("defective", "goods_in_transit")
    desk.clock.set(RECEIVED_ON)
    desk.app.receive_return(case_id, POSTMARK, True, False, False, actor=desk.actor)
    received = told(read_models, case_id)[-1]
    assert received["type"] == "return_case.received"
    assert f"(postmarked {POSTMARK.isoformat()})" in received["customer_message"]
    assert received["customer_message"].endswith(
        " Missing: original packaging, acceptance copy.")
    assert received["details"]["missing"] == ["original packaging", "acceptance copy"]


def test_goods_back_whole_tell_of_nothing_missing(desk: CaseDesk, read_models: ReadModels) -> None:
    received = told(read_models, desk.reach("defective", "received"))[-1]
    assert received["type"] == "return_case.received"
    assert "Missing" not in received["customer_message"]


@pytest.mark.parametrize(("step", "last", "words"), [
    ("reject", "refund_request.rejected", "was not approved: over the policy's limit"),
    ("cancel", "refund_request.cancelled", "was cancelled: customer withdrew it"),
])
def test_a_refund_request_refused_or_cancelled_tells_why_and_that_the_money_stays(
    desk: CaseDesk, read_models: ReadModels, step: str, last: str, words: str
) -> None:
    order = order_of("defective")
    outcome = desk.app.request_refund(desk.customer, order, 1_000, "changed my mind",
                                      actor=desk.actor)
    request_id = outcome.body["id"]
    reason = "over the policy's limit" if step == "reject" else "customer withdrew it"
    if step == "reject":
        desk.app.reject_refund(UUID(request_id), reason, actor=desk.actor)
    else:
        desk.app.cancel_refund(UUID(request_id), reason, actor=desk.actor)
    read_models.wait_current()
    messages = outbox.messages_of(read_models.views["outbox"], request_id=request_id)
    assert [m["type"] for m in messages] == ["refund_request.requested", last]
    text = messages[-1]["customer_message"]
    assert f"order {order}" in text and words in text
    assert text.endswith("The amount stays on your balance.")
    assert messages[-1]["details"]["reason"] == reason


def test_a_failed_purchase_tells_the_reason_and_the_money_credited_back(
    desk: CaseDesk, read_models: ReadModels
) -> None:
    order = order_of("defective")
    desk.app.fail_purchase(desk.customer, order, ORDER_PAID, "out of stock", actor=desk.actor)
    failed = told_customer(read_models, desk.customer)[-1]
    assert failed["type"] == "purchase.failed"
    assert (failed["amount"], failed["order_no"]) == (ORDER_PAID, order)
    assert failed["customer_message"] == (
        f"Your order {order} could not be completed: out of stock. 30.00 USD was credited "
        "back to your balance.")
