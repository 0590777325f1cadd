"""Idempotency keys, on both stores (API.md, Conventions).

Same caller, key and request within 24 h: the first response again, replayed, and no second
effect. Same key with another request: IdempotencyKeyReused. Keys of different callers are
independent. After 24 h a key starts afresh.

A partial failure credit is the command these tests retry: it has no natural key, so only the
idempotency key stands between a retry and a second credit.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from ledger.application import CaseApplication, LedgerApplication, Outcome
from ledger.clock import utc_now
from ledger.commands import OpenReturnCase
from ledger.errors import CaseRefused, IdempotencyKeyReused, NotReady
from ledger.idempotency import KEY_LIFETIME, record_id
from ledger.identity import Actor
from ledger.pipeline import KeyGuard
from ledger.settings import StoreSettings
from projections.loopwriter import writing_on_loop
from projections.store import open_application
from tests.app.conftest import last_position, open_funded
from tests.audit.conftest import Intruder


class Clock:
    """The application's clock: real time shifted by ``offset``, or pinned ``at`` a moment."""

    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at if self.at is not None else utc_now() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def shop(settings: StoreSettings, clock: Clock, system: Actor) -> Iterator[LedgerApplication]:
    """Alice deposited 2,000 and paid 1,000 for ORD-1, on an application that reads ``clock``."""
    app = open_application(settings, clock=clock)
    open_funded(app, system, amount=2_000)
    app.purchase("alice", "ORD-1", 1_000, actor=system)
    try:
        yield app
    finally:
        app.close()


def credit(app: LedgerApplication, actor: Actor, key: str, amount: int = 100) -> Outcome:
    return app.fail_purchase(
        "alice", "ORD-1", amount, "one item failed", actor=actor, idempotency_key=key
    )


def credited_back(app: LedgerApplication) -> int:
    return app.account("alice").orders["ORD-1"][1]


def delete_record(settings: StoreSettings, caller: Actor, key: str) -> None:
    """An intruder's DELETE of a key's record, behind the service's back."""
    Intruder(settings).run("DELETE FROM ledger_keys WHERE id = %s",
                           (record_id(caller.person, key),), unguarded=False)


def test_a_retry_with_the_same_key_answers_the_first_response_and_takes_effect_once(
    shop: LedgerApplication, cs: Actor,
) -> None:
    first = credit(shop, cs, "key-1")
    written = last_position(shop)

    retry = credit(shop, cs, "key-1")

    assert first.replayed is False
    assert retry.replayed is True
    assert (retry.outcome, retry.body, retry.position) == (
        first.outcome, first.body, first.position,
    )
    assert credited_back(shop) == 100
    assert last_position(shop) == written


def test_the_first_response_is_answered_again_even_after_the_account_moved_on(
    shop: LedgerApplication, system: Actor, cs: Actor,
) -> None:
    first = credit(shop, cs, "key-1")
    shop.deposit("alice", 777, "PAY-LATER", actor=system)

    retry = credit(shop, cs, "key-1")

    assert retry.body == first.body
    assert retry.body["account"]["posted"] == 1_100


def test_every_use_case_honours_a_key(
    shop: LedgerApplication, system: Actor, cs: Actor, finance: Actor, payer: Actor,
) -> None:
    def twice(command: Callable[[], Outcome]) -> Outcome:
        first, retry = command(), command()
        assert retry.replayed and not first.replayed
        assert (retry.body, retry.position) == (first.body, first.position)
        return first

    twice(lambda: shop.open_account("bob", "EUR", actor=system, idempotency_key="k-open"))
    twice(lambda: shop.deposit("bob", 500, "PAY-B", actor=system, idempotency_key="k-dep"))
    twice(lambda: shop.purchase("bob", "ORD-B", 200, actor=system, idempotency_key="k-buy"))
    requested = twice(
        lambda: shop.request_refund("bob", "ORD-B", 50, "r", actor=cs, idempotency_key="k-req")
    )
    rid = UUID(requested.body["id"])
    twice(lambda: shop.approve_refund(rid, "ok", actor=finance, idempotency_key="k-approve"))
    twice(lambda: shop.pay_refund(rid, "WIRE-1", actor=payer, idempotency_key="k-pay"))
    other = shop.request_refund("bob", "PAY-B", 10, "r", actor=cs).body["id"]
    twice(lambda: shop.reject_refund(UUID(other), "no", actor=finance, idempotency_key="k-rej"))
    third = shop.request_refund("bob", "PAY-B", 10, "r", actor=cs).body["id"]
    twice(lambda: shop.cancel_refund(UUID(third), "no", actor=cs, idempotency_key="k-cancel"))

    bob = shop.account("bob")
    assert (bob.posted, bob.held, bob.available) == (250, 0, 250)


def test_a_key_reused_for_another_request_is_refused_and_changes_nothing(
    shop: LedgerApplication, system: Actor, cs: Actor,
) -> None:
    credit(shop, cs, "key-1", amount=100)
    written = last_position(shop)

    with pytest.raises(IdempotencyKeyReused):
        credit(shop, cs, "key-1", amount=101)
    with pytest.raises(IdempotencyKeyReused):
        shop.deposit("alice", 100, "PAY-9", actor=cs, idempotency_key="key-1")

    assert credited_back(shop) == 100
    assert last_position(shop) == written


def test_the_same_key_from_two_callers_is_two_requests(
    shop: LedgerApplication, cs: Actor, system: Actor,
) -> None:
    mine = credit(shop, cs, "shared-key")
    theirs = credit(shop, system, "shared-key")

    assert not mine.replayed and not theirs.replayed
    assert theirs.position > mine.position
    assert credited_back(shop) == 200


def test_a_retry_sent_with_a_rotated_token_is_the_same_request(
    shop: LedgerApplication, cs: Actor,
) -> None:
    # Given a request made with one customer-service token
    first = credit(shop, cs, "key-1")

    # When the client retries it after its token was rotated (same role, another token)
    rotated = Actor("cs:99999999", "req-after-rotation")
    retry = credit(shop, rotated, "key-1")

    # Then the key is the caller's, not the token's: the first answer, and no second credit
    assert retry.replayed and retry.position == first.position
    assert credited_back(shop) == 100


T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
JUST_UNDER = KEY_LIFETIME - timedelta(microseconds=1)


def test_a_key_is_honoured_until_just_before_24_hours_on_the_shop_s_clock(
    shop: LedgerApplication, clock: Clock, cs: Actor,
) -> None:
    clock.at = T0
    first = credit(shop, cs, "key-1")
    assert shop.keys.get(record_id(cs.role, "key-1")).recorded_at == T0  # type: ignore[union-attr]

    clock.at = T0 + JUST_UNDER
    retry = credit(shop, cs, "key-1")

    assert retry.replayed and retry.position == first.position
    assert credited_back(shop) == 100


def test_at_24_hours_a_key_starts_afresh(
    shop: LedgerApplication, clock: Clock, cs: Actor,
) -> None:
    clock.at = T0
    credit(shop, cs, "key-1", amount=100)

    clock.at = T0 + KEY_LIFETIME
    later = credit(shop, cs, "key-1", amount=250)

    assert later.replayed is False
    assert later.outcome == "created"
    assert credited_back(shop) == 350


def test_a_key_renewed_after_24_hours_is_honoured_for_24_hours_from_its_renewal(
    shop: LedgerApplication, clock: Clock, cs: Actor,
) -> None:
    # Given a key used once, and used again for a new request 25 hours later
    clock.at = T0
    credit(shop, cs, "key-1", amount=100)
    renewed_at = T0 + timedelta(hours=25)
    clock.at = renewed_at
    renewed = credit(shop, cs, "key-1", amount=250)

    # When the client retries the renewed request just short of 24 h after the renewal
    clock.at = renewed_at + JUST_UNDER
    retry = credit(shop, cs, "key-1", amount=250)

    # Then it is answered from the renewal and credits nothing more
    assert retry.replayed is True
    assert retry.position == renewed.position
    assert credited_back(shop) == 350

    # And at 24 h after the renewal the key starts afresh once more
    clock.at = renewed_at + KEY_LIFETIME
    assert credit(shop, cs, "key-1", amount=50).replayed is False
    assert credited_back(shop) == 400


def test_keys_past_their_lifetime_are_pruned_and_live_ones_kept(
    shop: LedgerApplication, clock: Clock, cs: Actor,
) -> None:
    clock.at = T0
    credit(shop, cs, "old-key")
    clock.at = T0 + timedelta(hours=1)
    credit(shop, cs, "new-key")

    assert shop.keys.prune(up_to=T0 + timedelta(minutes=30)) == 1

    assert shop.keys.get(record_id(cs.role, "old-key")) is None
    assert shop.keys.get(record_id(cs.role, "new-key")) is not None


def test_keys_past_their_lifetime_are_pruned_oldest_first_a_bounded_number_at_a_time(
    shop: LedgerApplication, clock: Clock, cs: Actor,
) -> None:
    for minute, key in enumerate(("first", "second", "third")):
        clock.at = T0 + timedelta(minutes=minute)
        credit(shop, cs, key)
    clock.at = T0 + KEY_LIFETIME + timedelta(hours=1)  # all three past their lifetime

    assert shop.prune_keys(limit=2) == 2
    assert shop.keys.get(record_id(cs.role, "first")) is None
    assert shop.keys.get(record_id(cs.role, "second")) is None
    assert shop.keys.get(record_id(cs.role, "third")) is not None
    assert shop.prune_keys(limit=2) == 1
    assert shop.prune_keys(limit=2) == 0


def test_concurrent_duplicates_with_one_key_take_effect_once(
    shop: LedgerApplication, cs: Actor,
) -> None:
    start = threading.Barrier(8)

    def duplicate(_: int) -> Outcome:
        start.wait(timeout=10)
        return credit(shop, cs, "key-burst")

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(duplicate, range(8)))

    assert sum(not o.replayed for o in outcomes) == 1
    assert len({(o.position, str(o.body)) for o in outcomes}) == 1
    assert credited_back(shop) == 100


def test_duplicates_with_one_key_sent_to_two_processes_take_effect_once(
    shop: LedgerApplication, settings: StoreSettings, clock: Clock, cs: Actor,
) -> None:
    second = open_application(settings, clock=clock)
    start = threading.Barrier(8)

    def duplicate(n: int) -> Outcome:
        start.wait(timeout=10)
        return credit(shop if n % 2 else second, cs, "key-burst")

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(duplicate, range(8)))
    finally:
        second.close()

    assert sum(not o.replayed for o in outcomes) == 1
    assert len({o.position for o in outcomes}) == 1
    assert credited_back(shop) == 100


@pytest.mark.parametrize("request_", ["a credit refused the second time",
                                      "a deposit met the second time as a duplicate",
                                      "a partial credit its key's mark stops the second time"])
def test_a_first_try_another_process_commits_after_the_retry_looked_its_key_up_is_answered(
    shop: LedgerApplication, settings: StoreSettings, clock: Clock, cs: Actor, system: Actor,
    monkeypatch: pytest.MonkeyPatch, request_: str,
) -> None:
    def send(app: LedgerApplication) -> Outcome:
        if request_.startswith("a credit"):  # all of ORD-1's 1,000: a second one is refused
            return credit(app, cs, "key-late", amount=1_000)
        if request_.startswith("a partial"):  # a second would be made: only its mark says no
            return credit(app, cs, "key-late", amount=100)
        return app.deposit("alice", 500, "PAY-9", actor=system, idempotency_key="key-late")

    second = open_application(settings, clock=clock)
    try:
        # Given a retry in this process that must decide again from the store (another
        # process moved the account it holds), and its first try in that other process,
        # committed just after the retry looked its key up and found nothing
        second.deposit("alice", 1, "PAY-ELSEWHERE", actor=system)
        first: list[Outcome] = []
        look = KeyGuard.replay

        def first_try_lands_after_the_look(guard: KeyGuard) -> Outcome | None:
            found = look(guard)
            if not first:
                first.append(send(second))
            return found

        monkeypatch.setattr(KeyGuard, "replay", first_try_lands_after_the_look)

        # When the retry, decided again, meets what its first try did (a refusal, a duplicate,
    # the key's mark on the account)
        retry = send(shop)
    finally:
        second.close()

    # Then it answers the first try's response, replayed, and nothing took effect twice
    assert first and not first[0].replayed
    assert retry.replayed
    assert (retry.outcome, retry.body, retry.position) == (
        first[0].outcome, first[0].body, first[0].position,
    )
    credited = {"a credit": 1_000, "a deposit": 0, "a partial": 100}[" ".join(request_.split()[:2])]
    assert credited_back(shop) == credited
    assert shop.account("alice").posted == 2_000 - 1_000 + 1 + (credited or 500)


def test_a_key_whose_first_use_met_a_known_deposit_answers_that_response_again(
    shop: LedgerApplication, system: Actor,
) -> None:
    # Given a deposit, and a retry of it (under a new key) that met it as a natural duplicate
    shop.deposit("alice", 500, "PAY-7", actor=system)
    first = shop.deposit("alice", 500, "PAY-7", actor=system, idempotency_key="key-7")
    assert first.outcome == "existing"
    shop.purchase("alice", "ORD-2", 100, actor=system)

    # When the same request comes again with the same key
    retry = shop.deposit("alice", 500, "PAY-7", actor=system, idempotency_key="key-7")

    # Then it is the first response again, replayed
    assert retry.replayed is True
    assert (retry.outcome, retry.body, retry.position) == (
        first.outcome, first.body, first.position,
    )


def test_a_key_whose_first_use_met_a_known_deposit_cannot_be_used_for_another_request(
    shop: LedgerApplication, system: Actor,
) -> None:
    shop.deposit("alice", 500, "PAY-7", actor=system)
    shop.deposit("alice", 500, "PAY-7", actor=system, idempotency_key="key-7")

    with pytest.raises(IdempotencyKeyReused):
        shop.deposit("alice", 900, "PAY-8", actor=system, idempotency_key="key-7")

    assert shop.account("alice").posted == 2_000 - 1_000 + 500


def test_the_ledger_prunes_the_keys_whose_lifetime_has_passed_on_the_shop_s_clock(
    shop: LedgerApplication, clock: Clock, cs: Actor,
) -> None:
    clock.at = T0
    credit(shop, cs, "day-one")
    clock.at = T0 + KEY_LIFETIME
    credit(shop, cs, "day-two")

    assert shop.prune_keys() == 1

    assert shop.keys.get(record_id(cs.role, "day-one")) is None
    assert shop.keys.get(record_id(cs.role, "day-two")) is not None


# -- records written behind the service's back ----------------------------------------------------


def test_a_key_record_inserted_by_sql_is_refused_never_answered(
    shop: LedgerApplication, settings: StoreSettings, cs: Actor, caplog: pytest.LogCaptureFixture,
) -> None:
    # Given an intruder's copy of a real record (key-1) for a key the caller has not used yet
    credit(shop, cs, "key-1")
    forged = record_id(cs.person, "key-2")
    Intruder(settings).run(
        "INSERT INTO ledger_keys (id, caller, fingerprint, outcome, body, position, recorded_at,"
        " seal) SELECT %s, caller, fingerprint, outcome, body, position, recorded_at, seal"
        " FROM ledger_keys WHERE id = %s",
        (forged, record_id(cs.person, "key-1")), unguarded=False,
    )
    written = last_position(shop)

    # When the caller sends a credit with that key
    with pytest.raises(NotReady, match="not written by the service"):
        credit(shop, cs, "key-2")

    # Then it is neither answered with the forged record nor carried out, and the log says why
    assert credited_back(shop) == 100
    assert last_position(shop) == written
    assert f"the record of idempotency key {forged} has no valid seal" in caplog.text


def test_a_key_record_changed_by_sql_is_refused_and_credits_nothing_twice(
    shop: LedgerApplication, settings: StoreSettings, cs: Actor,
) -> None:
    # Given a credit under a key, whose record an intruder then changes: the position it names
    first = credit(shop, cs, "key-1")
    Intruder(settings).run(
        "UPDATE ledger_keys SET position = position - 1 WHERE id = %s",
        (record_id(cs.person, "key-1"),), unguarded=False,
    )

    # When the caller retries
    with pytest.raises(NotReady):
        credit(shop, cs, "key-1")

    # Then the credit is not made again (it has no natural key: only the record stood between)
    assert credited_back(shop) == 100
    assert first.position == last_position(shop)


@pytest.mark.parametrize("restarted", [False, True], ids=["same-process", "restarted"])
def test_a_key_record_deleted_by_sql_is_refused_and_credits_nothing_twice(
    shop: LedgerApplication, settings: StoreSettings, clock: Clock, cs: Actor, restarted: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a credit under a key, whose record an intruder then deletes (the log keeps the
    # credit, sealed: the key's mark with it)
    credit(shop, cs, "key-1")
    written = last_position(shop)
    delete_record(settings, cs, "key-1")
    app = open_application(settings, clock=clock) if restarted else shop
    try:
        # When the caller retries, to this process (its account cached) or a restarted one
        with pytest.raises(NotReady, match="deleted behind the service's back"):
            credit(app, cs, "key-1")

        # Then the credit is not made again, and the log says why
        assert credited_back(app) == 100
        assert last_position(app) == written
        assert (f"the record of idempotency key {record_id(cs.person, 'key-1')} is gone"
                in caplog.text)
        # while another key of the caller's is carried out as ever
        assert credit(app, cs, "key-2").replayed is False
        assert credited_back(app) == 200
    finally:
        if restarted:
            app.close()


def test_an_older_sealed_record_of_the_key_put_back_lets_no_retry_take_effect_twice(
    shop: LedgerApplication, settings: StoreSettings, clock: Clock, cs: Actor,
) -> None:
    # Given a key used on the first day, and afresh a day later; the intruder saved the first
    # day's record (sealed by the service), deletes the second's and puts the first back
    columns = "id, caller, fingerprint, outcome, body, position, recorded_at, seal"
    key = record_id(cs.person, "key-1")
    intruder = Intruder(settings)
    clock.at = T0
    credit(shop, cs, "key-1")
    (saved,) = intruder.select(f"SELECT {columns} FROM ledger_keys WHERE id = %s", (key,))
    clock.at = T0 + KEY_LIFETIME + timedelta(hours=1)
    credit(shop, cs, "key-1")
    intruder.run("DELETE FROM ledger_keys WHERE id = %s", (key,), unguarded=False)
    intruder.run(f"INSERT INTO ledger_keys ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                 tuple(saved), unguarded=False)

    # When the second day's request is retried, its record seemingly expired
    clock.at += timedelta(minutes=5)
    with pytest.raises(NotReady, match="deleted behind the service's back"):
        credit(shop, cs, "key-1")

    # Then it is not carried out again: the account holds the second day's mark
    assert credited_back(shop) == 200


def test_a_deleted_key_record_starts_afresh_once_its_lifetime_is_over(
    shop: LedgerApplication, settings: StoreSettings, clock: Clock, cs: Actor,
) -> None:
    # Given a credit under a key on the first day, whose record an intruder deletes
    clock.at = T0
    credit(shop, cs, "key-1")
    delete_record(settings, cs, "key-1")

    # Then the key is refused until the last moment of its lifetime
    clock.at = T0 + KEY_LIFETIME - timedelta(microseconds=1)
    with pytest.raises(NotReady):
        credit(shop, cs, "key-1")
    assert credited_back(shop) == 100

    # and once its 24 hours are over it starts afresh, as a pruned key does
    clock.at = T0 + KEY_LIFETIME
    assert credit(shop, cs, "key-1").replayed is False
    assert credited_back(shop) == 200


def test_a_key_renewed_after_its_lifetime_is_marked_anew(
    shop: LedgerApplication, settings: StoreSettings, clock: Clock, cs: Actor,
) -> None:
    # Given a key used on the first day, and again (afresh) once its lifetime was over
    clock.at = T0
    credit(shop, cs, "key-1")
    clock.at = T0 + KEY_LIFETIME
    credit(shop, cs, "key-1")
    assert credited_back(shop) == 200

    # When the renewed record is deleted, a retry within the new lifetime is still refused
    delete_record(settings, cs, "key-1")
    clock.at = T0 + KEY_LIFETIME + timedelta(hours=1)
    with pytest.raises(NotReady, match="deleted behind the service's back"):
        credit(shop, cs, "key-1")
    assert credited_back(shop) == 200


def test_records_left_unsealed_by_a_dropped_seal_column_are_refused_until_pruned(
    settings: StoreSettings, clock: Clock, cs: Actor, system: Actor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a credit under key-1, then an intruder who drops the seal column and inserts a
    # stored answer for key-2, a key the caller will retry (a copy of key-1's: same request)
    clock.at = T0
    app = open_application(settings, clock=clock)
    try:
        open_funded(app, system, amount=2_000)
        app.purchase("alice", "ORD-1", 1_000, actor=system)
        credit(app, cs, "key-1")
    finally:
        app.close()
    forged = record_id(cs.person, "key-2")
    intruder = Intruder(settings)
    intruder.run("ALTER TABLE ledger_keys DROP COLUMN seal", unguarded=False)
    intruder.run(
        "INSERT INTO ledger_keys (id, caller, fingerprint, outcome, body, position, recorded_at)"
        " SELECT %s, caller, fingerprint, outcome, body, position, recorded_at"
        " FROM ledger_keys WHERE id = %s",
        (forged, record_id(cs.person, "key-1")), unguarded=False,
    )

    # When the tables' owner starts the service again (it adds the column back)
    restarted = open_application(settings, clock=clock)
    try:
        written = last_position(restarted)
        # Then no unsealed record is trusted: the forged answer is not replayed, and the
        # service's own earlier record neither replays nor credits again
        with pytest.raises(NotReady, match="not written by the service"):
            credit(restarted, cs, "key-2")
        with pytest.raises(NotReady, match="not written by the service"):
            credit(restarted, cs, "key-1")
        assert credited_back(restarted) == 100
        assert last_position(restarted) == written
        assert f"the record of idempotency key {forged} has no valid seal" in caplog.text

        # And both age out with the normal pruning, after which the key starts afresh
        clock.at = T0 + KEY_LIFETIME
        assert restarted.prune_keys() == 2
        assert credit(restarted, cs, "key-2").replayed is False
        assert credited_back(restarted) == 200
    finally:
        restarted.close()


# -- a case opened under a key: opening changes no account, so the case is named by the key ----


CASE = CaseApplication(  # Alice's application for a case on ORD-1, damaged goods
    "alice", "ORD-1", "damaged", T0.date() - timedelta(days=5),
    [{"sku": "SKU-7", "description": "desk lamp", "quantity": 1}],
    ["photo://goods-1"], ["photo://box-1"], False, False, False, True,
)


def open_case(app: LedgerApplication, actor: Actor, key: str | None) -> Outcome:
    return app.open_return_case(CASE, actor=actor, idempotency_key=key)


@pytest.mark.parametrize("restarted", [False, True], ids=["same-process", "restarted"])
def test_a_case_retried_after_its_key_record_is_deleted_is_not_opened_again(
    shop: LedgerApplication, settings: StoreSettings, clock: Clock, cs: Actor, restarted: bool,
) -> None:
    # Given a case opened under a key (its retry answered by the key's record), and a credit
    # under another key, whose records an intruder then deletes
    clock.at = T0
    opened = open_case(shop, cs, "case-key")
    assert open_case(shop, cs, "case-key").body == opened.body
    credit(shop, cs, "credit-key")
    written = last_position(shop)
    delete_record(settings, cs, "case-key")
    delete_record(settings, cs, "credit-key")
    app = open_application(settings, clock=clock) if restarted else shop
    try:
        # When the caller retries both, the case just before its key's 24 hours are over
        clock.at = T0 + JUST_UNDER
        with pytest.raises(NotReady) as case_refused:
            open_case(app, cs, "case-key")
        with pytest.raises(NotReady) as credit_refused:
            credit(app, cs, "credit-key")

        # Then no second case is opened: the retry is answered as the credit's is
        assert "deleted behind the service's back" in case_refused.value.detail
        assert case_refused.value.detail == credit_refused.value.detail
        assert last_position(app) == written
        assert app.return_case(UUID(opened.body["id"])).state == "opened"
    finally:
        if restarted:
            app.close()


def test_a_refused_case_retried_after_its_key_record_is_deleted_is_not_recorded_again(
    shop: LedgerApplication, settings: StoreSettings, clock: Clock, cs: Actor,
) -> None:
    # Given a case the policy refused (opened media), recorded under a key whose record an
    # intruder then deletes
    clock.at = T0
    media = replace(CASE, opened_media=True)
    with pytest.raises(CaseRefused):
        shop.open_return_case(media, actor=cs, idempotency_key="case-key")
    written = last_position(shop)
    delete_record(settings, cs, "case-key")

    # When the caller retries it, then no second refused case is recorded
    with pytest.raises(NotReady, match="deleted behind the service's back"):
        shop.open_return_case(media, actor=cs, idempotency_key="case-key")
    assert last_position(shop) == written


def test_a_case_key_whose_record_is_deleted_opens_a_new_case_once_its_lifetime_is_over(
    shop: LedgerApplication, settings: StoreSettings, clock: Clock, cs: Actor,
) -> None:
    # Given a case opened under a key on the first day, whose record an intruder deletes
    clock.at = T0
    first = open_case(shop, cs, "case-key")
    delete_record(settings, cs, "case-key")

    # When the key is used again once its 24 hours are over, it starts afresh: a new case
    clock.at = T0 + KEY_LIFETIME
    renewed = open_case(shop, cs, "case-key")
    assert renewed.replayed is False and renewed.body["id"] != first.body["id"]

    # Then the renewed case is marked anew: its retry after its record is deleted opens none
    delete_record(settings, cs, "case-key")
    written = last_position(shop)
    clock.at = T0 + KEY_LIFETIME + JUST_UNDER
    with pytest.raises(NotReady, match="deleted behind the service's back"):
        open_case(shop, cs, "case-key")
    assert last_position(shop) == written


def test_without_a_key_each_open_opens_a_case_of_its_own(
    shop: LedgerApplication, clock: Clock, cs: Actor,
) -> None:
    clock.at = T0
    before = last_position(shop)

    first, second = open_case(shop, cs, None), open_case(shop, cs, None)

    assert first.body["id"] != second.body["id"]
    assert not first.replayed and not second.replayed
    assert last_position(shop) == before + 2


def test_the_same_case_key_from_two_callers_opens_two_cases(
    shop: LedgerApplication, clock: Clock, cs: Actor, system: Actor,
) -> None:
    clock.at = T0
    mine, theirs = open_case(shop, cs, "case-key"), open_case(shop, system, "case-key")

    assert not mine.replayed and not theirs.replayed
    assert mine.body["id"] != theirs.body["id"]


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
async def test_a_case_retried_on_the_event_loop_after_its_record_is_deleted_opens_none(
    shop: LedgerApplication, settings: StoreSettings, clock: Clock, cs: Actor,
) -> None:
    # Given a case opened under a key, whose record an intruder deletes; Alice's account is
    # held by this process, so a command on it may be decided on the event loop
    clock.at = T0
    loop = asyncio.get_running_loop()
    opened = await loop.run_in_executor(None, functools.partial(open_case, shop, cs, "case-key"))
    delete_record(settings, cs, "case-key")
    written = last_position(shop)
    command = OpenReturnCase.of(CASE)
    retry = functools.partial(shop.execute, command, actor=cs, idempotency_key="case-key")

    async with writing_on_loop(shop):
        # When the caller retries it, to a server that writes on its event loop
        on_loop = await shop.execute_on_loop(command, actor=cs, idempotency_key="case-key")

        # Then the loop opens no case (the key's cases are looked for in the store, on a
        # thread), and the thread refuses it as the key's
        assert on_loop is None
        assert last_position(shop) == written
        with pytest.raises(NotReady, match="deleted behind the service's back"):
            await loop.run_in_executor(None, retry)
    assert last_position(shop) == written
    assert shop.return_case(UUID(opened.body["id"])).state == "opened"
