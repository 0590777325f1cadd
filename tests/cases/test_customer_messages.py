"""What the customer is told of each ending of a case (the outbox, ``projections.outbox``), on
both stores: the read models kept by the keeper, read once current. The HTTP tests
(tests/http/test_webhooks.py) walk the main path and the refusal; these take the other
branches: rejected, expired, late, cancelled, an exchange, a note kept inside the shop."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from ledger.commands import AddCaseNote
from projections import outbox
from projections.readmodels import ReadModels
from tests.cases.conftest import RETURN_BY, CaseDesk


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
