"""Opening a case, on both stores: what the policy accepts, every reason it refuses, and that a
refused opening records a refused case and nothing else (an unknown order: nothing at all)
(DOMAIN.md, "Refused at opening")."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date, timedelta
from typing import Any
from uuid import UUID

import pytest

from ledger.errors import CaseRefused, InvalidInput, NotFound
from ledger.identity import Actor
from tests.cases.conftest import KINDS, OPENED_ON, SHIPPED_ON, CaseDesk, fund, last_position

PART_A = ["damaged", "defective", "delivery_error"]

# reason: the kinds it can refuse, and the changes to an eligible application that break it
REFUSALS: list[tuple[str, list[str], dict[str, Any]]] = [
    ("item_replaced_or_modified", KINDS, {"replaced_or_modified": True}),
    ("parts_missing", KINDS, {"parts_missing": True}),
    ("opened_media", KINDS, {"opened_media": True}),
    ("no_quality_assurance", ["quality_problem"], {"has_quality_assurance": False}),
    ("no_quality_assurance", ["quality_problem"], {"guarantee_until": None}),
    ("guarantee_expired", ["quality_problem"], {"guarantee_until": OPENED_ON - timedelta(days=1)}),
    ("missing_evidence", PART_A, {"goods_photos": []}),
    ("missing_evidence", PART_A, {"package_photos": []}),
    ("missing_evidence", PART_A, {"goods_photos": [], "package_photos": []}),
    ("unknown_order", KINDS, {"order_no": "ORD-never-placed"}),
]


@pytest.mark.parametrize(
    ("reason", "kinds", "changes"),
    REFUSALS,
    ids=[f"{reason}-{'+'.join(sorted(changes))}" for reason, _, changes in REFUSALS],
)
def test_an_application_the_policy_refuses_is_answered_with_its_reason_and_recorded_refused(
    desk: CaseDesk, reason: str, kinds: list[str], changes: dict[str, Any]
) -> None:
    for kind in kinds:
        # Given an application that breaks one rule
        before = last_position(desk.app)
        # When CS opens the case
        with pytest.raises(CaseRefused) as refused:
            desk.open(kind, **changes)
        # Then the policy refuses it with the rule's reason code
        assert refused.value.reason == reason, kind
        assert refused.value.code == "case_refused"
        if reason == "unknown_order":  # no order of the customer's: no case, nothing recorded
            assert refused.value.context == {"reason": reason}
            assert refused.value.case_id is None
            assert last_position(desk.app) == before
            continue
        # and the refused case is recorded, one event, naming the reason and the application
        case_id = UUID(refused.value.case_id)
        assert refused.value.context == {"reason": reason, "case_id": str(case_id)}
        assert last_position(desk.app) == before + 1
        (born,) = desk.events(case_id)
        assert type(born).__name__ == "Refused"
        assert (born.reason, born.kind, born.username) == (reason, kind, desk.customer)
        case = desk.app.return_case(case_id)
        assert (case.state, case.refusal_reason) == ("refused", reason)


def test_an_order_of_another_customer_is_an_unknown_order(
    desk: CaseDesk, system: Actor
) -> None:
    # Given another customer, whose account has an order ORD-bob-1
    fund(desk.app, f"{desk.customer}-bob", system)
    desk.app.purchase(f"{desk.customer}-bob", "ORD-bob-1", 100, actor=system)
    before = last_position(desk.app)

    # When CS opens a case on that order for our customer
    with pytest.raises(CaseRefused) as refused:
        desk.open("damaged", order_no="ORD-bob-1")

    # Then it is refused as an unknown order
    assert refused.value.reason == "unknown_order"
    assert last_position(desk.app) == before


def test_an_unknown_order_is_reported_before_any_rule_of_the_policy(desk: CaseDesk) -> None:
    with pytest.raises(CaseRefused) as refused:
        desk.open("damaged", order_no="ORD-never-placed", parts_missing=True, goods_photos=[])

    assert refused.value.reason == "unknown_order"


def test_a_quality_problem_opens_on_the_last_day_of_its_guarantee(desk: CaseDesk) -> None:
    desk.clock.set(date(2028, 2, 29))

    case_id = desk.open("quality_problem", guarantee_until=date(2028, 2, 29))

    assert desk.state(case_id) == "opened"
    assert desk.events(case_id)[0].guarantee_until == "2028-02-29"


def test_a_quality_problem_needs_no_photos(desk: CaseDesk) -> None:
    case_id = desk.open("quality_problem", goods_photos=[], package_photos=[])

    assert desk.state(case_id) == "opened"


def test_part_a_goods_need_no_quality_assurance(desk: CaseDesk) -> None:
    for kind in PART_A:
        case_id = desk.open(kind, has_quality_assurance=False)

        assert desk.state(case_id) == "opened"


def test_an_eligible_application_opens_a_case_and_answers_it(desk: CaseDesk) -> None:
    for kind in KINDS:
        before = last_position(desk.app)

        outcome = desk.app.open_return_case(desk.application(kind), actor=desk.actor)

        # one event, the case's opening, answered with its position
        assert outcome.outcome == "created"
        assert outcome.position == last_position(desk.app) == before + 1
        assert outcome.body == {
            "id": outcome.body["id"],
            "username": desk.customer,
            "order_no": f"ORD-{kind}",
            "kind": kind,
            "state": "opened",
            "opened_on": OPENED_ON.isoformat(),
            "shipped_on": SHIPPED_ON.isoformat(),
            "return_by": None,
        }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kind": "changed_my_mind"}, "kind"),
        ({"shipped_on": OPENED_ON + timedelta(days=1)}, "shipped_on"),
        ({"order_no": " ORD-damaged"}, "order_no"),
        ({"username": "A"}, "username"),
    ],
)
def test_an_application_with_invalid_input_is_refused_before_the_policy_is_asked(
    desk: CaseDesk, cs: Actor, changes: dict[str, Any], field: str
) -> None:
    before = last_position(desk.app)

    with pytest.raises(InvalidInput) as invalid:
        desk.app.open_return_case(replace(desk.application("damaged"), **changes), actor=cs)

    assert invalid.value.field == field
    assert last_position(desk.app) == before


def test_a_case_for_a_customer_without_an_account_is_not_found(desk: CaseDesk) -> None:
    before = last_position(desk.app)

    with pytest.raises(NotFound):
        desk.open("damaged", username="nobody-here")

    assert last_position(desk.app) == before


def test_a_refusal_retried_under_its_key_names_the_same_case_and_records_nothing(
    desk: CaseDesk,
) -> None:
    # Given an application for opened media, sent under a key
    application = desk.application("defective", opened_media=True)
    with pytest.raises(CaseRefused) as first:
        desk.app.open_return_case(application, actor=desk.actor, idempotency_key="k-media")
    after_first = last_position(desk.app)

    # When the same request is sent again with the key (its answer was lost)
    with pytest.raises(CaseRefused) as again:
        desk.app.open_return_case(application, actor=desk.actor, idempotency_key="k-media")

    # Then it hears the same refusal, naming the same case, marked replayed; nothing recorded
    assert (again.value.reason, again.value.case_id) == ("opened_media", first.value.case_id)
    assert again.value.replayed and not first.value.replayed
    assert last_position(desk.app) == after_first


def test_requests_sent_at_once_under_one_key_record_one_refused_case(desk: CaseDesk) -> None:
    application = desk.application("damaged", goods_photos=[])
    before = last_position(desk.app)
    start = threading.Barrier(4)

    def send() -> str | None:
        start.wait()
        try:
            desk.app.open_return_case(application, actor=desk.actor, idempotency_key="k-once")
        except CaseRefused as refused:
            return refused.case_id
        raise AssertionError("a refused application was opened")

    with ThreadPoolExecutor(4) as pool:
        case_ids = list(pool.map(lambda _: send(), range(4)))

    # every request names the one refused case, and the log holds it once
    assert len(set(case_ids)) == 1 and case_ids[0] is not None
    assert last_position(desk.app) == before + 1
    assert desk.state(UUID(case_ids[0])) == "refused"
