"""The outbox's page by status (``GET /v1/outbox?status=``) counts the receivers of now: a
message is ``delivered`` once every one of them had it, ``waiting`` while one has still to have
it (a delivery begun or not), and a message sent again (``ledger webhooks redeliver``) goes to
them only, never to one removed since.

The store is SQLite with an outbox replayed from deposits (``tests.http.outboxes``); the
deliveries are settled by hand, as the deliverer settles them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from api.webhooks import sent_to
from projections import outbox
from tests.http.outboxes import Store, outbox_of

A, B = "http://127.0.0.1:9/a", "http://127.0.0.1:9/b"


@pytest.fixture
def two_deposits(tmp_path: pytest.TempPathFactory) -> Iterator[Store]:
    with outbox_of(tmp_path, [("alice", 100, "PAY-1"), ("alice", 200, "PAY-2")]) as store:
        yield store


def subscribe(store: Store, url: str, *, since: int) -> bool:
    """``ledger webhooks add``, as the outbox has it: sealed with the store's key."""
    return outbox.subscribe(store.view, url, since=since, added_at="2026-01-01T00:00:00Z",
                            key=store.key)


def settle(store: Store, message: str, url: str, status: str) -> None:
    outbox.settle(store.view, message, url, status=status, attempts=1,
                  next_at=time.time() + (3600 if status == outbox.WAITING else 0),
                  delivered_at="2026-01-01T00:00:00Z" if status == outbox.DELIVERED else None,
                  last_error=None if status == outbox.DELIVERED else "answered 500")


def deliver_all(store: Store, url: str) -> None:
    for _ in range(10):  # bounded: two messages, one per round (one customer)
        # as late as every retry is due
        rows = outbox.pending(store.view, url, since=0, now=time.time() + 7200, limit=10)
        if not rows:
            return
        for row in rows:
            settle(store, row["id"], url, outbox.DELIVERED)
    raise AssertionError("the deliveries never settled")


def listed(store: Store, status: str | None, configured: tuple[str, ...] = (A,)) -> list[str]:
    page = outbox.outbox(store.view, status=status, limit=10, after=None, key=store.key,
                         configured=configured)
    return [message["id"] for message in page.items]


def test_a_message_one_receiver_has_not_had_is_waiting_not_delivered(two_deposits: Store
                                                                     ) -> None:
    store = two_deposits
    first, second = listed(store, None)
    # Given receiver A (configured) had both of alice's messages, and receiver B (subscribed)
    # failed the first once (a retry waits), so was never sent the second (a customer's
    # messages go in order)
    subscribe(store, B, since=0)
    deliver_all(store, A)
    (row,) = outbox.pending(store.view, B, since=0, now=time.time(), limit=10)
    settle(store, row["id"], B, outbox.WAITING)

    # Then neither message is delivered: B has had neither; both wait
    assert listed(store, outbox.DELIVERED) == []
    assert listed(store, outbox.WAITING) == [first, second]

    # When B gets them both, both are delivered and none waits
    deliver_all(store, B)
    assert listed(store, outbox.DELIVERED) == [first, second]
    assert listed(store, outbox.WAITING) == []


def test_a_receiver_subscribed_after_a_message_does_not_wait_for_it(two_deposits: Store
                                                                   ) -> None:
    store = two_deposits
    first, second = listed(store, None)
    position = outbox.outbox(store.view, status=None, limit=1, after=None,
                             key=store.key).items[0]["position"]
    subscribe(store, B, since=position)
    deliver_all(store, A)

    assert listed(store, outbox.DELIVERED) == [first]  # B's since is past it
    assert listed(store, outbox.WAITING) == [second]  # B has still to have it


def test_with_no_receiver_no_message_waits_and_none_was_delivered(two_deposits: Store) -> None:
    assert listed(two_deposits, outbox.WAITING, configured=()) == []
    assert listed(two_deposits, outbox.DELIVERED, configured=()) == []


def test_a_redelivery_is_not_promised_to_a_receiver_that_was_removed(two_deposits: Store
                                                                    ) -> None:
    store = two_deposits
    subscribe(store, B, since=0)
    deliver_all(store, B)
    deliver_all(store, A)
    first = listed(store, None)[0]
    assert outbox.unsubscribe(store.view, B)

    # A message sent again goes to A, the receiver of now, only
    assert outbox.redeliver(store.view, first, (A,), key=store.key) == (1, 1)
    assert listed(store, outbox.WAITING) == [first]
    # and with A no longer configured either, to no one: nothing waits for ever
    deliver_all(store, A)
    assert outbox.redeliver(store.view, first, (), key=store.key) == (0, 2)
    assert listed(store, outbox.WAITING, configured=()) == []


def test_subscriptions_are_bounded(two_deposits: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "MAX_SUBSCRIPTIONS", 2)
    store = two_deposits
    assert subscribe(store, A, since=0)
    assert subscribe(store, B, since=0)
    # one already there is said as such, full or not
    assert not subscribe(store, A, since=0)
    with pytest.raises(outbox.TooManySubscriptions, match="2 receivers are subscribed"):
        subscribe(store, "http://127.0.0.1:9/c", since=0)
    assert [row["url"] for row in outbox.subscriptions(store.view)] == [A, B]
    # and room is made by removing one
    assert outbox.unsubscribe(store.view, A)
    assert subscribe(store, "http://127.0.0.1:9/c", since=0)


def test_a_subscription_the_deliverer_never_sends_to_is_no_receiver_of_now(
    two_deposits: Store,
) -> None:
    """One stored before URLs were checked (or by SQL) that fails the check is skipped by the
    deliverer: counted here, every message read waiting for ever while the deliverer's own
    count said none."""
    store = two_deposits
    unusable = "hookuser:pw@mailer.example/hooks"  # no scheme: never sent to
    assert not sent_to(unusable)
    subscribe(store, unusable, since=0)
    deliver_all(store, A)
    page = outbox.outbox(store.view, status=outbox.WAITING, limit=10, after=None,
                         key=store.key, configured=(A,), usable=sent_to)
    assert page.items == []
    done = outbox.outbox(store.view, status=outbox.DELIVERED, limit=10, after=None,
                         key=store.key, configured=(A,), usable=sent_to)
    assert [m["id"] for m in done.items] == listed(store, None)
