"""Time as the ledger writes it: RFC 3339 in UTC with microseconds always, whatever the zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from ledger.clock import rfc3339

ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=9)), timezone(timedelta(hours=-5, minutes=-30))]
)


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31), timezones=ZONES)
)
def test_a_moment_is_written_as_its_utc_time_with_six_digits_of_microseconds(
    moment: datetime,
) -> None:
    assert rfc3339(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_whole_second_still_shows_its_microseconds() -> None:
    assert rfc3339(datetime(2026, 11, 26, 9, 0, tzinfo=UTC)) == "2026-11-26T09:00:00.000000Z"
