"""``case_status`` (projections/return_cases.py), the figures of a case that change with the
calendar, computed for the day asked: days open, days since shipping, the 30-day full return and
the overdue flags; and ``overdue_where``, the same overdue rule as SQL for the list filter."""

from __future__ import annotations

import re
import sqlite3
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.return_cases import case_status, overdue_where

UNRESOLVED_AFTER_DAYS = 10


def row(**changes: Any) -> dict[str, Any]:
    """A case row as the read model keeps it: opened, nothing dated since."""
    base: dict[str, Any] = {
        "state": "opened",
        "shipped_on": "2028-01-31",
        "opened_on": "2028-02-15",
        "return_by": None,
        "postmark_date": None,
        "received_on": None,
    }
    return {**base, **changes}


def status(today: date, **changes: Any) -> dict[str, Any]:
    return case_status(row(**changes), today, UNRESOLVED_AFTER_DAYS)


# -- days ----------------------------------------------------------------------------------------


def test_days_are_counted_across_the_leap_day_and_the_month_end() -> None:
    # shipped 2028-01-31, opened 2028-02-15, today 2028-03-01 (29 February between)
    figures = status(date(2028, 3, 1))

    assert figures["days_since_shipping"] == 30
    assert figures["days_open"] == 15
    assert figures["thirty_day_guarantee"] == {
        "holds": True, "days_used": 30, "last_postmark": "2028-03-01",
    }


def test_without_a_leap_day_the_last_of_february_to_the_first_of_march_is_one_day() -> None:
    figures = status(date(2027, 3, 1), shipped_on="2027-02-28", opened_on="2027-03-01")

    assert figures["days_since_shipping"] == 1
    assert figures["days_open"] == 0
    assert figures["thirty_day_guarantee"] == {
        "holds": True, "days_used": 1, "last_postmark": "2027-03-30",
    }


def test_across_a_year_end_days_keep_counting() -> None:
    figures = status(date(2029, 1, 14), shipped_on="2028-12-15", opened_on="2028-12-31")

    assert (figures["days_since_shipping"], figures["days_open"]) == (30, 14)
    assert figures["thirty_day_guarantee"]["holds"] is True


def test_the_30_day_full_return_holds_at_30_days_and_not_at_31() -> None:
    assert status(date(2028, 3, 1))["thirty_day_guarantee"]["holds"] is True
    on_day_31 = status(date(2028, 3, 2))["thirty_day_guarantee"]
    assert on_day_31 == {"holds": False, "days_used": 31, "last_postmark": "2028-03-01"}


@pytest.mark.parametrize(
    ("postmark", "days_used", "holds"),
    [("2028-03-01", 30, True), ("2028-03-02", 31, False), ("2028-02-16", 16, True)],
)
def test_once_the_goods_are_back_their_postmark_decides_the_30_day_full_return_for_good(
    postmark: str, days_used: int, holds: bool
) -> None:
    for state in ("received", "with_supplier", "resolved", "closed", "late"):
        # long after, the figure is still the postmark's
        figures = status(
            date(2028, 9, 1), state=state, postmark_date=postmark, received_on="2028-03-05"
        )

        assert figures["thirty_day_guarantee"] == {
            "holds": holds, "days_used": days_used, "last_postmark": "2028-03-01",
        }
        assert figures["days_since_shipping"] == 214


# -- overdue -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "overdue"), [(date(2028, 2, 29), False), (date(2028, 3, 1), True)]
)
def test_an_accepted_case_is_overdue_from_the_day_after_its_return_by(
    today: date, overdue: bool
) -> None:
    figures = status(today, state="accepted", return_by="2028-02-29")

    assert figures["overdue"] is overdue
    assert figures["overdue_reasons"] == (["past_return_by"] if overdue else [])


@pytest.mark.parametrize("state", ["received", "with_supplier"])
@pytest.mark.parametrize(
    ("today", "overdue"), [(date(2028, 3, 1), False), (date(2028, 3, 2), True)]
)
def test_received_goods_are_overdue_once_unresolved_for_more_than_the_given_days(
    state: str, today: date, overdue: bool
) -> None:
    # received on 2028-02-20: 10 days later is 2028-03-01 (the leap day between)
    figures = status(
        today, state=state, return_by="2028-02-29", postmark_date="2028-02-16",
        received_on="2028-02-20",
    )

    assert figures["overdue"] is overdue
    assert figures["overdue_reasons"] == (["unresolved_after_receipt"] if overdue else [])


@pytest.mark.parametrize(
    "state", ["opened", "supplier_review", "goods_in_transit", "resolved", "closed", "rejected",
              "expired", "late", "cancelled"],
)
def test_no_other_state_is_ever_overdue(state: str) -> None:
    figures = status(
        date(2030, 1, 1), state=state, return_by="2028-02-29", postmark_date="2028-02-16",
        received_on="2028-02-20",
    )

    assert figures["overdue"] is False
    assert figures["overdue_reasons"] == []


# -- the SQL filter agrees with the flag ---------------------------------------------------------

STATES = ["opened", "supplier_review", "accepted", "goods_in_transit", "received",
          "with_supplier", "resolved", "closed", "rejected", "expired", "late", "cancelled"]
DAYS = st.dates(min_value=date(2027, 12, 1), max_value=date(2028, 4, 30))


@st.composite
def case_rows(draw: st.DrawFn) -> dict[str, Any]:
    state = draw(st.sampled_from(STATES))
    return_by = draw(st.none() | DAYS) if state != "accepted" else draw(DAYS)
    received_on = draw(DAYS) if state in ("received", "with_supplier") else draw(st.none() | DAYS)
    return row(
        state=state,
        return_by=None if return_by is None else return_by.isoformat(),
        received_on=None if received_on is None else received_on.isoformat(),
    )


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(case_rows(), min_size=1, max_size=12),
    today=DAYS,
    after_days=st.integers(min_value=0, max_value=90),
)
def test_the_overdue_filter_selects_exactly_the_cases_whose_overdue_flag_is_set(
    rows: list[dict[str, Any]], today: date, after_days: int
) -> None:
    condition, params = overdue_where(today, after_days)
    with sqlite3.connect(":memory:") as db:
        db.execute(
            "CREATE TABLE cases (n INTEGER, state TEXT, return_by TEXT, received_on TEXT)"
        )
        db.executemany(
            "INSERT INTO cases VALUES (?, ?, ?, ?)",
            [(n, r["state"], r["return_by"], r["received_on"]) for n, r in enumerate(rows)],
        )
        sql = re.sub(r"%\((\w+)\)s", r":\1", condition)
        selected = {n for (n,) in db.execute(f"SELECT n FROM cases WHERE {sql}", params)}
        not_selected = {n for (n,) in db.execute(f"SELECT n FROM cases WHERE NOT {sql}", params)}

    flagged = {n for n, r in enumerate(rows) if case_status(r, today, after_days)["overdue"]}
    assert selected == flagged
    assert not_selected == set(range(len(rows))) - flagged

