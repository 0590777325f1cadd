"""The deliverer against receivers that misbehave on purpose (raw sockets on 127.0.0.1): each
stays bounded however many customers wait, no answer but a 2xx counts, a redirect is never
followed, and a stop leaves no delivery failing against a closed session.

The store is SQLite (what is checked is the deliverer's, not the store's), its outbox replayed
from customers' deposits; each test has a receiver (a URL) of its own. The tests drive the
deliverer's rounds themselves, or wait on its state with a bound, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from api.webhooks import (
    DOWN_AFTER_FAILURES,
    MAX_IN_FLIGHT_PER_SUBSCRIBER,
    Deliverer,
    WebhookSettings,
)
from projections import outbox
from tests.http.outboxes import Store, outbox_of

# More customers than deliveries may be in flight to one receiver.
CUSTOMERS = MAX_IN_FLIGHT_PER_SUBSCRIBER + 44
CONCURRENCY = 4
TIMEOUT_S = 0.5
WAIT_S = 30.0

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A store whose outbox holds a message for each of ``CUSTOMERS`` customers' deposits."""
    with outbox_of(tmp_path_factory.mktemp("webhook-bounds"),
                   [(f"cust{n:04d}", 100, "PAY-1") for n in range(CUSTOMERS)]) as store:
        yield store


@dataclass
class Receiver:
    """A raw-socket receiver: what each request was (head, body), how many connections are
    open now."""

    answer: Handler | None = None
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    open: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            self.requests.append((head, await reader.readexactly(length)))
            if self.answer is not None:
                await self.answer(reader, writer)
            else:  # accepts, reads, never answers
                await asyncio.Event().wait()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open -= 1
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    got = Receiver()
    server = await asyncio.start_server(got.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield got, f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()


def answering(text: bytes) -> Handler:
    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(text)
        await writer.drain()

    return answer


def deliverer(store: Store, *urls: str, timeout_s: float = TIMEOUT_S,
              backoff_s: float = 0.01) -> Deliverer:
    hooks = WebhookSettings(urls=urls, secret="whsec-bounds", timeout_s=timeout_s,
                            concurrency=CONCURRENCY, backoff_base_s=backoff_s,
                            backoff_max_s=backoff_s)
    return Deliverer(store.settings, hooks, lambda: True,
                     SimpleNamespace(registry=CollectorRegistry()), store.key)


def deliveries(store: Store, url: str) -> list[dict[str, Any]]:
    return store.view.query("SELECT status, attempts, last_error FROM ob_deliveries"
                            " WHERE subscriber = %(s)s", {"s": url})


async def until(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {WAIT_S:g} s: {what}")
        await asyncio.sleep(0.02)


async def test_a_receiver_that_never_answers_holds_a_bounded_number_of_deliveries(
    filled: Store, receiver: tuple[Receiver, str],
) -> None:
    got, url = receiver
    sender = deliverer(filled, url)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        try:
            # given every customer waiting and a receiver that answers none of them
            for _ in range(CUSTOMERS // 100 + 3):  # more rounds than it takes to see them all
                await sender.round(session)
            # then no more deliveries are begun than the bound, and posts are the concurrency
            assert sender.in_flight(url) == MAX_IN_FLIGHT_PER_SUBSCRIBER
            await until(lambda: got.open == CONCURRENCY, "every post slot taken")
            # when it answers again, every customer gets their message in a few rounds
            got.answer = answering(b"HTTP/1.1 204 No Content\r\n\r\n")

            async def delivered() -> int:
                await sender.round(session)
                return sum(row["status"] == outbox.DELIVERED
                           for row in deliveries(filled, url))

            deadline = time.monotonic() + WAIT_S
            while await delivered() < CUSTOMERS:
                assert time.monotonic() < deadline, "not every customer was delivered to"
                await asyncio.sleep(0.02)
        finally:
            await sender.stop()


async def test_a_receiver_that_is_down_is_looked_for_again_only_when_its_deliveries_are_due(
    filled: Store, receiver: tuple[Receiver, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding each customer's first waiting message reads every message the receiver has
    not had: with a day's backlog, over a second of the database's time. A receiver that is
    down (its deliveries failing in a row) is not looked for again at every round (five a
    second), only once one of its failed deliveries is due again."""
    got, url = receiver
    got.answer = answering(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    looks: list[str] = []
    pending = outbox.pending

    def looked(view: Any, subscriber: str, **kwargs: Any) -> list[dict[str, Any]]:
        looks.append(subscriber)
        return pending(view, subscriber, **kwargs)

    monkeypatch.setattr(outbox, "pending", looked)
    # An hour's back-off: no failed delivery is due again during the test
    sender = deliverer(filled, url, backoff_s=3600.0)
    failed = sender.attempts.labels("failed")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as session:
        try:
            # Given a receiver whose deliveries failed, enough of them in a row
            await sender.round(session)
            await until(lambda: failed._value.get() >= DOWN_AFTER_FAILURES
                        and sender.in_flight(url) == 0, "the first deliveries failed")
            posted = len(got.requests)
            # When rounds go on
            looked_before = looks.count(url)
            for _ in range(20):
                await sender.round(session)
            # Then its messages are not looked for (nor posted) until one of them is due
            assert looks.count(url) == looked_before
            assert len(got.requests) == posted
            assert sender.resting(url, time.time())
            assert not sender.resting(url, time.time() + 3601.0)
        finally:
            await sender.stop()


def test_a_receiver_taken_for_down_rests_until_the_soonest_of_its_failed_deliveries(
    filled: Store,
) -> None:
    """Not until the back-off of whichever failure came third: two new customers' first
    messages due again within a second are not held back by a third customer's message that
    has failed for a while (due in five minutes)."""
    url = "http://127.0.0.1:9/down"
    sender = deliverer(filled, url)
    now = time.time()
    for message, due in (("m-new-1", now + 1.0), ("m-new-2", now + 1.5),
                         ("m-old", now + 300.0)):
        sender._heard(url, message, failed=True, next_at=due)
    assert sender.resting(url, now)
    assert not sender.resting(url, now + 1.1)  # the soonest is due: looked for again
    # a failed delivery parked for good is never due again: it holds no rest short
    sender._heard(url, "m-new-1", failed=True, next_at=None)
    sender._heard(url, "m-new-2", failed=True, next_at=None)
    assert sender.resting(url, now + 200.0)
    assert not sender.resting(url, now + 300.1)
    # and the first delivery that lands ends the rest
    sender._heard(url, "m-other", failed=False, next_at=None)
    assert not sender.resting(url, now)


async def test_a_receiver_that_never_answers_holds_back_no_other_receiver(
    filled: Store, receiver: tuple[Receiver, str],
) -> None:
    hanging, hanging_url = receiver
    healthy = Receiver(answer=answering(b"HTTP/1.1 204 No Content\r\n\r\n"))
    server = await asyncio.start_server(healthy.handle, "127.0.0.1", 0)
    healthy_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    # A timeout longer than the test waits: the hanging receiver's posts stay open throughout.
    sender = deliverer(filled, hanging_url, healthy_url, timeout_s=10 * WAIT_S)
    sender.start()
    try:
        # Given a receiver holding every post it was sent, unanswered
        await until(lambda: hanging.open == CONCURRENCY, "the hanging receiver's posts taken")
        # Then the other receiver gets every customer's message meanwhile
        await until(lambda: sum(row["status"] == outbox.DELIVERED
                                for row in deliveries(filled, healthy_url)) == CUSTOMERS,
                    "every message delivered to the receiver that answers")
        assert hanging.open == CONCURRENCY  # still held: it was never its turn that freed one
    finally:
        await sender.stop()
        server.close()


async def test_stopping_while_deliveries_wait_logs_no_failed_delivery(
    filled: Store, receiver: tuple[Receiver, str], caplog: pytest.LogCaptureFixture,
) -> None:
    _, url = receiver
    sender = deliverer(filled, url)
    sender.start()
    await until(lambda: sender.in_flight(url) > CONCURRENCY, "deliveries waiting for a slot")
    with caplog.at_level(logging.WARNING, logger="api.webhooks"):
        await sender.stop()
    assert [r.getMessage() for r in caplog.records] == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_an_internal_address_is_not_followed_nor_counted_delivered(
    filled: Store, receiver: tuple[Receiver, str], status: int,
) -> None:
    got, url = receiver
    internal = Receiver(answer=answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    server = await asyncio.start_server(internal.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got.answer = answering(f"HTTP/1.1 {status} Moved\r\nLocation: http://127.0.0.1:{port}/"
                           "admin\r\nContent-Length: 0\r\n\r\n".encode())
    sender = deliverer(filled, url)
    try:
        await sending_one(sender, filled, url)
        assert internal.requests == []
        row = deliveries(filled, url)[0]
        assert (row["status"], row["last_error"]) == (outbox.WAITING, f"answered {status}")
    finally:
        server.close()
        await sender.stop()


async def trickle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 4000:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.01)


async def test_a_receiver_trickling_its_answer_is_given_up_at_the_timeout(
    filled: Store, receiver: tuple[Receiver, str],
) -> None:
    got, url = receiver
    got.answer = trickle
    sender = deliverer(filled, url)
    try:
        took_s = await sending_one(sender, filled, url)
        assert took_s < TIMEOUT_S + 1.0
        row = deliveries(filled, url)[0]
        assert (row["status"], row["last_error"]) == (outbox.WAITING,
                                                      f"no answer within {TIMEOUT_S:g} s")
    finally:
        await sender.stop()


async def sending_one(sender: Deliverer, store: Store, url: str) -> float:
    """Send the first waiting message to ``url`` once; how long it took, in seconds."""
    rows = outbox.pending(store.view, url, since=0, now=time.time(), limit=1)
    timeout = aiohttp.ClientTimeout(total=sender.hooks.timeout_s)
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await sender._send(session, asyncio.Semaphore(1), store.view, url, rows[0])
    return time.monotonic() - started

