"""The case-status read model on both stores (API.md, "Return and exchange cases"): the case view
answers every field the API lists, its day counts and deadlines for the day the shop's clock
says, the ``overdue`` flag and filter agree, and the orders view lists each order's cases."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from ledger.errors import CaseRefused
from ledger.identity import Actor
from projections.readmodels import ReadModels
from tests.cases.conftest import (
    ACCEPTED_ON,
    CLOSED_ON,
    FORWARDED_ON,
    LATE_POSTMARK,
    LATE_RECEIVED_ON,
    OPENED_ON,
    ORDER_PAID,
    POSTMARK,
    RECEIVED_ON,
    RESOLVED_ON,
    SHIPPED_BACK_ON,
    SHIPPED_ON,
    CaseDesk,
)

API_FIELDS = {
    "id", "username", "order_no", "kind", "state", "opened_at", "shipped_on", "return_by",
    "days_open", "days_since_shipping", "thirty_day_guarantee", "overdue", "steps",
}


def view(read_models: ReadModels, case_id: UUID) -> dict[str, object]:
    read_models.wait_caught_up()
    case = read_models.return_case(case_id)
    assert case is not None
    return case


def test_the_case_view_answers_every_field_the_api_lists_with_its_steps(
    desk: CaseDesk, read_models: ReadModels, cs: Actor, finance: Actor
) -> None:
    # Given a case walked to with_supplier, a note while accepted, resolved and closed
    case_id = desk.reach("damaged", "accepted")
    desk.app.add_case_note(case_id, "label sent to the customer", actor=cs)
    desk.walk(case_id, "with_supplier")
    desk.clock.set(RESOLVED_ON)
    desk.app.resolve_return_case(case_id, "refund", 1_000, 200, None, actor=finance)
    desk.clock.set(CLOSED_ON)
    desk.app.close_return_case(case_id, "refunded", actor=cs)

    # When the case is read on the day it closed
    case = view(read_models, case_id)

    # Then it answers every field of the API, for 2028-03-02
    assert API_FIELDS <= case.keys()
    assert {k: case[k] for k in API_FIELDS - {"opened_at", "steps"}} == {
        "id": str(case_id),
        "username": desk.customer,
        "order_no": "ORD-damaged",
        "kind": "damaged",
        "state": "closed",
        "shipped_on": "2028-01-31",
        "return_by": "2028-02-29",
        "days_open": 21,  # 2028-02-10 to 2028-03-02, across 29 February
        "days_since_shipping": 31,
        "thirty_day_guarantee": {"holds": True, "days_used": 16, "last_postmark": "2028-03-01"},
        "overdue": False,
    }
    assert isinstance(case["opened_at"], str)
    assert datetime.fromisoformat(case["opened_at"].replace("Z", "+00:00")).tzinfo is not None
    # and its steps, in order: what happened, the state after, the shop's day, who
    steps = case["steps"]
    assert isinstance(steps, list)
    assert [(s["step"], s["state"], s["on"], s["actor"]) for s in steps] == [
        ("opened", "opened", OPENED_ON.isoformat(), cs.name),
        ("supplier_review_started", "supplier_review", OPENED_ON.isoformat(), cs.name),
        ("accepted", "accepted", ACCEPTED_ON.isoformat(), cs.name),
        ("note_added", "accepted", ACCEPTED_ON.isoformat(), cs.name),
        ("shipped_back", "goods_in_transit", SHIPPED_BACK_ON.isoformat(), cs.name),
        ("received", "received", RECEIVED_ON.isoformat(), cs.name),
        ("forwarded", "with_supplier", FORWARDED_ON.isoformat(), cs.name),
        ("resolved", "resolved", RESOLVED_ON.isoformat(), finance.name),
        ("closed", "closed", CLOSED_ON.isoformat(), cs.name),
    ]
    assert [s["position"] for s in steps] == sorted(s["position"] for s in steps)
    assert steps[3]["data"]["text"] == "label sent to the customer"
    assert steps[5]["data"]["missing"] == []
    assert steps[7]["data"]["outcome"] == "refund"
    assert (steps[7]["data"]["refund_amount"], steps[7]["data"]["freight_amount"]) == (1_000, 200)


def test_the_view_lists_what_did_not_come_back(
    desk: CaseDesk, read_models: ReadModels, cs: Actor
) -> None:
    case_id = desk.reach("defective", "goods_in_transit")
    desk.clock.set(RECEIVED_ON)
    desk.app.receive_return(case_id, date(2028, 2, 16), True, False, False, actor=cs)

    received = view(read_models, case_id)["steps"][-1]  # type: ignore[index]

    assert received["step"] == "received"
    assert received["data"]["missing"] == ["original_packaging", "acceptance_copy"]


def test_an_unknown_case_has_no_view(read_models: ReadModels) -> None:
    read_models.wait_caught_up()

    assert read_models.return_case(uuid4()) is None


def test_days_and_the_30_day_full_return_follow_the_calendar_then_the_postmark(
    desk: CaseDesk, read_models: ReadModels, cs: Actor
) -> None:
    # Given two cases on goods shipped 2028-01-31, opened 2028-02-15, goods sent back
    desk.clock.set(date(2028, 2, 15))
    on_time, a_day_late = desk.open("damaged"), desk.open("defective")
    for case_id in (on_time, a_day_late):
        desk.app.start_supplier_review(case_id, "", actor=cs)
        desk.app.accept_return_case(case_id, date(2028, 3, 10), "Supplier Co", "", actor=cs)
        desk.app.ship_back(case_id, "RR1", actor=cs)

    # When read on 2028-03-01, 30 days after shipping, across the leap day
    desk.clock.set(date(2028, 3, 1))
    case = view(read_models, on_time)
    # Then the guarantee still holds, on its last day
    assert (case["days_since_shipping"], case["days_open"]) == (30, 15)
    assert case["thirty_day_guarantee"] == {
        "holds": True, "days_used": 30, "last_postmark": "2028-03-01",
    }

    # When read on 2028-03-02, with the goods not back yet
    desk.clock.set(date(2028, 3, 2))
    case = view(read_models, on_time)
    # Then it no longer holds
    assert case["days_since_shipping"] == 31
    assert case["thirty_day_guarantee"] == {
        "holds": False, "days_used": 31, "last_postmark": "2028-03-01",
    }

    # When the goods arrive on 2028-03-05, posted on 2028-03-01 and 2028-03-02
    desk.clock.set(date(2028, 3, 5))
    desk.app.receive_return(on_time, date(2028, 3, 1), True, True, True, actor=cs)
    desk.app.receive_return(a_day_late, date(2028, 3, 2), True, True, True, actor=cs)
    # Then the postmark decides: day 30 holds, day 31 does not, whatever today is
    assert view(read_models, on_time)["thirty_day_guarantee"] == {
        "holds": True, "days_used": 30, "last_postmark": "2028-03-01",
    }
    assert view(read_models, a_day_late)["thirty_day_guarantee"] == {
        "holds": False, "days_used": 31, "last_postmark": "2028-03-01",
    }
    assert view(read_models, on_time)["days_since_shipping"] == 34


def test_from_the_last_of_february_to_the_first_of_march_2027_is_one_day(
    desk: CaseDesk, read_models: ReadModels
) -> None:
    desk.clock.set(date(2027, 3, 1))
    case_id = desk.open("damaged", shipped_on=date(2027, 2, 28))

    case = view(read_models, case_id)

    assert (case["days_since_shipping"], case["days_open"]) == (1, 0)
    assert case["thirty_day_guarantee"] == {
        "holds": True, "days_used": 1, "last_postmark": "2027-03-30",
    }


def test_the_overdue_flag_and_the_overdue_filter_agree_day_by_day(
    desk: CaseDesk, read_models: ReadModels
) -> None:
    # Given a case in each state that could be overdue, and some that never are
    cases = {
        state: desk.reach(kind, state)
        for kind, state in [
            ("damaged", "accepted"),  # return_by 2028-02-29
            ("defective", "received"),  # received 2028-02-20
            ("quality_problem", "with_supplier"),  # received 2028-02-20
            ("delivery_error", "goods_in_transit"),  # return_by 2028-02-29, not back yet
            ("damaged", "opened"),
            ("defective", "resolved"),
            ("damaged", "late"),
        ]
    }
    expected = {
        # accepted: from the day after return_by; received: more than 10 days after receipt
        date(2028, 2, 29): set(),
        date(2028, 3, 1): {"accepted"},
        date(2028, 3, 2): {"accepted", "received", "with_supplier"},
        date(2028, 9, 1): {"accepted", "received", "with_supplier"},
    }
    for today, overdue_states in expected.items():
        # When the shop's calendar shows the day
        desk.clock.set(today)
        read_models.wait_caught_up()

        # Then each case's flag says whether it is overdue
        flags = {state: view(read_models, c)["overdue"] for state, c in cases.items()}
        assert {s for s, flag in flags.items() if flag} == overdue_states, today
        # and the filter lists exactly the flagged cases, and the others when asked for them
        overdue_ids = ids(read_models, desk.customer, overdue=True)
        not_overdue_ids = ids(read_models, desk.customer, overdue=False)
        assert overdue_ids == {str(cases[s]) for s in overdue_states}, today
        assert not_overdue_ids == {str(c) for c in cases.values()} - overdue_ids, today
        for item in read_models.return_cases(
            state=None, username=desk.customer, overdue=None, limit=50, after=None
        ).items:
            assert item["overdue"] is (item["id"] in overdue_ids)


@pytest.mark.parametrize(("state", "ended_on", "last_day"), [
    ("closed", CLOSED_ON, POSTMARK),  # the 30 days: to the postmark of the goods sent back
    ("late", LATE_RECEIVED_ON, LATE_POSTMARK),
    ("rejected", OPENED_ON, OPENED_ON),  # no goods sent back: to the day it ended
    ("cancelled", OPENED_ON, OPENED_ON),
])
def test_a_case_s_days_stop_at_the_day_it_ended(
    desk: CaseDesk, read_models: ReadModels, state: str, ended_on: date, last_day: date,
) -> None:
    # Given a case that ended (goods shipped 2028-01-31, the case opened 2028-02-10)
    case_id = desk.reach("damaged", state)

    # When it is read a year later
    desk.clock.set(ended_on + timedelta(days=365))
    case = view(read_models, case_id)
    listed = read_models.return_cases(username=desk.customer, state=state, overdue=None,
                                       limit=100, after=None).items

    # Then its days open, and the 30 days of its full return, stopped when it ended
    days_used = (last_day - SHIPPED_ON).days
    for shown in (case, *(c for c in listed if c["id"] == str(case_id))):
        assert shown["days_open"] == (ended_on - OPENED_ON).days
        assert shown["thirty_day_guarantee"]["days_used"] == days_used
        assert shown["thirty_day_guarantee"]["holds"] is (days_used <= 30)
    # while its days since shipping go on: the goods' age, not the case's
    assert case["days_since_shipping"] == (ended_on + timedelta(days=365) - SHIPPED_ON).days


def test_a_case_refused_when_asked_for_was_open_no_day(
    desk: CaseDesk, read_models: ReadModels,
) -> None:
    desk.clock.set(OPENED_ON)
    with pytest.raises(CaseRefused) as refused:
        desk.open("damaged", replaced_or_modified=True)
    desk.clock.set(OPENED_ON + timedelta(days=40))
    assert view(read_models, UUID(refused.value.case_id))["days_open"] == 0


def test_the_overdue_reasons_name_the_deadline_passed(
    desk: CaseDesk, read_models: ReadModels
) -> None:
    accepted = desk.reach("damaged", "accepted")
    received = desk.reach("defective", "received")
    desk.clock.set(date(2028, 3, 2))

    assert view(read_models, accepted)["overdue_reasons"] == ["past_return_by"]
    assert view(read_models, received)["overdue_reasons"] == ["unresolved_after_receipt"]


def test_cases_are_listed_by_state_and_customer(
    desk: CaseDesk, read_models: ReadModels
) -> None:
    accepted = desk.reach("damaged", "accepted")
    rejected = desk.reach("defective", "rejected")
    read_models.wait_caught_up()

    def listed(state: str | None) -> list[str]:
        page = read_models.return_cases(
            state=state, username=desk.customer, overdue=None, limit=10, after=None
        )
        return [item["id"] for item in page.items]

    assert listed("accepted") == [str(accepted)]
    assert listed("rejected") == [str(rejected)]
    assert listed(None) == [str(accepted), str(rejected)]
    assert listed("closed") == []


def test_the_orders_view_lists_the_cases_of_each_order(
    desk: CaseDesk, read_models: ReadModels, finance: Actor
) -> None:
    # Given two cases on one order, one on another, and none on the other two
    first = desk.open("damaged")
    second = desk.reach("damaged", "with_supplier")
    third = desk.open("quality_problem")
    desk.app.resolve_return_case(second, "refund", 1_000, 0, None, actor=finance)
    read_models.wait_caught_up()

    # When the customer's orders are read
    orders = {
        o["order_no"]: o for o in read_models.orders(desk.customer, limit=10, after=None).items
    }

    # Then each order lists its cases, in the order they were opened
    assert orders["ORD-damaged"]["cases"] == [str(first), str(second)]
    assert orders["ORD-quality_problem"]["cases"] == [str(third)]
    assert orders["ORD-defective"]["cases"] == []
    assert orders["ORD-delivery_error"]["cases"] == []
    # and the refund is credited back on its order
    assert (orders["ORD-damaged"]["credited_back"], orders["ORD-damaged"]["refundable"]) == (
        1_000, ORDER_PAID - 1_000,
    )


def test_the_account_view_shows_the_refund_and_the_freight_of_a_resolution(
    desk: CaseDesk, read_models: ReadModels, finance: Actor
) -> None:
    case_id = desk.reach("damaged", "with_supplier")
    read_models.wait_caught_up()
    before = read_models.account(desk.customer)
    assert before is not None

    desk.app.resolve_return_case(case_id, "refund", 1_000, 200, None, actor=finance)
    read_models.wait_caught_up()

    after = read_models.account(desk.customer)
    assert after is not None
    assert after["posted"] == before["posted"] + 1_000 - 200
    history = read_models.history(desk.customer, limit=20, after=None).items
    assert [(h["type"], h["amount"], h["data"]["case_id"]) for h in history[-2:]] == [
        ("return_refund_credited", 1_000, str(case_id)),
        ("freight_charged", 200, str(case_id)),
    ]
    assert history[-1]["posted_after"] == after["posted"]


def ids(read_models: ReadModels, username: str, *, overdue: bool) -> set[str]:
    page = read_models.return_cases(
        state=None, username=username, overdue=overdue, limit=50, after=None
    )
    assert page.next is None
    return {item["id"] for item in page.items}
