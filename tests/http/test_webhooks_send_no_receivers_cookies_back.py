"""The deliverer keeps nothing a receiver sets: a cookie in an answer is never sent back, to
that receiver nor to another on the same host (cookies ignore ports), so no receiver can hand
another one state (a session of its choosing) through the service.

A SQLite store whose outbox holds a customer's two deposits (the second is sent only once the
first is answered), raw receivers on ``localhost``; every wait is on state, with a bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from api.webhooks import Deliverer, WebhookSettings
from projections import outbox
from tests.http.outboxes import Store, outbox_of

WAIT_S = 30.0


@dataclass
class Receiver:
    """A raw receiver on localhost: answers 204 with ``answer_headers``, records each head."""

    answer_headers: bytes = b""
    heads: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # kept alive: each request on the connection answered in turn
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                self.heads.append(head)
                writer.write(b"HTTP/1.1 204 No Content\r\n" + self.answer_headers + b"\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/hook"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with outbox_of(tmp_path_factory.mktemp("webhook-cookies"),
                   [("ada", 100, "PAY-1"), ("ada", 200, "PAY-2")]) as made:
        yield made


async def until(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {WAIT_S:g} s: {what}")
        await asyncio.sleep(0.02)


def carries_a_cookie(head: bytes) -> bool:
    return any(line.lower().startswith(b"cookie:") for line in head.split(b"\r\n"))


async def test_a_cookie_a_receiver_sets_is_sent_back_to_no_receiver(
    store: Store
) -> None:
    settings, view, key = store.settings, store.view, store.key
    # Given a receiver that sets a cookie in each answer, and another on the same host
    setter = Receiver(answer_headers=b"Set-Cookie: session=chosen-by-the-setter; Path=/\r\n")
    other = Receiver()
    servers = [await setter.start(), await other.start()]
    hooks = WebhookSettings(urls=(setter.url,), secret="whsec-cookies", timeout_s=2.0,
                            concurrency=2, backoff_base_s=0.01, backoff_max_s=0.01, poll_s=0.02)
    sender = Deliverer(settings, hooks, lambda: True,
                       SimpleNamespace(registry=CollectorRegistry()), key)
    sender.start()
    try:
        # When the setter has answered both of the customer's messages (the second sent after
        # the first answer), and the other receiver subscribes and gets them too
        await until(lambda: len(setter.heads) == 2, "both messages at the cookie setter")
        outbox.subscribe(view, other.url, since=0, added_at="2026-12-05T10:00:00Z", key=key)
        await until(lambda: len(other.heads) == 2, "both messages at the other receiver")
    finally:
        await sender.stop()
        outbox.unsubscribe(view, other.url)
        for server in servers:
            server.close()
    # Then no request carried the cookie back
    assert not any(carries_a_cookie(head) for head in setter.heads + other.heads), (
        setter.heads + other.heads)
