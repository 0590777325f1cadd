"""Retries of case commands, on both stores (DOMAIN.md, Invariant 5): a command retried with the
same idempotency key takes effect once and answers the first response again.

Keys live 24 hours. Most tests here keep the shop's clock on the wall clock, the one that also
stamps the events (and so the key's record), to retry within a key's life as a client would.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from uuid import UUID

import pytest

from ledger.application import Outcome
from ledger.errors import IdempotencyKeyReused, InvalidTransition
from ledger.identity import Actor
from tests.cases.conftest import ORDER_PAID, CaseDesk, last_position


def key(desk: CaseDesk, name: str) -> str:
    """A key of this test's own (keys are per caller, and the module's tests share a store)."""
    return f"{desk.customer}/{name}"


def twice(desk: CaseDesk, command: Callable[[str], Outcome], idempotency_key: str) -> Outcome:
    """Send a command, then retry it with the same key; the retry must change nothing."""
    first = command(idempotency_key)
    position = last_position(desk.app)

    retry = command(idempotency_key)

    assert first.replayed is False
    assert retry.replayed is True, idempotency_key
    assert (retry.outcome, retry.body, retry.position) == (
        first.outcome, first.body, first.position,
    ), idempotency_key
    assert last_position(desk.app) == position, idempotency_key
    return first


@pytest.fixture
def today(desk: CaseDesk) -> date:
    desk.clock.follow_wall_time()
    return desk.clock.today


def test_every_step_of_a_case_retried_with_its_key_takes_effect_once(
    desk: CaseDesk, today: date, finance: Actor
) -> None:
    app, cs = desk.app, desk.actor
    shipped_on = today - timedelta(days=20)

    opened = twice(desk, lambda k: app.open_return_case(
        desk.application("damaged", shipped_on=shipped_on), actor=cs, idempotency_key=k,
    ), key(desk, "open-1"))  # one case, not two
    case_id = UUID(opened.body["id"])
    steps: list[tuple[str, Callable[[str], Outcome]]] = [
        (key(desk, "review-1"), lambda k: app.start_supplier_review(
            case_id, "", actor=cs, idempotency_key=k)),
        (key(desk, "note-1"), lambda k: app.add_case_note(
            case_id, "asked", actor=cs, idempotency_key=k)),
        (key(desk, "accept-1"), lambda k: app.accept_return_case(
            case_id, today + timedelta(days=30), "Supplier Co", "", actor=cs, idempotency_key=k)),
        (key(desk, "ship-1"), lambda k: app.ship_back(
            case_id, "RR1", actor=cs, idempotency_key=k)),
        (key(desk, "receive-1"), lambda k: app.receive_return(
            case_id, today, True, True, True, actor=cs, idempotency_key=k)),
        (key(desk, "forward-1"), lambda k: app.forward_to_supplier(
            case_id, "", actor=cs, idempotency_key=k)),
        (key(desk, "resolve-1"), lambda k: app.resolve_return_case(
            case_id, "refund", None, 300, None, actor=finance, idempotency_key=k)),
        (key(desk, "close-1"), lambda k: app.close_return_case(
            case_id, "", actor=cs, idempotency_key=k)),
    ]
    posted = desk.account().posted
    for step_key, step in steps:
        twice(desk, step, step_key)

    # one case, with one event per step, and one credit and one freight on the account
    assert [type(e).__name__ for e in desk.events(case_id)] == [
        "Opened", "SupplierReviewStarted", "NoteAdded", "Accepted", "ShippedBack", "Received",
        "Forwarded", "Resolved", "Closed",
    ]
    assert desk.account().posted == posted + ORDER_PAID - 300


def test_a_cancellation_retried_with_its_key_takes_effect_once(
    desk: CaseDesk, today: date
) -> None:
    case_id = desk.open("defective", shipped_on=today - timedelta(days=3))

    twice(desk, lambda k: desk.app.cancel_return_case(
        case_id, "customer keeps it", actor=desk.actor, idempotency_key=k), key(desk, "cancel-1"))

    assert [type(e).__name__ for e in desk.events(case_id)] == ["Opened", "Cancelled"]


def test_without_a_key_a_repeated_step_is_refused_as_invalid(
    desk: CaseDesk, today: date
) -> None:
    case_id = desk.open("defective", shipped_on=today - timedelta(days=3))
    desk.app.start_supplier_review(case_id, "", actor=desk.actor)

    with pytest.raises(InvalidTransition):
        desk.app.start_supplier_review(case_id, "", actor=desk.actor)


def test_a_key_reused_for_another_note_is_refused_and_adds_nothing(
    desk: CaseDesk, today: date
) -> None:
    case_id = desk.open("defective", shipped_on=today - timedelta(days=3))
    note_key = key(desk, "note-1")
    desk.app.add_case_note(case_id, "first", actor=desk.actor, idempotency_key=note_key)
    before = last_position(desk.app)

    with pytest.raises(IdempotencyKeyReused):
        desk.app.add_case_note(case_id, "second", actor=desk.actor, idempotency_key=note_key)

    assert last_position(desk.app) == before
    assert [e.text for e in desk.events(case_id) if hasattr(e, "text")] == ["first"]


def test_a_note_retried_with_its_key_on_the_shop_s_calendar_takes_effect_once(
    desk: CaseDesk,
) -> None:
    # Given the shop's clock on its own calendar (here 2028-02-10, as in every other case test)
    case_id = desk.open("damaged")

    # When CS's note is retried with its key a moment later, the same shop day
    note_key = key(desk, "n-1")
    first = desk.app.add_case_note(case_id, "called", actor=desk.actor, idempotency_key=note_key)
    retry = desk.app.add_case_note(case_id, "called", actor=desk.actor, idempotency_key=note_key)

    # Then the retry is answered from the first and the case has one note
    assert retry.replayed is True
    assert retry.position == first.position
    assert [type(e).__name__ for e in desk.events(case_id)] == ["Opened", "NoteAdded"]
