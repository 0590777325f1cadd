"""The shop's policy at its edges: what the customer is told when an application is refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from ledger import policy
from ledger.policy import Application, Conditions


def quality_problem(*, assured: bool, guarantee_until: date | None) -> Application:
    return Application(
        kind="quality_problem",
        conditions=Conditions(
            replaced_or_modified=False,
            parts_missing=False,
            opened_media=False,
            has_quality_assurance=assured,
        ),
        goods_photos=(),
        package_photos=(),
        guarantee_until=guarantee_until,
    )


def test_a_guaranteed_but_undated_quality_problem_is_refused_in_words_naming_the_date() -> None:
    # Given a quality problem CS says is guaranteed, with no guarantee date
    application = quality_problem(assured=True, guarantee_until=None)

    # When the policy refuses it
    assert policy.refusal_reason(application, date(2028, 3, 1)) == "no_quality_assurance"
    # Then the customer is told the missing field, not that the goods have no guarantee
    words = policy.refusal_words(application, "no_quality_assurance")
    assert words.startswith("guarantee_until is missing")


def test_goods_without_quality_assurance_are_refused_in_its_own_words_dated_or_not() -> None:
    for guarantee_until in (None, date(2028, 12, 31)):
        application = quality_problem(assured=False, guarantee_until=guarantee_until)

        assert policy.refusal_words(application, "no_quality_assurance") == (
            policy.REFUSAL_WORDS["no_quality_assurance"]
        )


def test_an_undated_guarantee_refused_by_another_rule_is_told_that_rule_s_words() -> None:
    application = quality_problem(assured=True, guarantee_until=None)
    application = replace(
        application, conditions=replace(application.conditions, parts_missing=True)
    )

    assert policy.refusal_words(application, "parts_missing") == (
        policy.REFUSAL_WORDS["parts_missing"]
    )


@pytest.mark.parametrize("reason", sorted(policy.REFUSAL_WORDS))
def test_each_reason_of_the_policy_is_told_in_its_own_words(
    reason: str,
) -> None:
    application = quality_problem(assured=True, guarantee_until=date(2028, 12, 31))

    assert policy.refusal_words(application, reason) == policy.REFUSAL_WORDS[reason]


def test_a_reason_without_words_is_told_as_its_code() -> None:
    application = quality_problem(assured=True, guarantee_until=date(2028, 12, 31))

    assert policy.refusal_words(application, "something_new") == "something_new"
