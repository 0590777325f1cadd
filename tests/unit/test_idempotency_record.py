"""What a caller's Idempotency-Key did: one record per caller and key, honoured for 24 hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import example, given
from hypothesis import strategies as st

from ledger.idempotency import (
    CLOCK_SLACK,
    KEY_LIFETIME,
    KeyRecord,
    created_ids,
    fingerprint,
    record_id,
)

BODY = {"account": {"username": "alice", "posted": 100}}
RECORDED_AT = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)


def recorded(caller: str = "system", key: str = "k-1") -> KeyRecord:
    return KeyRecord(
        id=record_id(caller, key), caller=caller, fingerprint=fingerprint("deposit", {"a": 1}),
        outcome="created", body=BODY, position=7, recorded_at=RECORDED_AT,
    )


def test_a_key_is_honoured_for_24_hours() -> None:
    assert KEY_LIFETIME == timedelta(hours=24)


def test_the_record_of_a_key_is_the_same_for_the_same_caller_and_key() -> None:
    assert record_id("cs:1", "key") == record_id("cs:1", "key")


def test_the_same_key_from_different_callers_has_different_records() -> None:
    assert record_id("cs:1", "key") != record_id("cs:2", "key")
    assert record_id("cs:1", "key") != record_id("cs:1", "key2")


def test_a_request_s_fingerprint_does_not_depend_on_the_order_of_its_fields() -> None:
    assert fingerprint("deposit", {"amount": 100, "reference": "P"}) == fingerprint(
        "deposit", {"reference": "P", "amount": 100}
    )


def test_a_request_s_fingerprint_changes_with_the_command_and_with_any_value() -> None:
    base = fingerprint("deposit", {"amount": 100, "reference": "P"})

    assert base != fingerprint("purchase", {"amount": 100, "reference": "P"})
    assert base != fingerprint("deposit", {"amount": 101, "reference": "P"})
    assert base != fingerprint("deposit", {"amount": "100", "reference": "P"})
    assert base != fingerprint("deposit", {"amount": 100, "reference": "P", "note": None})


def test_a_recorded_key_is_live_until_24_hours_have_passed_on_the_shop_s_clock() -> None:
    record = recorded()

    assert record.is_live(RECORDED_AT)
    assert record.is_live(RECORDED_AT + KEY_LIFETIME - timedelta(microseconds=1))
    assert not record.is_live(RECORDED_AT + KEY_LIFETIME)
    assert not record.is_live(RECORDED_AT + timedelta(days=30))


# -- what a command under a key creates (a return case) is named by the key ---------------------

MOMENTS = st.datetimes(datetime(2020, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC))
A_KEY = record_id("cs:1", "key")


MIDNIGHT = datetime(2026, 12, 1, tzinfo=UTC)  # a window's edge (days counted from 1970)
A_MOMENT = timedelta(microseconds=1)


@given(decided_at=MOMENTS, later=st.timedeltas(-CLOCK_SLACK, KEY_LIFETIME + CLOCK_SLACK))
@example(decided_at=MIDNIGHT - A_MOMENT, later=KEY_LIFETIME + CLOCK_SLACK)
@example(decided_at=MIDNIGHT, later=-CLOCK_SLACK)
@example(decided_at=MIDNIGHT - A_MOMENT, later=A_MOMENT)
def test_a_retry_within_the_key_s_lifetime_looks_where_its_first_try_named_what_it_created(
    decided_at: datetime, later: timedelta,
) -> None:
    # whether its mark is dated up to CLOCK_SLACK after the decision (its record's time, which
    # its lifetime counts from), or the retry's clock is behind by as much
    named = created_ids(A_KEY, decided_at)[0]

    assert named in created_ids(A_KEY, decided_at + later)


@given(decided_at=MOMENTS, later=st.timedeltas(KEY_LIFETIME, timedelta(days=400)))
def test_a_key_that_starts_afresh_creates_anew(decided_at: datetime, later: timedelta) -> None:
    assert created_ids(A_KEY, decided_at + later)[0] != created_ids(A_KEY, decided_at)[0]


@given(now=MOMENTS)
def test_a_retry_looks_in_at_most_three_places(now: datetime) -> None:
    ids = created_ids(A_KEY, now)

    assert 2 <= len(ids) <= 3 and len(set(ids)) == len(ids)


def test_what_keys_create_is_named_apart_for_each_caller_and_key() -> None:
    at = RECORDED_AT
    named = {created_ids(record_id(caller, key), at)[0]
             for caller in ("cs:1", "cs:2") for key in ("key", "key2")}

    assert len(named) == 4
