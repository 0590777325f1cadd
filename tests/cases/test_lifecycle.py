"""The case lifecycle, on both stores, for every kind (DOMAIN.md, "Return / exchange cases"):

    opened ─► supplier_review ─► accepted ─► goods_in_transit ─► received ─► with_supplier ─►
    resolved (refund | exchange | repair) ─► closed; supplier_review ─► rejected;
    accepted ─► expired (past return_by); a postmark after return_by ─► late;
    any open state ─► cancelled. Any other step: InvalidTransition, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from uuid import UUID

import pytest

from ledger.application import LedgerApplication
from ledger.errors import InvalidTransition
from ledger.identity import Actor
from tests.cases.conftest import (
    ACCEPTED_ON,
    CLOSED_ON,
    FORWARDED_ON,
    KINDS,
    LATE_POSTMARK,
    LATE_RECEIVED_ON,
    OPEN_STATES,
    OPENED_ON,
    ORDER_PAID,
    PATH,
    POSTMARK,
    RECEIVED_ON,
    RESOLVED_ON,
    RETURN_BY,
    SHIPPED_BACK_ON,
    TERMINAL_STATES,
    CaseDesk,
    day_after,
    last_position,
)

# -- the happy path ------------------------------------------------------------------------------

RESOLUTIONS: dict[str, tuple[int | None, int, str | None]] = {
    # outcome: (refund_amount, freight_amount, tracking)
    "refund": (None, 450, None),
    "exchange": (None, 450, "EX-OUT-9"),
    "repair": (None, 450, "RP-OUT-9"),
}


@pytest.mark.parametrize("outcome", sorted(RESOLUTIONS))
def test_every_kind_walks_from_opened_to_closed_each_step_dated_by_the_shop_s_calendar(
    desk: CaseDesk, finance: Actor, outcome: str
) -> None:
    refund_amount, freight_amount, tracking = RESOLUTIONS[outcome]
    for kind in KINDS:
        # Given an opened case
        desk.clock.set(OPENED_ON)
        case_id = desk.open(kind)
        assert desk.state(case_id) == "opened"
        # When it takes each step of the happy path on its day
        for expected, day, step in PATH[:5]:
            desk.clock.set(day)
            step(desk, case_id)
            assert desk.state(case_id) == expected
        desk.clock.set(RESOLVED_ON)
        desk.app.resolve_return_case(
            case_id, outcome, refund_amount, freight_amount, tracking, actor=finance
        )
        assert desk.state(case_id) == "resolved"
        desk.clock.set(CLOSED_ON)
        desk.app.close_return_case(case_id, "done", actor=desk.actor)

        # Then it is closed, and each step is an event with its actor and its day
        assert desk.state(case_id) == "closed"
        recorded = [(type(e).__name__, e.on, e.actor) for e in desk.events(case_id)]
        cs = desk.actor.name
        assert recorded == [
            ("Opened", OPENED_ON.isoformat(), cs),
            ("SupplierReviewStarted", OPENED_ON.isoformat(), cs),
            ("Accepted", ACCEPTED_ON.isoformat(), cs),
            ("ShippedBack", SHIPPED_BACK_ON.isoformat(), cs),
            ("Received", RECEIVED_ON.isoformat(), cs),
            ("Forwarded", FORWARDED_ON.isoformat(), cs),
            ("Resolved", RESOLVED_ON.isoformat(), finance.name),
            ("Closed", CLOSED_ON.isoformat(), cs),
        ]
        resolved = desk.events(case_id)[6]
        assert resolved.outcome == outcome
        assert resolved.refund_amount == (ORDER_PAID if outcome == "refund" else 0)
        assert resolved.freight_amount == freight_amount
        assert resolved.tracking == (tracking or "")


def test_the_steps_record_what_the_customer_the_supplier_and_the_shop_said(
    desk: CaseDesk,
) -> None:
    case_id = desk.reach("defective", "with_supplier")

    opened, review, accepted, shipped, received, forwarded = desk.events(case_id)
    assert (opened.username, opened.order_no, opened.kind, opened.shipped_on) == (
        desk.customer, "ORD-defective", "defective", "2028-01-31",
    )
    assert opened.evidence == {
        "goods_photos": ["photo://goods-1"], "package_photos": ["photo://box-1"],
    }
    assert opened.items == [{"sku": "SKU-7", "description": "desk lamp", "quantity": 1}]
    assert opened.note == "customer wrote in"
    assert review.note == "asked the supplier"
    assert (accepted.return_by, accepted.return_address, accepted.instructions) == (
        RETURN_BY.isoformat(), "Supplier Co, 1 Factory Rd, Yiwu", "keep the box",
    )
    assert shipped.tracking == "RR123456789CN"
    assert (received.postmark_date, received.late) == (POSTMARK.isoformat(), False)
    assert forwarded.note == "sent on to the supplier"


def test_goods_that_come_back_with_pieces_missing_are_received_with_what_came(
    desk: CaseDesk,
) -> None:
    case_id = desk.reach("damaged", "goods_in_transit")
    desk.clock.set(RECEIVED_ON)

    desk.app.receive_return(case_id, POSTMARK, True, False, False, actor=desk.actor)

    received = desk.events(case_id)[-1]
    assert desk.state(case_id) == "received"
    assert (received.goods, received.original_packaging, received.acceptance_copy) == (
        True, False, False,
    )


# -- the branches --------------------------------------------------------------------------------


def test_the_supplier_can_reject_a_case_of_any_kind_under_review(desk: CaseDesk) -> None:
    for kind in KINDS:
        case_id = desk.reach(kind, "supplier_review")

        desk.app.reject_return_case(case_id, "supplier: signs of misuse", actor=desk.actor)

        assert desk.state(case_id) == "rejected"
        assert desk.events(case_id)[-1].reason == "supplier: signs of misuse"


def test_an_accepted_case_expires_only_once_its_return_by_has_passed(desk: CaseDesk) -> None:
    for kind in KINDS:
        # Given an accepted case, return_by 2028-02-29
        case_id = desk.reach(kind, "accepted")
        # When CS tries to expire it on its return_by day
        desk.clock.set(RETURN_BY)
        before = last_position(desk.app)
        with pytest.raises(InvalidTransition):
            desk.app.expire_return_case(case_id, "nothing came", actor=desk.actor)
        # Then it is still accepted and nothing was written
        assert desk.state(case_id) == "accepted"
        assert last_position(desk.app) == before

        # When CS expires it the day after
        desk.clock.set(day_after(RETURN_BY))
        desk.app.expire_return_case(case_id, "nothing came", actor=desk.actor)

        # Then it has expired, on that day
        assert desk.state(case_id) == "expired"
        assert desk.events(case_id)[-1].on == "2028-03-01"


@pytest.mark.parametrize("from_state", ["accepted", "goods_in_transit"])
def test_goods_posted_after_return_by_make_the_case_late(desk: CaseDesk, from_state: str) -> None:
    for kind in KINDS:
        case_id = desk.reach(kind, from_state)
        desk.clock.set(LATE_RECEIVED_ON)

        desk.app.receive_return(case_id, LATE_POSTMARK, True, True, True, actor=desk.actor)

        assert desk.state(case_id) == "late"
        received = desk.events(case_id)[-1]
        assert (received.postmark_date, received.late) == ("2028-03-01", True)


def test_goods_posted_on_return_by_itself_are_in_time(desk: CaseDesk) -> None:
    for kind in KINDS:
        case_id = desk.reach(kind, "goods_in_transit")
        desk.clock.set(LATE_RECEIVED_ON)

        desk.app.receive_return(case_id, RETURN_BY, True, True, True, actor=desk.actor)

        assert desk.state(case_id) == "received"
        assert desk.events(case_id)[-1].late is False


def test_a_case_of_any_kind_can_be_cancelled_from_each_open_state(desk: CaseDesk) -> None:
    for open_state in OPEN_STATES:
        for kind in KINDS:
            case_id = desk.reach(kind, open_state)
            desk.clock.set(desk.clock.today + timedelta(days=1))

            desk.app.cancel_return_case(case_id, "customer keeps the goods", actor=desk.actor)

            assert desk.state(case_id) == "cancelled", (open_state, kind)
            cancelled = desk.events(case_id)[-1]
            assert type(cancelled).__name__ == "Cancelled"
            assert (cancelled.reason, cancelled.actor, cancelled.on) == (
                "customer keeps the goods", desk.actor.name, desk.clock.today.isoformat(),
            )


# -- steps a state does not allow --------------------------------------------------------------

Attempt = Callable[[LedgerApplication, UUID, Actor, date], object]

# Every step, with arguments valid in themselves, so that only the state can refuse it.
STEPS: dict[str, Attempt] = {
    "supplier_review": lambda app, c, a, today: app.start_supplier_review(c, "", actor=a),
    "accept": lambda app, c, a, today: app.accept_return_case(
        c, today + timedelta(days=20), "Supplier Co", "", actor=a
    ),
    "reject": lambda app, c, a, today: app.reject_return_case(c, "no", actor=a),
    "ship_back": lambda app, c, a, today: app.ship_back(c, "RR999", actor=a),
    "receive": lambda app, c, a, today: app.receive_return(c, today, True, True, True, actor=a),
    "expire": lambda app, c, a, today: app.expire_return_case(c, "", actor=a),
    "forward": lambda app, c, a, today: app.forward_to_supplier(c, "", actor=a),
    "resolve": lambda app, c, a, today: app.resolve_return_case(
        c, "exchange", None, 0, "EX-1", actor=a
    ),
    "close": lambda app, c, a, today: app.close_return_case(c, "", actor=a),
    "cancel": lambda app, c, a, today: app.cancel_return_case(c, "changed mind", actor=a),
    "note": lambda app, c, a, today: app.add_case_note(c, "any news?", actor=a),
}
# What DOMAIN.md allows from each state (expire: from accepted, once past return_by); a note
# is history the customer is told, so every state takes one (issue 12).
ALLOWED: dict[str, set[str]] = {
    "opened": {"supplier_review", "cancel", "note"},
    "supplier_review": {"accept", "reject", "cancel", "note"},
    "accepted": {"ship_back", "receive", "expire", "cancel", "note"},
    "goods_in_transit": {"receive", "cancel", "note"},
    "received": {"forward", "cancel", "note"},
    "with_supplier": {"resolve", "cancel", "note"},
    "resolved": {"close", "note"},
    **{terminal: {"note"} for terminal in TERMINAL_STATES},
}


def test_a_step_the_state_does_not_allow_is_an_invalid_transition_and_writes_nothing(
    desk: CaseDesk,
) -> None:
    for n, from_state in enumerate(sorted(ALLOWED)):
        # Given a case in the state (a different kind for each state: all kinds get a turn)
        case_id = desk.reach(KINDS[n % len(KINDS)], from_state)
        before = last_position(desk.app)
        version = desk.app.return_case(case_id).version
        refused = sorted(set(STEPS) - ALLOWED[from_state])
        assert refused

        for step in refused:
            # When CS attempts a step the state does not allow
            with pytest.raises(InvalidTransition) as error:
                STEPS[step](desk.app, case_id, desk.actor, desk.clock.today)
            # Then it is refused as an invalid transition naming the state; nothing changed
            assert error.value.context == {"state": from_state}, (from_state, step)
            assert desk.state(case_id) == from_state
            assert desk.app.return_case(case_id).version == version
            assert last_position(desk.app) == before


def test_a_case_resolved_by_refund_cannot_be_resolved_again(
    desk: CaseDesk, finance: Actor
) -> None:
    # Given a case resolved by refunding all of its order
    case_id = desk.reach("damaged", "with_supplier")
    desk.app.resolve_return_case(case_id, "refund", None, 0, None, actor=finance)
    before = last_position(desk.app)

    # When finance resolves it once more
    # Then the step is refused because of the case's state (409 invalid_transition), not
    # because of the order's money (422 over_refundable)
    with pytest.raises(InvalidTransition):
        desk.app.resolve_return_case(case_id, "refund", None, 0, None, actor=finance)
    assert last_position(desk.app) == before


# -- progress notes ------------------------------------------------------------------------------


def test_progress_notes_can_be_added_at_each_open_step_and_change_no_state(
    desk: CaseDesk,
) -> None:
    for at_state in (*OPEN_STATES, "resolved"):
        for kind in KINDS:
            case_id = desk.reach(kind, at_state)

            outcome = desk.app.add_case_note(
                case_id, "  supplier replied, waiting on a photo  ", actor=desk.actor
            )

            assert outcome.outcome == "created"
            assert desk.state(case_id) == at_state
            note = desk.events(case_id)[-1]
            assert type(note).__name__ == "NoteAdded"
            assert (note.text, note.actor, note.on) == (
                "supplier replied, waiting on a photo", desk.actor.name,
                desk.clock.today.isoformat(),
            )


def test_a_note_may_be_written_once_a_case_is_closed_or_otherwise_ended(
    desk: CaseDesk,
) -> None:
    # CS tells the customer of a rejection or a closing, and writes that it did
    for at_state in TERMINAL_STATES:
        case_id = desk.reach("quality_problem", at_state)

        outcome = desk.app.add_case_note(case_id, "customer told", actor=desk.actor)

        assert outcome.outcome == "created"
        assert desk.state(case_id) == at_state
        assert type(desk.events(case_id)[-1]).__name__ == "NoteAdded"


def test_a_case_takes_at_most_its_bound_of_photo_sendings_then_refuses_in_words(
    desk: CaseDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger import return_case
    from ledger.errors import NotesFull

    monkeypatch.setattr(return_case, "MAX_EVIDENCE_PER_CASE", 2)
    case_id = desk.reach("quality_problem", "opened")
    for number in range(2):
        desk.app.add_case_evidence(case_id, [f"photo://more-{number}"], [], actor=desk.actor)
    before = last_position(desk.app)

    with pytest.raises(NotesFull) as refused:
        desk.app.add_case_evidence(case_id, ["photo://one-too-many"], [], actor=desk.actor)

    assert "holds 2 sendings of photos" in refused.value.detail
    assert last_position(desk.app) == before


def test_a_case_takes_at_most_its_bound_of_notes_then_refuses_in_words(
    desk: CaseDesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger import return_case
    from ledger.errors import NotesFull

    monkeypatch.setattr(return_case, "MAX_NOTES_PER_CASE", 3)
    case_id = desk.reach("quality_problem", "opened")
    for number in range(3):
        desk.app.add_case_note(case_id, f"note {number}", actor=desk.actor)
    before = last_position(desk.app)

    with pytest.raises(NotesFull) as refused:
        desk.app.add_case_note(case_id, "one too many", actor=desk.actor)

    assert "holds 3 notes" in refused.value.detail
    assert last_position(desk.app) == before
    # Another case has its own bound
    other = desk.reach("quality_problem", "opened")
    assert desk.app.add_case_note(other, "first", actor=desk.actor).outcome == "created"
