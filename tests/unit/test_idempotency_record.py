"""What a caller's Idempotency-Key did: one record per caller and key, honoured for 24 hours."""

from __future__ import annotations

from datetime import timedelta

from ledger.idempotency import KEY_LIFETIME, IdempotencyRecord, fingerprint, record_id

BODY = {"account": {"username": "alice", "posted": 100}}


def recorded(caller: str = "system:0a1b2c3d", key: str = "k-1") -> IdempotencyRecord:
    return IdempotencyRecord.record(
        id=record_id(caller, key), caller=caller, fingerprint=fingerprint("deposit", {"a": 1}),
        outcome="created", body=BODY,
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


def test_a_recorded_key_remembers_its_caller_request_and_answer() -> None:
    record = recorded()

    assert record.caller == "system:0a1b2c3d"
    assert record.fingerprint == fingerprint("deposit", {"a": 1})
    assert (record.outcome, record.body) == ("created", BODY)
    assert record.recorded_at == record.created_on


def test_a_recorded_key_is_live_until_24_hours_have_passed() -> None:
    record = recorded()
    at = record.recorded_at

    assert record.is_live(at)
    assert record.is_live(at + KEY_LIFETIME - timedelta(microseconds=1))
    assert not record.is_live(at + KEY_LIFETIME)
    assert not record.is_live(at + timedelta(days=30))


def test_a_renewed_key_remembers_the_new_request_and_answer() -> None:
    record = recorded()

    record.renew("other-fingerprint", "ok", {"new": True})

    assert (record.fingerprint, record.outcome, record.body) == ("other-fingerprint", "ok",
                                                                 {"new": True})
    assert record.version == 2


def test_a_key_renewed_after_its_lifetime_is_honoured_for_24_hours_from_the_renewal() -> None:
    # Given a key recorded on one day and renewed 25 hours later, as stored
    (first,) = recorded().collect_events()
    renewed_at = first.timestamp + timedelta(hours=25)
    renewal = IdempotencyRecord.Renewed(
        originator_id=first.originator_id, originator_version=2, timestamp=renewed_at,
        fingerprint="second", outcome="created", body={"second": True},
    )

    # When the record is rebuilt from those events
    record = renewal.mutate(first.mutate(None))

    # Then the key counts from its renewal: an hour later it is still live
    assert record.recorded_at == renewed_at
    assert record.is_live(renewed_at + timedelta(hours=1))
