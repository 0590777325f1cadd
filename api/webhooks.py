"""Webhooks: the outbox's messages (``projections.outbox``) POSTed, signed, to every subscriber.

Who: the one ``ledger serve`` process keeping the read models (``projections.leadership``), in
an asyncio task of its own with a thread of its own for the outbox's tables: never in a
request's path, never on the request executor, so a slow or dead receiver slows no write and no
read. Where: every URL of ``LEDGER_WEBHOOK_URL`` (comma-separated) and every subscription made
with ``ledger webhooks add``; each gets every message. Nothing is sent without
``LEDGER_WEBHOOK_SECRET``.

How: a POST of the message as JSON, with ``Ledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA-256
of "<t>.<body>" with the secret>`` and ``Ledger-Delivery-Id: <message id>``. A 2xx answer marks
the delivery delivered; any other answer, no answer in ``LEDGER_WEBHOOK_TIMEOUT_S`` or no
connection is tried again after a bounded exponential back-off with jitter
(``LEDGER_WEBHOOK_BACKOFF_BASE_S`` doubling up to ``LEDGER_WEBHOOK_BACKOFF_MAX_S``), until the
message is ``LEDGER_WEBHOOK_MAX_AGE_S`` old: then the delivery is parked ``failed`` (shown in
``GET /v1/outbox?status=failed``; ``ledger webhooks redeliver ID`` sends it again).

What: only messages the keeper made from sealed events. Each carries its seal (``ob_seals``,
``projections.outbox.seal_of``); a message whose seal does not hold (a row INSERTed into the
outbox by someone with the database's password but not the chain key) is never signed nor sent:
it is parked ``failed`` saying so, counted and named in an ERROR line.

Order: per subscriber, a customer's message is sent only once every earlier one of theirs is
delivered or parked (log order per customer); different customers' messages go out together, at
most ``LEDGER_WEBHOOK_CONCURRENCY`` at a time to each subscriber (slots of its own: a receiver that
never answers holds only its own), and at most ``MAX_IN_FLIGHT_PER_SUBSCRIBER`` begun per
subscriber (the others wait in the outbox, not in memory). Every POST ends within
``LEDGER_WEBHOOK_TIMEOUT_S``, answer included (at most 64 KiB of it is read); a redirect is
an answer like any other, never followed; no cookie an answer sets is kept. No POST goes to an
address no receiver has (link-local, where cloud metadata services answer; unspecified;
multicast: ``address_problem``), whether the URL names it or a host name resolves to it at
the connection. At least once: a delivery is marked after its
answer, so a crash in between sends it again, with the same ``Ledger-Delivery-Id``.

A receiver that is down is not asked after every round: once ``DOWN_AFTER_FAILURES`` of its
deliveries in a row failed, the deliverer looks for its messages again only when the soonest
of those deliveries is due again (its back-off), not every ``LEDGER_WEBHOOK_POLL_S`` (a new
customer's first message would fail as theirs did). The first delivery that lands ends the
rest. The backlog's gauges are counted at most once every ``BACKLOG_EVERY_S``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import random
import re
import socket
import time
import traceback
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from prometheus_client import Counter, Gauge

from api import models, parsing
from api.config import Config
from api.context import read
from api.handlers import json_response
from api.keys import KEEPER, LEDGER, METRICS, SETTINGS, WEBHOOK_URLS
from ledger.clock import rfc3339
from ledger.settings import StoreSettings
from projections import outbox
from projections.outbox import OutboxProjection
from projections.seal import ChainKey
from projections.views import ReadModelView

log = logging.getLogger(__name__)
T = TypeVar("T")

SIGNATURE_HEADER = "Ledger-Signature"
DELIVERY_ID_HEADER = "Ledger-Delivery-Id"
TYPE_HEADER = "Ledger-Message-Type"
# How far a receiver may let a signature's time be from its own clock (the README's snippet).
SIGNATURE_TOLERANCE_S = 300
# Customers looked at per subscriber and round (each one's first undelivered message, if due),
# taken in turn by name across rounds: a round's work is bounded however many wait, and one
# customer's backlog holds back no other customer.
CUSTOMERS_PER_ROUND = 200
# Deliveries begun per subscriber and not yet landed (posting, or waiting their turn among its
# LEDGER_WEBHOOK_CONCURRENCY posts): a receiver that hangs holds this many messages in memory,
# not one per waiting customer. As many as the most posts at once (LEDGER_WEBHOOK_CONCURRENCY's
# bound).
MAX_IN_FLIGHT_PER_SUBSCRIBER = 256
# The longest subscriber URL taken.
MAX_URL_CHARS = 2000
# A URL's host and port as written (an IPv6 address in brackets), and a host name (DNS labels
# of letters, digits, "-" and "_", 63 at most each, 253 in all).
_HOST_AND_PORT = re.compile(r"(\[[^\]]*\]|[^:\[\]]*)(?::[0-9]*)?")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")
_WITH_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# How much of what a failed delivery met is kept (``failure_said``).
MAX_ERROR_CHARS = 500
# Why a message was parked failed without being sent (the outbox listing shows it).
UNSEALED = "not sent: its seal does not hold (written behind the service's back)"
# Addresses no webhook receiver has, refused in a URL (``url_problem``) and again at each
# connection (``_connectable``: a host name may resolve to one, or be made to between the two,
# as DNS rebinding does): link-local ones (169.254.169.254 is most clouds' metadata service,
# which hands out their credentials), the metadata services outside that range (AWS's over
# IPv6, Alibaba Cloud's), and addresses of no one host (unspecified, which reaches this one;
# multicast; IPv4's reserved range and broadcast). An IPv6 address carrying an IPv4 one
# (IPv4-mapped or -compatible, 6to4, NAT64) is judged by that one too. Loopback and private
# addresses are taken: a receiver beside the service or on the shop's own network is the usual
# case (api/README.md, "Webhooks").
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254",
                                                                 "100.100.100.200"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class WebhookSettings:
    urls: tuple[str, ...] = ()
    # Not in the repr: the settings may be shown (a log line, an assertion, a debugger), the
    # secret never is (``api.config`` keeps it a SecretStr until here).
    secret: str | None = field(default=None, repr=False)
    max_age_s: float = 24 * 3600.0
    timeout_s: float = 10.0
    concurrency: int = 8
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    poll_s: float = 0.2

    # Each setting's variable (api.config, without LEDGER_), and its bounds.
    BOUNDS: Any = (
        ("max_age_s", 0.1, 30 * 24 * 3600.0),
        ("timeout_s", 0.05, 120.0),
        ("concurrency", 1, 256),
        ("backoff_base_s", 0.01, 3600.0),
        ("backoff_max_s", 0.01, 24 * 3600.0),
        ("poll_s", 0.01, 10.0),
    )

    @classmethod
    def from_config(cls, config: Config) -> WebhookSettings:
        """The settings ``config`` gives (``LEDGER_WEBHOOK_*``): ValueError naming a bad one."""
        urls = tuple(u.strip() for u in config.webhook_url.split(",") if u.strip())
        for url in urls:
            check_url(url, "LEDGER_WEBHOOK_URL")
        secret = config.webhook_secret
        values: dict[str, Any] = {}
        for name, low, high in cls.BOUNDS:
            value = getattr(config, f"webhook_{name}")
            if value is None:
                continue
            if not low <= value <= high:
                raise ValueError(f"LEDGER_WEBHOOK_{name.upper()} is {low}..{high}")
            values[name] = value
        made = cls(urls=urls,
                   secret=None if secret is None else secret.get_secret_value().strip() or None,
                   **values)
        if made.backoff_max_s < made.backoff_base_s:
            raise ValueError("LEDGER_WEBHOOK_BACKOFF_MAX_S is below LEDGER_WEBHOOK_BACKOFF_BASE_S")
        return made


def sent_to(url: str) -> bool:
    """Whether the deliverer sends to a subscription's URL (``Deliverer.subscribers``)."""
    return url_problem(url) is None


def check_url(url: str, name: str) -> str:
    """``url``, when webhooks can be sent to it (``url_problem``); otherwise ValueError saying
    why, naming ``name`` and the URL as ``outbox.shown_url`` shows it: never its credentials
    nor its query, which may hold secrets."""
    problem = url_problem(url)
    if problem is None:
        return url
    # Shown only when written scheme://…: otherwise what ``shown_url`` takes for a path may be
    # credentials (``user:password@host`` without its scheme).
    shown = outbox.shown_url(url) if _WITH_SCHEME.match(url) else ""
    subject = name if shown in ("", outbox.INVALID_URL_SHOWN) else f"{name} {shown}"
    raise ValueError(f"{subject} cannot receive webhooks: {problem}")


def url_problem(url: str) -> str | None:
    """Why webhooks cannot be sent to ``url``, in words that do not repeat it; None when they
    can: at most ``MAX_URL_CHARS`` characters, none of them a space or a control character,
    http or https, a host (a name the HTTP client can look up, or an IP address: IPv6 in
    brackets) and a port, when given, in 1..65535."""
    if len(url) > MAX_URL_CHARS:
        return f"it is {len(url)} characters long, more than {MAX_URL_CHARS}"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it holds a space or a control character (write them percent-encoded, as %20)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "its host cannot be read (an IPv6 address goes in brackets: http://[::1]/)"
    if parts.scheme not in ("http", "https"):
        return "only http and https URLs are sent to (like https://mailer.example/hooks)"
    if not host:
        return "it names no host (like https://mailer.example/hooks)"
    try:
        port = parts.port
    except ValueError:  # out of range, or not a number
        port = 0
    if port == 0:
        return "its port is not a number from 1 to 65535"
    found = _HOST_AND_PORT.fullmatch(parts.netloc.rpartition("@")[2])
    if found is None or not _is_host(host, bracketed=found.group(1).startswith("[")):
        return "its host is neither a host name nor an IP address (IPv6 goes in brackets)"
    refused = address_problem(host) or address_problem(_legacy_ipv4(host) or "")
    if refused is not None:
        return f"its host is {refused}, never a webhook receiver"
    return None


def address_problem(address: str) -> str | None:
    """Why no webhook is sent to the IP address ``address`` (``METADATA_ADDRESSES`` and the
    comment above it), in words that do not repeat it; None when one may be, or when
    ``address`` is not an IP address (a host name: judged by what it resolves to)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    for each in _carried(ip):
        if each in METADATA_ADDRESSES:
            return "a cloud metadata service's address"
        if each.is_link_local:
            return "a link-local address (where cloud metadata services answer)"
        if each.is_unspecified:
            return "the unspecified address (it reaches this host)"
        if each.is_multicast:
            return "a multicast address"
        if isinstance(each, ipaddress.IPv4Address) and each.is_reserved:  # 240/4, broadcast
            return "a reserved address"
    return None


def _carried(ip: ipaddress.IPv4Address | ipaddress.IPv6Address
             ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """``ip``, and the IPv4 address an IPv6 one carries, if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return [ip]
    inner = ip.ipv4_mapped or ip.sixtofour
    if inner is None and (ip in _NAT64 or 1 < int(ip) < 2**32):  # NAT64, IPv4-compatible
        inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return [ip] if inner is None else [ip, inner]


def _legacy_ipv4(host: str) -> str | None:
    """The IPv4 address a host name in a legacy numeric form stands for (``0xa9.0xfe.0xa9.0xfe``,
    ``2852039166``: the system's resolver reads them so); None for any other name."""
    try:
        return str(ipaddress.IPv4Address(socket.inet_aton(host)))
    except (OSError, ValueError):
        return None


def _connectable(addr_info: tuple[Any, ...]) -> socket.socket:
    """The HTTP client's socket for each address it connects to, once the name is resolved:
    none for an address ``address_problem`` refuses (an OSError saying so instead)."""
    family, kind, proto, _, address = addr_info
    refused = address_problem(str(address[0]))
    if refused is not None:
        # With an errno: the HTTP client's error shows the words (its strerror), not "None".
        raise OSError(errno.EACCES,
                      f"not connected to {address[0]}: {refused}, never a webhook receiver")
    return socket.socket(family=family, type=kind, proto=proto)


def _is_host(host: str, *, bracketed: bool) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        if bracketed:
            return False
    try:
        name = host.encode("idna").decode("ascii")  # as the HTTP client looks it up
    except UnicodeError:
        return False
    return _HOST_NAME.fullmatch(name) is not None


def failure_said(failure: BaseException, url: str) -> str:
    """What a POST to ``url`` met, to be stored and logged: the failure's class and words, less
    the URL's credentials, query and fragment (``outbox.redacted``: a client's error may repeat
    the URL it was given), at most ``MAX_ERROR_CHARS`` characters."""
    return outbox.redacted(f"{type(failure).__name__}: {failure}", url)[:MAX_ERROR_CHARS]


# -- signatures and back-off ---------------------------------------------------------------------


def signature(secret: str, body: bytes, t: int) -> str:
    """The ``Ledger-Signature`` header's value for ``body`` sent at unix time ``t``."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, now: float | None = None,
           tolerance_s: float = SIGNATURE_TOLERANCE_S) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, at a time within ``tolerance_s`` of
    ``now`` (what a receiver checks; the README shows the same in a few lines)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        t = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - t) > tolerance_s:
        return False
    expected = signature(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected.encode(), given.encode())  # str: ASCII only, else raises


def backoff_s(attempts: int, base_s: float, max_s: float,
              rand: Callable[[], float] = random.random) -> float:
    """The wait before the next try after ``attempts`` failed ones: ``base_s`` doubled per
    failure, at most ``max_s``, then a random half of it taken off (jitter), so receivers
    coming back are not met by every sender at once. Always in (cap/2, cap]."""
    cap = min(max_s, base_s * 2.0 ** min(max(attempts - 1, 0), 60))
    # nextafter: rounding must never land on cap/2 itself, outside the promised interval.
    return max(math.nextafter(cap / 2, math.inf), cap * (1 - rand() / 2))


# -- delivery ------------------------------------------------------------------------------------


# Deliveries to one receiver failed in a row before it is taken for down (see the docstring).
DOWN_AFTER_FAILURES = 3
BACKLOG_EVERY_S = 1.0


class Deliverer:
    """Sends the outbox's messages while ``is_leader()`` (see the module docstring)."""

    def __init__(self, settings: StoreSettings, hooks: WebhookSettings,
                 is_leader: Callable[[], bool], metrics: Any, key: ChainKey) -> None:
        self.settings = settings
        self.hooks = hooks
        self.key = key  # checks each message's seal (``outbox.sealed``) before it is signed
        self.is_leader = is_leader
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhooks")
        self._view: ReadModelView | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # (subscriber, customer) -> the delivery being sent: one per customer at a time
        self._in_flight: dict[tuple[str, str], asyncio.Task[None]] = {}
        # subscriber -> the last customer a round looked at: the next round starts after them
        self._turn: dict[str, str] = {}
        # Each subscriber's sending slots (``LEDGER_WEBHOOK_CONCURRENCY``): one receiver that
        # hangs until the timeout holds its own deliveries only, never another's.
        self._gates: dict[str, asyncio.Semaphore] = {}
        # subscriptions whose URL cannot receive webhooks (``url_problem``), warned of once
        self._unusable: set[str] = set()
        # subscriptions whose seal the key does not hold (``outbox.subscription_sealed``),
        # said once each (at most ``outbox.MAX_SUBSCRIPTIONS`` remembered: SQL may add more)
        self._unsealed: set[str] = set()
        # subscriber -> its deliveries failed in a row
        self._failed_in_a_row: dict[str, int] = {}
        # subscriber -> message -> when that failed delivery is due again (``time.time()``),
        # for the failures of the current run: a delivery that lands clears it, one parked
        # leaves it. At most one message per customer waiting (their head) is failing at once.
        self._due_again: dict[str, dict[str, float]] = {}
        self._backlog_at = 0.0  # when the backlog's gauges are next counted
        registry = metrics.registry
        self.waiting = Gauge("ledger_webhook_messages_waiting",
                             "Outbox messages not yet delivered nor parked, summed over the "
                             "receivers (whether or not a delivery was begun)",
                             registry=registry)
        self.oldest = Gauge("ledger_webhook_oldest_waiting_age_seconds",
                            "Age of the oldest outbox message still waiting (0: none)",
                            registry=registry)
        self.failures = Counter("ledger_webhook_failures",
                                "Deliveries parked failed past LEDGER_WEBHOOK_MAX_AGE_S",
                                registry=registry)
        self.attempts = Counter("ledger_webhook_attempts",
                                "Webhook POSTs made, by outcome", ("outcome",),
                                registry=registry)
        self.unsealed = Counter("ledger_webhook_unsealed",
                                "Outbox messages never sent: their seal does not hold (written "
                                "behind the service's back)", registry=registry)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _open(self) -> ReadModelView:
        if self._view is None:
            from projections.readmodels import open_view

            self._view = open_view(self.settings, OutboxProjection, pool_size=2)
        return self._view

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhooks")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._cancel_in_flight()
        if self._view is not None:
            await self._db(self._view.datastore.close)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.hooks.timeout_s)
        # No limit of the pool's own: each subscriber's slots bound its connections (a limit
        # shared by all would put every receiver in line behind one that hangs).
        connector = aiohttp.TCPConnector(limit=0, socket_factory=_connectable)
        # No cookie jar: nothing a receiver sets is kept, nor sent back to it or to another
        # receiver on the same host (cookies ignore ports).
        async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                         cookie_jar=aiohttp.DummyCookieJar()) as session:
            try:
                await self._rounds(session)
            finally:  # before the session closes under them (each would log its failure)
                await self._cancel_in_flight()

    async def _cancel_in_flight(self) -> None:
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    async def _rounds(self, session: aiohttp.ClientSession) -> None:
        leading = False
        while not self._stopping.is_set():
            busy = False
            try:
                if self.is_leader():
                    if not leading:  # begins: heads made elsewhere, or never, are looked for
                        await self._db(outbox.look_again, await self._db(self._open))
                        leading = True
                    busy = await self.round(session)
                else:
                    leading = False
            except Exception:  # never left dead: logged, and tried again
                log.exception("webhook delivery failed; trying again")
            if not busy:
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.hooks.poll_s)
                except TimeoutError:
                    pass

    async def subscribers(self) -> list[tuple[str, int]]:
        """The receivers of now, as the outbox's page counts them (``outbox.receivers``)."""
        view = await self._db(self._open)
        return await self._db(outbox.receivers, view, self.hooks.urls, self._sent_to,
                              key=self.key, unsealed=self._not_sealed)

    def _not_sealed(self, url: str) -> None:
        """A subscription the service's key did not make: sent nothing, said once (ERROR:
        someone who can write to the database, but holds no key, tried to be sent every
        customer's messages; or it was added before subscriptions were sealed)."""
        if url in self._unsealed or len(self._unsealed) >= outbox.MAX_SUBSCRIPTIONS:
            return
        self._unsealed.add(url)
        log.error("the subscription %s is not sealed with the service's key (added by SQL, "
                  "or before subscriptions were sealed): nothing is sent to it. `ledger webhooks "
                  "add` it again if it is yours, else `ledger webhooks remove` it",
                  outbox.shown_url(url))

    def _sent_to(self, url: str) -> bool:
        """``sent_to``, a subscription not sent to said once (a row made before URLs were
        checked, or by SQL)."""
        problem = url_problem(url)
        if problem is not None and url not in self._unusable:
            self._unusable.add(url)
            log.warning("the subscription %s is not sent to: %s (`ledger webhooks remove` it)",
                        outbox.shown_url(url), problem)
        return problem is None

    async def round(self, session: aiohttp.ClientSession) -> bool:
        """Start sending each customer's first undelivered message that is due, to each
        subscriber, unless one of theirs is in flight there; True if any was started. A round
        never waits for the answers: a slow receiver holds its own deliveries only. At most
        ``CUSTOMERS_PER_ROUND`` customers per subscriber, the next ones in turn, and at most
        ``MAX_IN_FLIGHT_PER_SUBSCRIBER`` deliveries of a subscriber begun and not landed."""
        view = await self._db(self._open)
        now = time.time()
        started = 0
        subscribers = await self.subscribers()
        for gone in self._gates.keys() - {url for url, _ in subscribers}:
            if not self.in_flight(gone):  # a subscriber removed: its slots go with it
                del self._gates[gone]
                self._failed_in_a_row.pop(gone, None)
                self._due_again.pop(gone, None)
        for url, since in subscribers:
            room = MAX_IN_FLIGHT_PER_SUBSCRIBER - self.in_flight(url)
            if room <= 0 or self.resting(url, now):  # its turn stays where it was
                continue
            rows = await self._db(outbox.pending, view, url, since=since, now=now,
                                  limit=CUSTOMERS_PER_ROUND,
                                  after_customer=self._turn.get(url, ""))
            looked, begun = self._begin(session, view, url, rows, room)
            started += begun
            # a full page, or one cut short by ``room``: the next round starts after the last
            # customer looked at; else from the first again
            cut = looked < len(rows) or len(rows) == CUSTOMERS_PER_ROUND
            self._turn[url] = rows[looked - 1]["username"] if cut and looked else ""
        if now >= self._backlog_at:
            self._backlog_at = now + BACKLOG_EVERY_S
            backlog = await self._db(outbox.backlog, view, subscribers)
            self.waiting.set(backlog["waiting"])
            oldest = backlog["oldest"]
            self.oldest.set(0 if oldest is None else max(0.0, now - _unix(oldest)))
        return started > 0

    def resting(self, url: str, now: float) -> bool:
        """Whether ``url`` is taken for down and none of its failed deliveries is due yet."""
        due = self._due_again.get(url) or {}
        return (self._failed_in_a_row.get(url, 0) >= DOWN_AFTER_FAILURES and bool(due)
                and min(due.values()) > now)

    def _heard(self, url: str, message: str, *, failed: bool, next_at: float | None) -> None:
        """What the delivery of ``message`` to ``url`` came to: a success ends its failures in a
        row (and its rest); a failure is due again at ``next_at`` (None: parked, never), and
        past ``DOWN_AFTER_FAILURES`` in a row the receiver rests until the soonest of its
        failed deliveries is due."""
        if not failed:
            self._failed_in_a_row.pop(url, None)
            self._due_again.pop(url, None)
            return
        self._failed_in_a_row[url] = self._failed_in_a_row.get(url, 0) + 1
        due = self._due_again.setdefault(url, {})
        if next_at is None:  # parked: never due again
            due.pop(message, None)
        else:
            due[message] = next_at

    def _begin(self, session: aiohttp.ClientSession, view: ReadModelView, url: str,
               rows: list[dict[str, Any]], room: int) -> tuple[int, int]:
        """Begin delivering ``rows`` (one per customer: their first not yet delivered, due now)
        to ``url``, but none of a customer with one in flight there, and at most ``room``;
        answers (rows looked at, deliveries begun)."""
        looked = started = 0
        gate = self._gates.setdefault(url, asyncio.Semaphore(self.hooks.concurrency))
        for row in rows:
            if started == room:
                break
            looked += 1
            key = (url, row["username"])
            if key in self._in_flight:
                continue
            task = asyncio.get_running_loop().create_task(
                self._deliver(session, gate, view, url, row))
            self._in_flight[key] = task
            task.add_done_callback(functools.partial(self._landed, key))
            started += 1
        return looked, started

    def in_flight(self, url: str) -> int:
        """Deliveries to ``url`` begun and not landed (at most MAX_IN_FLIGHT_PER_SUBSCRIBER)."""
        return sum(1 for each, _ in self._in_flight if each == url)

    def _landed(self, key: tuple[str, str], _: asyncio.Task[None]) -> None:
        self._in_flight.pop(key, None)

    async def _deliver(self, session: aiohttp.ClientSession, gate: asyncio.Semaphore,
                       view: ReadModelView, url: str, row: dict[str, Any]) -> None:
        try:
            await self._send(session, gate, view, url, row)
        except asyncio.CancelledError:
            raise
        except Exception as failure:  # the next round tries it again
            # Not log.exception: its last line would be the error's own words, which may
            # repeat the URL; the frames say where, the words are said without its secrets.
            log.error("webhook delivery of %s to %s failed: %s\nTraceback (most recent call "
                      "last):\n%s", row["id"], outbox.shown_url(url), failure_said(failure, url),
                      "".join(traceback.format_tb(failure.__traceback__)).rstrip())

    async def _send(self, session: aiohttp.ClientSession, gate: asyncio.Semaphore,
                    view: ReadModelView, url: str, row: dict[str, Any]) -> None:
        assert self.hooks.secret is not None
        if not outbox.sealed(self.key, row):  # nothing the keeper did not make is signed
            self.unsealed.inc()
            log.error("webhook message %s at position %s has no valid seal (written behind the "
                      "service's back): parked failed, never sent", row["id"], row["position"])
            await self._db(outbox.settle, view, row["id"], url, status=outbox.FAILED,
                           attempts=int(row["attempts"]), next_at=time.time(),
                           delivered_at=None, last_error=UNSEALED)
            return
        body = json.dumps(outbox.body(row), separators=(",", ":"), sort_keys=True).encode()
        error: str | None = None
        async with gate:
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(self.hooks.secret, body, int(time.time())),
                DELIVERY_ID_HEADER: row["id"],
                TYPE_HEADER: row["type"],
            }
            try:
                async with session.post(url, data=body, headers=headers,
                                        allow_redirects=False) as answer:
                    await answer.content.read(64 * 1024)  # a bounded look, then let go
                    if not 200 <= answer.status < 300:
                        error = f"answered {answer.status}"
            except TimeoutError:
                error = f"no answer within {self.hooks.timeout_s:g} s"
            except (aiohttp.ClientError, OSError, ValueError) as failure:
                error = failure_said(failure, url)
        now = time.time()
        attempts = int(row["attempts"]) + 1
        self.attempts.labels("delivered" if error is None else "failed").inc()
        wait = 0.0 if error is None else backoff_s(attempts, self.hooks.backoff_base_s,
                                                   self.hooks.backoff_max_s)
        parked = error is not None and now - _unix(row["created_at"]) >= self.hooks.max_age_s
        self._heard(url, row["id"], failed=error is not None,
                    next_at=None if parked else now + wait)
        if error is None:
            await self._db(outbox.settle, view, row["id"], url, status=outbox.DELIVERED,
                           attempts=attempts, next_at=now, delivered_at=rfc3339(_now()),
                           last_error=None)
            return
        if now - _unix(row["created_at"]) >= self.hooks.max_age_s:
            self.failures.inc()
            log.warning("webhook message %s parked failed after %d attempts: %s",
                        row["id"], attempts, error)
            await self._db(outbox.settle, view, row["id"], url, status=outbox.FAILED,
                           attempts=attempts, next_at=now, delivered_at=None, last_error=error)
            return
        await self._db(outbox.settle, view, row["id"], url, status=outbox.WAITING,
                       attempts=attempts, next_at=now + wait, delivered_at=None,
                       last_error=error)


def _now() -> datetime:
    return datetime.now(UTC)


def _unix(moment: str) -> float:
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


def delivery(hooks: WebhookSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's cleanup context: delivery runs while the app does (after the keeper starts,
    stopped before it stops). The settings are read (and refused) as the app is made."""

    async def delivering(app: web.Application) -> AsyncIterator[None]:
        if hooks.secret is None:  # nothing is sent unsigned: no task, no connection
            if hooks.urls:
                log.warning("LEDGER_WEBHOOK_URL is set but LEDGER_WEBHOOK_SECRET is not: "
                            "no webhook is sent")
            yield
            return
        leader = getattr(app[KEEPER], "is_leader", None)

        def is_leader() -> bool:
            return leader is not None and bool(leader.is_set())

        deliverer = Deliverer(app[SETTINGS], hooks, is_leader, app[METRICS],
                              app[LEDGER].recorder.chain_key)  # type: ignore[attr-defined]
        deliverer.start()
        yield
        await deliverer.stop()

    return delivering


# -- the operators' read -------------------------------------------------------------------------


async def list_outbox(request: web.Request) -> web.Response:
    q = parsing.query(request, models.OutboxQuery)
    configured = request.app[WEBHOOK_URLS]
    page = await read(request, lambda rm: rm.outbox(status=q.status, limit=q.limit,
                                                    after=q.after, configured=configured,
                                                    usable=sent_to))
    return json_response({"items": page.items, "next": page.next})
