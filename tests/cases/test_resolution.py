"""Resolving a case, on both stores: a refund credits the account, never past what the order has
left to credit back (paid minus everything credited back, failure credits included); exchanges
and repairs name their outbound tracking; the freight is charged to the account; and the money
and the case's resolution are one save (DOMAIN.md, Invariant 7)."""

from __future__ import annotations

from uuid import UUID

import pytest

from ledger.errors import InsufficientFunds, InvalidInput, OverRefundable
from ledger.identity import Actor
from tests.cases.conftest import DEPOSIT, KINDS, ORDER_PAID, CaseDesk, last_position

AVAILABLE = DEPOSIT - len(KINDS) * ORDER_PAID


def snapshot(desk: CaseDesk, case_id: UUID) -> tuple[object, ...]:
    """What a refused resolution must leave as it was."""
    account = desk.account()
    return (
        last_position(desk.app),
        account.version,
        account.posted,
        {k: list(v) for k, v in account.orders.items()},
        desk.app.return_case(case_id).version,
        desk.state(case_id),
    )


def written_since(desk: CaseDesk, position: int) -> list[tuple[int, str, UUID, int]]:
    return [
        (n.id, n.topic, n.originator_id, n.originator_version)
        for n in desk.app.recorder.select_notifications(start=position + 1, limit=20)
    ]


def test_a_refund_beyond_what_the_order_has_left_after_a_failure_credit_is_refused(
    desk: CaseDesk, finance: Actor, system: Actor
) -> None:
    # Given an order of 3,000 of which 1,000 was credited back when part of it failed
    desk.app.fail_purchase(desk.customer, "ORD-damaged", 1_000, "one item out of stock",
                           actor=system)
    case_id = desk.reach("damaged", "with_supplier")
    before = snapshot(desk, case_id)

    # When finance resolves the case by refunding 2,001
    with pytest.raises(OverRefundable) as refused:
        desk.app.resolve_return_case(case_id, "refund", 2_001, 300, None, actor=finance)

    # Then it is refused, saying what is left, and nothing changed: no credit, no freight
    assert refused.value.context == {"refundable": 2_000}
    assert snapshot(desk, case_id) == before


def test_a_refund_within_what_is_left_moves_the_posted_balance_by_refund_minus_freight_in_one_save(
    desk: CaseDesk, finance: Actor, system: Actor
) -> None:
    # Given an order of 3,000 with 1,000 credited back, and its case with the supplier
    desk.app.fail_purchase(desk.customer, "ORD-damaged", 1_000, "one item out of stock",
                           actor=system)
    case_id = desk.reach("damaged", "with_supplier")
    posted = desk.account().posted
    before = last_position(desk.app)

    # When finance refunds all that is left, 2,000, with 300 of freight
    outcome = desk.app.resolve_return_case(case_id, "refund", 2_000, 300, None, actor=finance)

    # Then the posted balance moved by 2,000 - 300 and the order has nothing left
    account = desk.account()
    assert account.posted == posted + 2_000 - 300
    assert account.order_refundable("ORD-damaged") == 0
    # and the credit, the freight and the resolution are three adjacent positions of one save,
    # the last of them the position the command answered
    assert written_since(desk, before) == [
        (before + 1, "ledger:Account.ReturnRefundCredited", account.id, account.version - 1),
        (before + 2, "ledger:Account.FreightCharged", account.id, account.version),
        (before + 3, "ledger:ReturnCase.Resolved", case_id, desk.app.return_case(case_id).version),
    ]
    assert outcome.position == before + 3
    credited, freight = list(desk.app.events.get(account.id))[-2:]
    assert (credited.case_id, credited.order_no, credited.amount) == (
        str(case_id), "ORD-damaged", 2_000,
    )
    assert (freight.case_id, freight.order_no, freight.amount) == (
        str(case_id), "ORD-damaged", 300,
    )
    resolved = desk.events(case_id)[-1]
    assert (resolved.outcome, resolved.refund_amount, resolved.freight_amount) == (
        "refund", 2_000, 300,
    )


def test_a_refund_without_an_amount_credits_all_the_order_has_left(
    desk: CaseDesk, finance: Actor
) -> None:
    case_id = desk.reach("defective", "with_supplier")
    posted = desk.account().posted

    desk.app.resolve_return_case(case_id, "refund", None, 0, None, actor=finance)

    assert desk.account().posted == posted + ORDER_PAID
    assert desk.events(case_id)[-1].refund_amount == ORDER_PAID


def test_two_cases_on_one_order_together_refund_no_more_than_was_paid(
    desk: CaseDesk, finance: Actor
) -> None:
    # Given two cases on one order of 3,000, the first resolved with a refund of 1,200
    first = desk.reach("defective", "with_supplier")
    second = desk.reach("defective", "with_supplier")
    desk.app.resolve_return_case(first, "refund", 1_200, 0, None, actor=finance)
    before = snapshot(desk, second)

    # When the second asks for 1,801, it is refused; 1,800 is what is left
    with pytest.raises(OverRefundable) as refused:
        desk.app.resolve_return_case(second, "refund", 1_801, 0, None, actor=finance)
    assert refused.value.context == {"refundable": 1_800}
    assert snapshot(desk, second) == before

    desk.app.resolve_return_case(second, "refund", 1_800, 0, None, actor=finance)
    assert desk.account().orders["ORD-defective"] == [ORDER_PAID, ORDER_PAID]


def test_an_order_credited_back_in_full_by_its_failure_has_nothing_left_to_refund(
    desk: CaseDesk, finance: Actor, system: Actor
) -> None:
    desk.app.fail_purchase(desk.customer, "ORD-quality_problem", None, "never shipped",
                           actor=system)
    case_id = desk.reach("quality_problem", "with_supplier")
    before = snapshot(desk, case_id)

    with pytest.raises(OverRefundable) as refused:
        desk.app.resolve_return_case(case_id, "refund", None, 0, None, actor=finance)

    assert refused.value.context == {"refundable": 0}
    assert snapshot(desk, case_id) == before


@pytest.mark.parametrize("outcome", ["exchange", "repair"])
def test_an_exchange_or_repair_records_its_outbound_tracking_and_charges_only_freight(
    desk: CaseDesk, finance: Actor, outcome: str
) -> None:
    for kind in KINDS:
        case_id = desk.reach(kind, "with_supplier")
        account = desk.account()
        before = last_position(desk.app)

        result = desk.app.resolve_return_case(
            case_id, outcome, None, 250, "SF1234567890", actor=finance
        )

        after = desk.account()
        assert after.posted == account.posted - 250
        assert after.orders == account.orders  # nothing credited back
        assert written_since(desk, before) == [
            (before + 1, "ledger:Account.FreightCharged", after.id, after.version),
            (before + 2, "ledger:ReturnCase.Resolved", case_id,
             desk.app.return_case(case_id).version),
        ]
        assert result.position == before + 2
        resolved = desk.events(case_id)[-1]
        assert (resolved.outcome, resolved.refund_amount, resolved.freight_amount,
                resolved.tracking) == (outcome, 0, 250, "SF1234567890")


def test_a_resolution_without_freight_writes_only_the_resolution(
    desk: CaseDesk, finance: Actor
) -> None:
    case_id = desk.reach("damaged", "with_supplier")
    before = last_position(desk.app)

    desk.app.resolve_return_case(case_id, "repair", None, 0, "SF1", actor=finance)

    assert [topic for _, topic, _, _ in written_since(desk, before)] == [
        "ledger:ReturnCase.Resolved"
    ]


@pytest.mark.parametrize(
    ("outcome", "refund_amount", "freight_amount", "tracking", "field"),
    [
        ("exchange", None, 250, None, "tracking"),
        ("exchange", None, 250, "", "tracking"),
        ("repair", None, 250, None, "tracking"),
        ("exchange", 100, 250, "SF1", "refund_amount"),
        ("replace", None, 250, "SF1", "outcome"),
        ("refund", 0, 0, None, "refund_amount"),
        ("refund", None, -5, None, "freight_amount"),
    ],
)
def test_a_resolution_with_invalid_fields_is_refused_and_changes_nothing(
    desk: CaseDesk,
    finance: Actor,
    outcome: str,
    refund_amount: int | None,
    freight_amount: int,
    tracking: str | None,
    field: str,
) -> None:
    case_id = desk.reach("delivery_error", "with_supplier")
    before = snapshot(desk, case_id)

    with pytest.raises(InvalidInput) as invalid:
        desk.app.resolve_return_case(
            case_id, outcome, refund_amount, freight_amount, tracking, actor=finance
        )

    assert invalid.value.field == field
    assert snapshot(desk, case_id) == before


def test_freight_the_available_balance_cannot_cover_is_refused_with_the_refund(
    desk: CaseDesk, finance: Actor
) -> None:
    # Given 8,000 available, and a refund of 3,000 coming: 11,000 after the credit
    case_id = desk.reach("damaged", "with_supplier")
    before = snapshot(desk, case_id)

    # When the freight would take the available balance below zero
    with pytest.raises(InsufficientFunds):
        desk.app.resolve_return_case(
            case_id, "refund", None, AVAILABLE + ORDER_PAID + 1, None, actor=finance
        )

    # Then neither the refund nor the freight nor the resolution is recorded
    assert snapshot(desk, case_id) == before
