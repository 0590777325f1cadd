"""No webhook goes to an address no receiver has: a cloud's metadata service (169.254.169.254,
in every spelling a URL or a resolver takes), a link-local, unspecified or multicast address.
The URL is refused where it is given (``LEDGER_WEBHOOK_URL``, ``ledger webhooks add``), a
subscription written by SQL is not sent to, and a host name is judged by the address it
resolves to, at each connection (so a name re-pointed after the check gains nothing).
Loopback and private addresses stay taken: a receiver beside the service, or on the shop's
network, is the usual case.

The deliverer runs against a SQLite store whose outbox holds one customer's deposit, and a raw
receiver on 127.0.0.1 that records what reaches it; no test connects to a metadata address.
Every wait is on state, with a bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from api.webhooks import Deliverer, WebhookSettings, check_url
from projections import outbox
from tests.http.outboxes import Store, outbox_of

WAIT_S = 30.0

# The metadata service's address, and what it is refused as, in the spellings that reach it.
REFUSED = {
    "metadata": ("169.254.169.254", "link-local"),
    "IPv4-mapped": ("[::ffff:169.254.169.254]", "link-local"),
    "IPv4-mapped in hex": ("[::ffff:a9fe:a9fe]", "link-local"),
    "IPv4-compatible": ("[::a9fe:a9fe]", "link-local"),
    "NAT64": ("[64:ff9b::a9fe:a9fe]", "link-local"),
    "6to4": ("[2002:a9fe:a9fe::1]", "link-local"),
    "hex octets": ("0xa9.0xfe.0xa9.0xfe", "link-local"),
    "one number": ("2852039166", "link-local"),
    "octal octets": ("0251.0376.0251.0376", "link-local"),
    "IPv6 link-local": ("[fe80::1]", "link-local"),
    "AWS over IPv6": ("[fd00:ec2::254]", "metadata"),
    "Alibaba Cloud": ("100.100.100.200", "metadata"),
    "unspecified": ("0.0.0.0", "unspecified"),
    "unspecified IPv6": ("[::]", "unspecified"),
    "multicast": ("224.0.0.1", "multicast"),
}
TAKEN = ["127.0.0.1", "[::1]", "localhost", "10.0.0.5", "192.168.1.20", "mailer.example"]


@pytest.mark.parametrize(("host", "said"), REFUSED.values(), ids=REFUSED.keys())
def test_a_url_naming_an_address_no_receiver_has_is_refused_where_it_is_given(
    host: str, said: str
) -> None:
    with pytest.raises(ValueError, match=f"cannot receive webhooks: its host is .*{said}"):
        check_url(f"http://{host}/latest/meta-data/", "LEDGER_WEBHOOK_URL")


@pytest.mark.parametrize("host", TAKEN)
def test_loopback_private_and_public_receivers_are_still_taken(host: str) -> None:
    url = f"https://{host}:8443/hooks"
    assert check_url(url, "LEDGER_WEBHOOK_URL") == url


# -- the deliverer -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A store whose outbox holds one message: a customer's deposit."""
    with outbox_of(tmp_path_factory.mktemp("webhook-addresses"), [("ada", 100, "PAY-1")]) as made:
        yield made


@dataclass
class Receiver:
    """A raw receiver on 127.0.0.1 that answers 204 and records each request's head."""

    port: int = 0
    heads: list[bytes] | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            assert self.heads is not None
            self.heads.append(head)
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    got = Receiver(heads=[])
    server = await asyncio.start_server(got.handle, "127.0.0.1", 0)
    got.port = server.sockets[0].getsockname()[1]
    try:
        yield got
    finally:
        server.close()


def deliverer(store: Store, urls: tuple[str, ...]) -> Deliverer:
    hooks = WebhookSettings(urls=urls, secret="whsec-addresses", timeout_s=2.0, concurrency=2,
                            backoff_base_s=0.01, backoff_max_s=0.01, poll_s=0.02)
    return Deliverer(store.settings, hooks, lambda: True,
                     SimpleNamespace(registry=CollectorRegistry()), store.key)


def tried(store: Store, url: str) -> list[dict[str, Any]]:
    return store.view.query("SELECT status, attempts, last_error FROM ob_deliveries"
                            " WHERE subscriber = %(s)s AND attempts > 0", {"s": url})


async def until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {WAIT_S:g} s: {what}")
        await asyncio.sleep(0.02)
    return value


async def test_a_host_name_resolving_to_an_address_no_receiver_has_is_never_connected_to(
    store: Store, receiver: Receiver
) -> None:
    # Given a receiver's URL whose host is a name the system's resolver reads as 0.0.0.0 (as a
    # name in DNS may resolve to 169.254.169.254, or be re-pointed there after it was checked),
    # and a receiver listening on this host, which 0.0.0.0 reaches
    url = f"http://0x0:{receiver.port}/hook"
    sender = deliverer(store, (url,))
    sender.start()
    try:
        # When the deliverer tries to send it the customer's deposit
        (row, *_) = await until(lambda: tried(store, url), "a delivery tried")
    finally:
        await sender.stop()
    # Then no connection is made; the delivery says why, and waits
    assert receiver.heads == []
    assert row["status"] == outbox.WAITING, row
    assert "not connected to 0.0.0.0: the unspecified address" in row["last_error"], row


async def test_a_subscription_written_by_sql_to_such_an_address_is_not_sent_to(
    store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a subscription INSERTed by someone with the database's password, to 0.0.0.0 (which
    # reaches this host's receiver; 169.254.169.254 is refused the same way)
    url = f"http://0.0.0.0:{receiver.port}/hook"
    outbox.subscribe(store.view, url, since=0, added_at="2026-12-05T10:00:00Z", key=store.key)
    sender = deliverer(store, ())
    try:
        with caplog.at_level(logging.WARNING, logger="api.webhooks"):
            sender.start()
            # When the deliverer looks at its subscribers
            await until(lambda: any("is not sent to" in r.getMessage() for r in caplog.records),
                        "the deliverer's warning of the subscription it does not send to")
    finally:
        await sender.stop()
        outbox.unsubscribe(store.view, url)
    # Then nothing reached the address, and the warning says why
    assert receiver.heads == []
    assert tried(store, url) == []
    assert any("the unspecified address" in r.getMessage() for r in caplog.records)
