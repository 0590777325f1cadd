"""The shop's return policy as pure rules (ledger/policy.py): each rule alone, then the order in
which ``refusal_reason`` reports them, then the deadlines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date

import pytest

from ledger import policy
from ledger.policy import Application, Conditions

PART_A = sorted(policy.PART_A_KINDS)
TODAY = date(2028, 3, 1)


def eligible(kind: str) -> Application:
    return Application(
        kind=kind,
        conditions=Conditions(
            replaced_or_modified=False,
            parts_missing=False,
            opened_media=False,
            has_quality_assurance=True,
        ),
        goods_photos=("photo://goods-1",),
        package_photos=("photo://box-1",),
        guarantee_until=date(2028, 12, 31) if kind == "quality_problem" else None,
    )


def with_conditions(app: Application, **changes: bool) -> Application:
    return replace(app, conditions=replace(app.conditions, **changes))


def test_the_kinds_are_the_three_of_part_a_and_the_one_of_part_b() -> None:
    assert policy.PART_A_KINDS == {"delivery_error", "defective", "damaged"}
    assert policy.PART_B_KINDS == {"quality_problem"}
    assert policy.CASE_KINDS == policy.PART_A_KINDS | policy.PART_B_KINDS


@pytest.mark.parametrize("kind", sorted(policy.CASE_KINDS))
def test_an_eligible_application_of_any_kind_breaks_no_rule(kind: str) -> None:
    assert policy.refusal_reason(eligible(kind), TODAY) is None


# -- each rule alone -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(policy.CASE_KINDS))
@pytest.mark.parametrize(
    ("condition", "rule"),
    [
        ("replaced_or_modified", policy.item_replaced_or_modified),
        ("parts_missing", policy.parts_missing),
        ("opened_media", policy.opened_media),
    ],
)
def test_goods_replaced_with_parts_missing_or_opened_media_are_never_returned_whatever_the_kind(
    kind: str, condition: str, rule: Callable[[Application], str | None]
) -> None:
    # Given an otherwise eligible application
    fine = eligible(kind)
    # When CS found the one condition
    broken = with_conditions(fine, **{condition: True})
    # Then exactly that rule answers, with its own code
    expected = "item_replaced_or_modified" if condition == "replaced_or_modified" else condition
    assert rule(broken) == expected
    assert rule(fine) is None
    assert policy.refusal_reason(broken, TODAY) == expected


@pytest.mark.parametrize("kind", PART_A)
@pytest.mark.parametrize(
    ("goods", "package"),
    [((), ("photo://box-1",)), (("photo://goods-1",), ()), ((), ())],
)
def test_part_a_without_a_photo_of_the_goods_and_one_of_the_package_misses_evidence(
    kind: str, goods: tuple[str, ...], package: tuple[str, ...]
) -> None:
    application = replace(eligible(kind), goods_photos=goods, package_photos=package)

    assert policy.missing_evidence(application) == "missing_evidence"
    assert policy.refusal_reason(application, TODAY) == "missing_evidence"


@pytest.mark.parametrize("kind", PART_A)
def test_part_a_with_one_photo_of_each_has_its_evidence(kind: str) -> None:
    assert policy.missing_evidence(eligible(kind)) is None


def test_a_quality_problem_needs_no_photos() -> None:
    application = replace(eligible("quality_problem"), goods_photos=(), package_photos=())

    assert policy.missing_evidence(application) is None
    assert policy.refusal_reason(application, TODAY) is None


def test_a_quality_problem_without_quality_assurance_is_refused() -> None:
    application = with_conditions(eligible("quality_problem"), has_quality_assurance=False)

    assert policy.no_quality_assurance(application) == "no_quality_assurance"
    assert policy.refusal_reason(application, TODAY) == "no_quality_assurance"


def test_a_quality_problem_without_a_guarantee_date_has_no_quality_assurance() -> None:
    application = replace(eligible("quality_problem"), guarantee_until=None)

    assert policy.no_quality_assurance(application) == "no_quality_assurance"
    assert policy.guarantee_expired(application, TODAY) is None
    assert policy.refusal_reason(application, TODAY) == "no_quality_assurance"


@pytest.mark.parametrize("kind", PART_A)
def test_part_a_goods_need_no_quality_assurance_and_no_guarantee(kind: str) -> None:
    application = with_conditions(eligible(kind), has_quality_assurance=False)

    assert policy.no_quality_assurance(application) is None
    assert policy.guarantee_expired(application, TODAY) is None
    assert policy.refusal_reason(application, TODAY) is None


def test_a_quality_problem_is_eligible_on_the_last_day_of_its_guarantee_and_not_the_day_after() -> (
    None
):
    application = replace(eligible("quality_problem"), guarantee_until=date(2028, 2, 29))

    assert policy.guarantee_expired(application, date(2028, 2, 29)) is None
    assert policy.refusal_reason(application, date(2028, 2, 29)) is None
    assert policy.guarantee_expired(application, date(2028, 3, 1)) == "guarantee_expired"
    assert policy.refusal_reason(application, date(2028, 3, 1)) == "guarantee_expired"


@pytest.mark.parametrize("kind", PART_A)
def test_a_past_guarantee_date_does_not_matter_for_part_a(kind: str) -> None:
    application = replace(eligible(kind), guarantee_until=date(2020, 1, 1))

    assert policy.guarantee_expired(application, TODAY) is None


# -- the order of the rules ------------------------------------------------------------------


def test_refusal_reason_reports_the_first_broken_rule_in_the_policy_s_order_for_part_a() -> None:
    # Given a part A application that breaks every rule that applies to it
    application = replace(
        with_conditions(
            eligible("damaged"), replaced_or_modified=True, parts_missing=True, opened_media=True
        ),
        goods_photos=(),
    )
    reported = []
    # When each reported rule is mended in turn
    for _ in range(5):
        reason = policy.refusal_reason(application, TODAY)
        reported.append(reason)
        application = _mend(application, reason)
    # Then the reasons came in the policy's order, and then there were none
    assert reported == [
        "item_replaced_or_modified", "parts_missing", "opened_media", "missing_evidence", None,
    ]


def test_refusal_reason_reports_the_first_broken_rule_in_the_policy_s_order_for_part_b() -> None:
    application = replace(
        with_conditions(
            eligible("quality_problem"),
            replaced_or_modified=True,
            parts_missing=True,
            opened_media=True,
            has_quality_assurance=False,
        ),
        guarantee_until=date(2028, 1, 1),
    )
    reported = []
    for _ in range(6):
        reason = policy.refusal_reason(application, TODAY)
        reported.append(reason)
        application = _mend(application, reason)
    assert reported == [
        "item_replaced_or_modified",
        "parts_missing",
        "opened_media",
        "no_quality_assurance",
        "guarantee_expired",
        None,
    ]


def _mend(application: Application, reason: str | None) -> Application:
    if reason == "item_replaced_or_modified":
        return with_conditions(application, replaced_or_modified=False)
    if reason in ("parts_missing", "opened_media"):
        return with_conditions(application, **{reason: False})
    if reason == "missing_evidence":
        return replace(application, goods_photos=("photo://goods-2",))
    if reason == "no_quality_assurance":
        return with_conditions(application, has_quality_assurance=True)
    if reason == "guarantee_expired":
        return replace(application, guarantee_until=TODAY)
    return application


# -- deadlines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shipped_on", "until", "days_used", "holds", "last_postmark"),
    [
        (date(2028, 1, 31), date(2028, 3, 1), 30, True, date(2028, 3, 1)),  # across 29 Feb
        (date(2028, 1, 31), date(2028, 3, 2), 31, False, date(2028, 3, 1)),
        (date(2027, 1, 31), date(2027, 3, 2), 30, True, date(2027, 3, 2)),  # no leap day
        (date(2027, 2, 28), date(2027, 3, 1), 1, True, date(2027, 3, 30)),
        (date(2028, 2, 28), date(2028, 3, 1), 2, True, date(2028, 3, 29)),
        (date(2028, 12, 15), date(2029, 1, 14), 30, True, date(2029, 1, 14)),  # across a year
        (date(2028, 12, 15), date(2029, 1, 15), 31, False, date(2029, 1, 14)),
        (date(2028, 5, 5), date(2028, 5, 5), 0, True, date(2028, 6, 4)),
    ],
)
def test_the_30_day_full_return_counts_calendar_days_from_shipping_and_holds_through_day_30(
    shipped_on: date, until: date, days_used: int, holds: bool, last_postmark: date
) -> None:
    # judged by the postmark once there is one, whatever today is
    by_postmark = policy.thirty_day_full_return(shipped_on, until, date(2030, 1, 1))
    # and by today while the goods have not come back
    by_today = policy.thirty_day_full_return(shipped_on, None, until)

    for full_return in (by_postmark, by_today):
        assert full_return == policy.FullReturn(
            days_used=days_used, holds=holds, last_postmark=last_postmark
        )


def test_a_postmark_on_return_by_is_in_time_and_one_a_day_later_is_late() -> None:
    assert policy.is_late(date(2028, 2, 29), date(2028, 2, 29)) is False
    assert policy.is_late(date(2028, 3, 1), date(2028, 2, 29)) is True
    assert policy.is_late(date(2028, 2, 1), date(2028, 2, 29)) is False


@pytest.mark.parametrize(
    ("state", "today", "overdue"),
    [
        ("accepted", date(2028, 2, 29), False),
        ("accepted", date(2028, 3, 1), True),
        ("goods_in_transit", date(2028, 4, 1), False),  # its postmark decides, once it arrives
        ("received", date(2028, 4, 1), False),
        ("opened", date(2028, 4, 1), False),
    ],
)
def test_only_an_accepted_case_is_past_its_return_by_and_only_from_the_day_after(
    state: str, today: date, overdue: bool
) -> None:
    assert policy.past_return_by(state, date(2028, 2, 29), today) is overdue


def test_an_accepted_case_without_return_by_is_never_past_it() -> None:
    assert policy.past_return_by("accepted", None, date(2030, 1, 1)) is False


@pytest.mark.parametrize(
    ("state", "today", "overdue"),
    [
        ("received", date(2028, 3, 10), False),  # 10 days after receipt: not yet
        ("received", date(2028, 3, 11), True),
        ("with_supplier", date(2028, 3, 11), True),
        ("resolved", date(2028, 6, 1), False),
        ("closed", date(2028, 6, 1), False),
        ("late", date(2028, 6, 1), False),
    ],
)
def test_received_goods_are_unresolved_too_long_only_after_the_given_days(
    state: str, today: date, overdue: bool
) -> None:
    # received on 2028-02-29, allowed 10 days
    assert policy.unresolved_too_long(state, date(2028, 2, 29), today, 10) is overdue


def test_without_a_receipt_date_nothing_is_unresolved_too_long() -> None:
    assert policy.unresolved_too_long("received", None, date(2030, 1, 1), 10) is False
