"""What a caller's Idempotency-Key did: one record per caller and key, honoured for 24 hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledger.idempotency import KEY_LIFETIME, KeyRecord, fingerprint, record_id

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
