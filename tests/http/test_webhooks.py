"""Webhooks against a real receiver: a ``ledger serve`` process per store POSTs the outbox's
messages to an aiohttp server on 127.0.0.1 (a thread of its own, a random port), which checks
each signature as the README tells a receiver to, and answers as each test has it answer.

Tests keep apart by customer (fresh user names): the receiver answers per customer, and each
test looks only at its customers' messages. Every wait is on state (what the receiver got, what
the outbox says) with a bound, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socketserver
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from projections import outbox
from projections.outbox import OutboxProjection
from projections.readmodels import open_view
from projections.seal import ChainKey, read_key
from tests.conftest import store_settings
from tests.http.conftest import (
    Api,
    Server,
    add_person,
    assert_problem,
    case_body,
    days_from_today,
    free_port,
    ledger_command,
    main_path,
    start_server,
    store,
    tokens_env,
)

SECRET = "whsec-test-2b7f0c9d"
MAX_AGE_S = 8.0
TIMEOUT_S = 1.0
WAIT_S = 30.0


@dataclass
class Got:
    delivery_id: str
    signature_ok: bool
    message: dict[str, Any]
    at: float
    status: int = 0  # the receiver's answer (0: none yet)


@dataclass
class Receiver:
    """An aiohttp receiver in a thread of its own; per customer it answers 200, fails a number
    of tries per message with 500, hangs, or (all of it) is down; it can fail the first try of
    the messages ``fail_once`` picks."""

    port: int = field(default_factory=free_port)
    got: list[Got] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)  # username -> tries to fail
    always_fail: set[str] = field(default_factory=set)
    hang: set[str] = field(default_factory=set)
    tries: dict[str, int] = field(default_factory=dict)  # message id -> tries seen
    fail_once: Callable[[dict[str, Any]], bool] | None = None
    # called with each message as it arrives, before the answer (a crash of the sender)
    on_message: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.release = asyncio.Event()
        self.site: web.TCPSite | None = None
        self.is_down = False
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        self._call(self.runner.setup())
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def up(self) -> None:
        self.is_down = False

        async def start() -> None:
            self.site = web.TCPSite(self.runner, "127.0.0.1", self.port)
            await self.site.start()

        self._call(start())

    def down(self) -> None:
        """No new connection taken, and those kept alive cut at their next request."""
        self.is_down = True

        async def stop() -> None:
            assert self.site is not None
            await self.site.stop()

        self._call(stop())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.release.set)
        self._call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def handle(self, request: web.Request) -> web.Response:
        if self.is_down:
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("down")
        body = await request.read()
        message = json.loads(body)
        user = message["username"]
        with self.lock:
            tries = self.tries[message["id"]] = self.tries.get(message["id"], 0) + 1
            got = Got(request.headers.get("Ledger-Delivery-Id", ""),
                      signed(request.headers.get("Ledger-Signature", ""), body),
                      message, time.monotonic())
            self.got.append(got)
        if self.on_message is not None:
            self.on_message(message)
        if user in self.hang:
            await self.release.wait()
        once = self.fail_once is not None and tries == 1 and self.fail_once(message)
        if user in self.always_fail or tries <= self.fail_first.get(user, 0) or once:
            got.status = 500
            return web.Response(status=500, text="not now")
        got.status = 204
        return web.Response(status=204)

    def of(self, username: str) -> list[Got]:
        with self.lock:
            return [g for g in self.got if g.message["username"] == username]


def signed(header: str, body: bytes) -> bool:
    """The README's check, written out here on its own (not the service's code)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if "t" not in parts or "v1" not in parts:
        return False
    expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


@dataclass
class Hooked:
    server: Server
    receiver: Receiver
    workdir: Path


def hooked_server(url: str, workdir: Path, receiver: Receiver) -> Server:
    return start_server(url, workdir, env={
        "LEDGER_WEBHOOK_URL": receiver.url,
        "LEDGER_WEBHOOK_SECRET": SECRET,
        "LEDGER_WEBHOOK_MAX_AGE_S": str(MAX_AGE_S),
        "LEDGER_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
        "LEDGER_WEBHOOK_BACKOFF_BASE_S": "0.05",
        "LEDGER_WEBHOOK_BACKOFF_MAX_S": "0.4",
        "LEDGER_WEBHOOK_POLL_S": "0.05",
    })


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hooked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Hooked]:
    workdir = tmp_path_factory.mktemp(f"hooks-{request.param}")
    receiver = Receiver()
    try:
        with store(request.param, workdir) as url:
            server = hooked_server(url, workdir, receiver)
            try:
                # Four eyes: a second finance person pays what the finance token approved.
                add_person(server, "payer", "finance")
                yield Hooked(server, receiver, workdir)
            finally:
                server.stop()
    finally:
        receiver.close()


@pytest.fixture
async def api(hooked: Hooked) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(base_url=hooked.server.base_url) as session:
        yield Api(session, hooked.server.people)


async def until(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.02)


async def until_async(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S
                      ) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.05)


def delivered_types(receiver: Receiver, username: str) -> list[str]:
    """The types of the customer's messages delivered, once each, in the order first got."""
    seen: dict[str, str] = {}
    for got in receiver.of(username):
        seen.setdefault(got.delivery_id, got.message["type"])
    return list(seen.values())


# -- the tests ---------------------------------------------------------------------------------


async def test_every_message_of_a_case_walked_end_to_end_arrives_signed_in_words(
    api: Api, hooked: Hooked
) -> None:
    receiver = hooked.receiver
    username = await api.customer_with_order(deposit=10_000, paid=3_000)
    case = await api.open_case(username)
    case_id = case["id"]
    for step, body, _ in main_path():
        await api.step(case_id, step, body)
    await api.step(case_id, "resolve", {"outcome": "refund", "refund_amount": 3_000,
                                        "freight_amount": 500})
    reply = await api.post(f"/v1/return-cases/{case_id}/notes",
                           {"text": "Your refund is on its way.", "for_customer": True},
                           role="cs")
    assert reply.status == 201, reply.text
    reply = await api.post(f"/v1/return-cases/{case_id}/notes",
                           {"text": "internal: supplier slow to answer"}, role="cs")
    assert reply.status == 201, reply.text
    await api.step(case_id, "close", {"note": "done"})
    expected = [
        "deposit.recorded", "return_case.opened", "return_case.supplier_review",
        "return_case.accepted", "return_case.shipped_back", "return_case.received",
        "return_case.forwarded", "return_case.resolved", "return_case.note",
        "return_case.closed",
    ]
    await until(lambda: delivered_types(receiver, username) == expected,
                f"the customer's messages {expected}")
    got = {g.message["type"]: g for g in receiver.of(username)}
    assert all(g.signature_ok for g in receiver.of(username))
    assert all(g.delivery_id == g.message["id"] for g in receiver.of(username))
    accepted = got["return_case.accepted"].message
    assert accepted["case_id"] == case_id
    assert "Supplier Ltd, Dock 4" in accepted["customer_message"]
    assert days_from_today(14) in accepted["customer_message"]
    assert accepted["details"]["return_by"] == days_from_today(14)
    resolved = got["return_case.resolved"].message
    assert (resolved["amount"], resolved["currency"]) == (3_000, "USD")
    assert "30.00 USD" in resolved["customer_message"]
    assert "5.00 USD" in resolved["customer_message"]
    assert got["return_case.note"].message["customer_message"] == "Your refund is on its way."
    assert "internal" not in json.dumps([g.message for g in receiver.of(username)])
    deposit = got["deposit.recorded"].message
    assert (deposit["amount"], deposit["case_id"]) == (10_000, None)

    # What was told, and when: the case shows each message and its delivery.
    async def shown() -> Any:
        view = await api.case(case_id)
        messages = view["messages"]
        done = all(m["deliveries"] and m["deliveries"][0]["status"] == "delivered"
                   for m in messages)
        return messages if done and len(messages) == len(expected) - 1 else None

    messages = await until_async(shown, "the case shows every message delivered")
    assert [m["type"] for m in messages] == expected[1:]
    delivery = messages[0]["deliveries"][0]
    assert delivery["attempts"] == 1 and delivery["delivered_at"] and not delivery["last_error"]


async def test_a_refund_request_tells_each_step_and_shows_it(api: Api, hooked: Hooked) -> None:
    receiver = hooked.receiver
    username = await api.customer_with_order(deposit=5_000, paid=1_000)
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "ORD-1", "amount": 1_200, "reason": "changed my mind"},
                           role="cs")
    assert reply.status == 201, reply.text
    request_id = reply.json["id"]
    for step, body, role in (("approve", {"note": "ok"}, "finance"),
                             ("pay", {"payout_reference": "PO-77"}, "payer")):
        reply = await api.post(f"/v1/refund-requests/{request_id}/{step}", body, role=role)
        assert reply.status == 200, reply.text
    expected = ["deposit.recorded", "refund_request.requested", "refund_request.approved",
                "refund_request.paid"]
    await until(lambda: delivered_types(receiver, username) == expected, str(expected))
    paid = [g.message for g in receiver.of(username) if g.message["type"] == "refund_request.paid"]
    assert "PO-77" in paid[0]["customer_message"]
    assert paid[0]["request_id"] == request_id

    async def shown() -> Any:
        reply = await api.get(f"/v1/refund-requests/{request_id}", role="finance")
        messages = reply.json["messages"]
        return messages if len(messages) == 3 else None

    messages = await until_async(shown, "the request shows its messages")
    assert [m["type"] for m in messages] == expected[1:]


async def test_a_case_the_policy_refuses_tells_the_customer_why(
    api: Api, hooked: Hooked
) -> None:
    username = await api.customer_with_order()
    body = case_body(username, kind="damaged", evidence={})  # no photos: refused
    reply = await api.post("/v1/return-cases", body, role="cs")
    problem = assert_problem(reply, 422, "case_refused")
    expected = ["deposit.recorded", "return_case.refused"]
    await until(lambda: delivered_types(hooked.receiver, username) == expected, str(expected))
    refused = next(g.message for g in hooked.receiver.of(username)
               if g.message["type"] == "return_case.refused")
    assert refused["case_id"] == problem["case_id"]
    assert refused["details"]["reason"] == problem["reason"] == "missing_evidence"
    assert "ORD-1" in refused["customer_message"] and "photo" in refused["customer_message"]
    view = await api.case(problem["case_id"])
    assert [m["type"] for m in view["messages"]] == ["return_case.refused"]


async def test_a_receiver_failing_twice_gets_the_message_on_the_third_try(
    api: Api, hooked: Hooked
) -> None:
    receiver = hooked.receiver
    username = f"u-{uuid.uuid4().hex[:12]}"
    receiver.fail_first[username] = 2
    reply = await api.post("/v1/accounts", {"username": username, "currency": "EUR"})
    assert reply.status == 201, reply.text
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 1_234, "reference": "pay-3rd"})
    assert reply.status == 201, reply.text
    await until(lambda: delivered_types(receiver, username) == ["deposit.recorded"]
                and len(receiver.of(username)) == 3, "three tries of the deposit's message")
    tries = receiver.of(username)
    assert len({t.delivery_id for t in tries}) == 1
    assert all(t.signature_ok for t in tries)
    assert "12.34 EUR" in tries[0].message["customer_message"]

    async def delivered() -> Any:
        reply = await api.get("/v1/outbox?status=delivered&limit=1000", role="auditor")
        assert reply.status == 200, reply.text
        return [m for m in reply.json["items"] if m["username"] == username]

    shown = await until_async(delivered, "the outbox shows it delivered")
    delivery = shown[0]["deliveries"][0]
    assert delivery["attempts"] == 3 and delivery["status"] == "delivered"


async def test_a_receiver_down_for_a_while_gets_everything_in_order_per_customer(
    api: Api, hooked: Hooked
) -> None:
    receiver = hooked.receiver
    receiver.down()
    try:
        users = [await api.open_account() for _ in range(3)]
        for n in range(4):
            for username in users:
                reply = await api.post(f"/v1/accounts/{username}/deposits",
                                       {"amount": 100 + n, "reference": f"down-{n}"})
                assert reply.status == 201, reply.text

        async def tried() -> Any:
            reply = await api.get("/v1/outbox?status=waiting&limit=1000", role="finance")
            return [m for m in reply.json["items"] if m["username"] in users
                    and m["deliveries"] and m["deliveries"][0]["attempts"] >= 1]

        waiting = await until_async(tried, "deliveries tried while the receiver is down")
        assert all(m["deliveries"][0]["last_error"] for m in waiting)
        assert not any(receiver.of(u) for u in users)

        async def backlog() -> Any:
            reply = await api.get("/metrics", role="auditor")
            values = {line.split()[0]: float(line.split()[1]) for line in reply.text.splitlines()
                      if line.startswith("ledger_webhook_")}
            return (values.get("ledger_webhook_messages_waiting", 0) >= len(users)
                    and values.get("ledger_webhook_oldest_waiting_age_seconds", 0) > 0)

        await until_async(backlog, "the metrics show the messages waiting, and for how long")
    finally:
        # Back, but each customer's first message fails once more: it backs off while the
        # customer's later messages are due, which would overtake it but for the order kept.
        receiver.fail_once = lambda m: m["username"] in users and m["amount"] == 100
        receiver.up()
    for username in users:
        await until(lambda u=username: sum(g.status == 204 for g in receiver.of(u)) == 4,
                    f"{username}'s four deposits once the receiver is back")
        tries = receiver.of(username)
        assert [(g.message["amount"], g.status) for g in tries[:2]] == [(100, 500), (100, 204)]
        taken = [g.message["amount"] for g in tries if g.status == 204]
        assert taken == [100, 101, 102, 103]  # log order, each once: it got none while down


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_one_customers_backlog_behind_a_failing_message_holds_back_no_other_customer(
    kind: str, tmp_path: Path
) -> None:
    receiver = Receiver()
    stuck = f"u-{uuid.uuid4().hex[:12]}"
    receiver.always_fail.add(stuck)  # never taken: kept waiting (no parking within the test)
    try:
        with store(kind, tmp_path) as url:
            server = start_server(url, tmp_path, env={
                "LEDGER_WEBHOOK_URL": receiver.url, "LEDGER_WEBHOOK_SECRET": SECRET,
                "LEDGER_WEBHOOK_POLL_S": "0.05", "LEDGER_WEBHOOK_BACKOFF_BASE_S": "0.05",
                "LEDGER_WEBHOOK_BACKOFF_MAX_S": "0.2"})
            try:
                async with aiohttp.ClientSession(base_url=server.base_url) as session:
                    api = Api(session)
                    reply = await api.post("/v1/accounts", {"username": stuck, "currency": "USD"})
                    assert reply.status == 201, reply.text
                    # More waiting than the 200 messages a round once looked at.
                    for n in range(205):
                        reply = await api.post(f"/v1/accounts/{stuck}/deposits",
                                               {"amount": n + 1, "reference": f"stuck-{n}"})
                        assert reply.status == 201, reply.text
                    await until(lambda: len(receiver.of(stuck)) >= 2,
                                "the stuck customer's first message tried and tried again")
                    other = await api.funded_account(100)
                    await until(lambda: delivered_types(receiver, other) == ["deposit.recorded"],
                                "the other customer's deposit, past the stuck backlog")
            finally:
                server.stop()
    finally:
        receiver.close()
    tries = receiver.of(stuck)
    # Only the stuck customer's first message was ever tried: nothing of theirs overtook it.
    assert {t.message["amount"] for t in tries} == {1}
    assert len({t.delivery_id for t in tries}) == 1


async def test_a_message_sent_again_carries_the_same_id(api: Api, hooked: Hooked) -> None:
    receiver = hooked.receiver
    username = await api.funded_account(700)
    await until(lambda: len(receiver.of(username)) == 1, "the deposit's message")
    first = receiver.of(username)[0]
    # A crash between sending and marking: the operator (or the next leader) sends it again.
    env = {**os.environ, "LEDGER_DATABASE_URL": hooked.server.database_url}
    # Run where its receiver is not configured, it promises nothing, and says why
    unaware = subprocess.run([*ledger_command(), "webhooks", "redeliver", first.delivery_id],
                             cwd=hooked.workdir, env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    assert unaware.returncode == 1
    assert "not in LEDGER_WEBHOOK_URL here" in unaware.stderr
    env["LEDGER_WEBHOOK_URL"] = receiver.url  # as the servers have it
    done = subprocess.run([*ledger_command(), "webhooks", "redeliver", first.delivery_id],
                          cwd=hooked.workdir, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    await until(lambda: len(receiver.of(username)) == 2, "the message again")
    again = receiver.of(username)[1]
    assert again.delivery_id == first.delivery_id
    assert again.message == first.message
    assert again.signature_ok


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_crash_between_sending_and_marking_sends_it_again_with_the_same_id(
    kind: str, tmp_path: Path
) -> None:
    receiver = Receiver()
    try:
        with store(kind, tmp_path) as url:
            first = hooked_server(url, tmp_path, receiver)
            try:
                # The sender dies as the receiver takes the message: sent, never marked.
                receiver.on_message = lambda message: first.process.kill()
                async with aiohttp.ClientSession(base_url=first.base_url) as session:
                    username = await Api(session).funded_account(900)
                await until(lambda: receiver.of(username), "the message, as the sender dies")
                receiver.on_message = None
                first.process.wait(30)
            finally:
                first.stop()
            second = hooked_server(url, tmp_path, receiver)  # the next process keeps the books
            try:
                await until(lambda: len(receiver.of(username)) == 2, "the message again")
            finally:
                second.stop()
    finally:
        receiver.close()
    once, again = receiver.of(username)
    assert once.delivery_id == again.delivery_id == once.message["id"]
    assert once.message == again.message
    assert once.signature_ok and again.signature_ok


async def test_a_message_never_taken_is_parked_failed_and_shown(
    api: Api, hooked: Hooked
) -> None:
    receiver = hooked.receiver
    username = f"u-{uuid.uuid4().hex[:12]}"
    receiver.always_fail.add(username)
    reply = await api.post("/v1/accounts", {"username": username, "currency": "USD"})
    assert reply.status == 201, reply.text
    reply = await api.post(f"/v1/accounts/{username}/deposits",
                           {"amount": 50, "reference": "never-taken"})
    assert reply.status == 201, reply.text

    async def failed() -> Any:
        reply = await api.get("/v1/outbox?status=failed&limit=1000", role="finance")
        assert reply.status == 200, reply.text
        return [m for m in reply.json["items"] if m["username"] == username]

    parked = await until_async(failed, "the message parked failed", timeout_s=MAX_AGE_S + WAIT_S)
    delivery = parked[0]["deliveries"][0]
    assert delivery["status"] == "failed" and delivery["attempts"] >= 2
    assert delivery["last_error"] == "answered 500"
    assert receiver.of(username) and len(receiver.of(username)) == delivery["attempts"]
    reply = await api.get("/metrics", role="auditor")
    assert "ledger_webhook_failures_total" in reply.text
    failures = [line for line in reply.text.splitlines()
                if line.startswith("ledger_webhook_failures_total")]
    assert float(failures[0].split()[-1]) >= 1
    reply = await api.get("/v1/outbox?status=failed", role="cs")
    assert reply.status == 403


async def test_a_message_inserted_into_the_outbox_by_sql_is_never_signed_nor_sent(
    api: Api, hooked: Hooked
) -> None:
    receiver = hooked.receiver
    # Given a message INSERTed into the outbox by someone with the database's password but not
    # the chain key: the shop's words to a customer, at the position of their account's opening
    # (which makes no message), after every message the keeper made
    victim = f"u-{uuid.uuid4().hex[:12]}"
    reply = await api.post("/v1/accounts", {"username": victim, "currency": "USD"})
    assert reply.status == 201, reply.text
    position = reply.json["position"]
    view = open_view(store_settings(hooked.server.database_url), OutboxProjection, pool_size=1)
    try:
        forged = str(uuid.uuid4())
        outbox.execute(view, "INSERT INTO ob_messages (id, position, type, username, currency,"
                             " amount, case_id, request_id, order_no, customer_message, details,"
                             " created_at) VALUES (%(id)s, %(p)s, 'refund_request.paid', %(u)s,"
                             " 'USD', 5000000, NULL, NULL, NULL, %(text)s, '{}', %(at)s)",
                       {"id": forged, "p": position, "u": victim, "at": "2026-12-05T10:00:00Z",
                        "text": "Your refund of 50,000.00 USD was paid: confirm at evil.example"})
    finally:
        view.datastore.close()

    async def parked() -> Any:
        reply = await api.get("/v1/outbox?status=failed&limit=1000", role="finance")
        assert reply.status == 200, reply.text
        return [m for m in reply.json["items"] if m["id"] == forged]

    # Then the deliverer parks it failed, saying why, and never sends it
    (shown,) = await until_async(parked, "the forged message parked")
    assert [d["last_error"] for d in shown["deliveries"]] == [
        "not sent: its seal does not hold (written behind the service's back)"
    ]
    assert receiver.of(victim) == []
    assert f"webhook message {forged} at position {position} has no valid seal" in (
        hooked.server.log()
    )
    # and the messages the keeper makes go on being sent, the customer's own included
    reply = await api.post(f"/v1/accounts/{victim}/deposits", {"amount": 300, "reference": "P-1"})
    assert reply.status == 201, reply.text
    await until(lambda: receiver.of(victim), "the customer's deposit message after it")
    assert [got.message["type"] for got in receiver.of(victim)] == ["deposit.recorded"]


async def test_writes_keep_answering_while_the_receiver_hangs(api: Api, hooked: Hooked) -> None:
    receiver = hooked.receiver
    stuck = [f"u-{uuid.uuid4().hex[:12]}" for _ in range(20)]
    receiver.hang.update(stuck)
    for username in stuck:  # enough customers to take every delivery slot, hanging
        reply = await api.post("/v1/accounts", {"username": username, "currency": "USD"})
        assert reply.status == 201, reply.text
        reply = await api.post(f"/v1/accounts/{username}/deposits",
                               {"amount": 1, "reference": "hang"})
        assert reply.status == 201, reply.text
    await until(lambda: sum(bool(receiver.of(u)) for u in stuck) >= 8,
                "the receiver holding deliveries open")
    username = await api.open_account()
    slowest = 0.0
    for n in range(20):
        started = time.monotonic()
        reply = await api.post(f"/v1/accounts/{username}/deposits",
                               {"amount": 10, "reference": f"while-hung-{n}"})
        slowest = max(slowest, time.monotonic() - started)
        assert reply.status == 201, reply.text
    # Each hung POST holds a slot for TIMEOUT_S: a write waiting on delivery would take it.
    assert slowest < TIMEOUT_S, f"a write took {slowest:.2f} s while the receiver hung"
    assert (await api.account(username))["posted"] == 200
    receiver.hang.difference_update(stuck)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_two_urls_and_a_subscription_added_by_the_cli_each_get_every_message(
    kind: str, tmp_path: Path
) -> None:
    first, second, added = Receiver(), Receiver(), Receiver()
    receivers = (first, second, added)
    try:
        with store(kind, tmp_path) as url:
            server = start_server(url, tmp_path, env={
                "LEDGER_WEBHOOK_URL": f"{first.url}, {second.url}",
                "LEDGER_WEBHOOK_SECRET": SECRET, "LEDGER_WEBHOOK_POLL_S": "0.05"})
            try:
                env = {**os.environ, "LEDGER_DATABASE_URL": server.database_url}
                done = subprocess.run([*ledger_command(), "webhooks", "add", added.url],
                                      cwd=tmp_path, env=env, capture_output=True, text=True,
                                      timeout=60, check=False)
                assert done.returncode == 0, done.stderr
                async with aiohttp.ClientSession(base_url=server.base_url) as session:
                    api = Api(session)
                    username = await api.funded_account(500)
                    reply = await api.post(f"/v1/accounts/{username}/deposits",
                                           {"amount": 250, "reference": "second-payment"})
                    assert reply.status == 201, reply.text
                for receiver in receivers:
                    await until(lambda r=receiver: len(r.of(username)) == 2,
                                "both messages at each receiver")
            finally:
                server.stop()
    finally:
        for receiver in receivers:
            receiver.close()
    got = [[(g.delivery_id, g.message["amount"]) for g in r.of(username)] for r in receivers]
    assert got[0] == got[1] == got[2]
    assert [amount for _, amount in got[0]] == [500, 250]
    assert all(g.signature_ok and g.delivery_id == g.message["id"]
               for r in receivers for g in r.of(username))


def test_subscriptions_are_added_listed_and_removed(hooked: Hooked) -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": hooked.server.database_url}

    def ledger(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ledger_command(), "webhooks", *args], cwd=hooked.workdir,
                              env=env, capture_output=True, text=True, timeout=60, check=False)

    url = f"https://user:pw@mailer.example/hooks/{uuid.uuid4().hex[:6]}?key=k"
    added = ledger("add", url)
    assert added.returncode == 0, added.stderr
    listed = ledger("list")
    assert listed.returncode == 0, listed.stderr
    assert url.split("@")[1].split("?")[0] in listed.stdout
    assert "pw" not in listed.stdout and "key=k" not in listed.stdout
    assert ledger("remove", url).returncode == 0
    assert url.split("@")[1].split("?")[0] not in ledger("list").stdout
    assert ledger("remove", url).returncode == 1
    assert ledger("add", "ftp://nowhere").returncode == 2
    assert ledger("redeliver", str(uuid.uuid4())).returncode == 1


@pytest.mark.parametrize(("variable", "value"), [
    ("LEDGER_WEBHOOK_URL", "ftp://mailer.example/hook"),
    ("LEDGER_WEBHOOK_MAX_AGE_S", "a while"),
    ("LEDGER_WEBHOOK_CONCURRENCY", "0"),
])
def test_serve_refuses_a_bad_webhook_setting_in_one_line(
    variable: str, value: str, tmp_path: Path
) -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db",
           "LEDGER_TOKENS": tokens_env(), variable: value}
    done = subprocess.run([*ledger_command(), "serve", "--port", str(free_port())],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert variable in done.stderr
    assert "Traceback" not in done.stderr


# -- a subscriber URL's secrets ----------------------------------------------------------------

PASSWORD, TOKEN = "hookpass-SECRET", "qtoken-SECRET"


def secret_url(host_and_port: str, scheme: str = "http") -> str:
    """A subscriber URL with a password and a query token, as a mailer's might have."""
    return f"{scheme}://hookuser:{PASSWORD}@{host_and_port}/h?token={TOKEN}"


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text and TOKEN not in text, text


BAD_URLS = {
    "no host": secret_url(""),
    "a port out of range": secret_url("127.0.0.1:99999"),
    "not http": secret_url("mailer.example", scheme="ftp"),
    "a malformed IPv6 host": secret_url("[::1"),
    "a space": secret_url("mailer.example") + " x",
    "a control character": secret_url("mailer.example") + "\x7f",
}


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_serve_refuses_a_bad_webhook_url_without_repeating_its_secrets(
    url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db",
           "LEDGER_TOKENS": tokens_env(), "LEDGER_WEBHOOK_URL": url,
           "LEDGER_WEBHOOK_SECRET": SECRET}
    try:
        done = subprocess.run([*ledger_command(), "serve", "--port", str(free_port())],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=WAIT_S, check=False)
    except subprocess.TimeoutExpired as running:
        pytest.fail(f"ledger serve started with a webhook URL it cannot send to: {running}")
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert "LEDGER_WEBHOOK_URL" in done.stderr and "cannot receive webhooks" in done.stderr
    assert "Traceback" not in said
    assert_no_secret(said)


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_webhooks_add_refuses_a_bad_url_without_repeating_its_secrets(
    url: str, hooked: Hooked
) -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": hooked.server.database_url}
    added = subprocess.run([*ledger_command(), "webhooks", "add", url], cwd=hooked.workdir,
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    said = added.stdout + added.stderr
    assert added.returncode == 2, said
    assert "cannot receive webhooks" in added.stderr and "Traceback" not in said
    assert_no_secret(said)
    listed = subprocess.run([*ledger_command(), "webhooks", "list"], cwd=hooked.workdir,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0 and "hookuser" not in listed.stdout, listed.stdout


class NotHttp(socketserver.ThreadingTCPServer):
    """A receiver on 127.0.0.1 that answers every request with bytes that are not HTTP."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Garbage)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(10)


class _Garbage(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5)
        self.request.recv(64 * 1024)
        self.request.sendall(b"not an HTTP answer\r\n\r\n")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_failed_delivery_is_stored_shown_and_logged_without_the_urls_secrets(
    kind: str, tmp_path: Path
) -> None:
    # Given two subscribers whose URLs carry a password and a query token: one answering bytes
    # that are not HTTP (the HTTP client's error repeats the URL it asked), one not listening
    garbage = NotHttp()
    answering, closed = secret_url(f"127.0.0.1:{garbage.port}"), secret_url(
        f"127.0.0.1:{free_port()}")
    try:
        with store(kind, tmp_path) as url:
            server = start_server(url, tmp_path, env={
                "LEDGER_WEBHOOK_URL": f"{answering},{closed}", "LEDGER_WEBHOOK_SECRET": SECRET,
                "LEDGER_WEBHOOK_MAX_AGE_S": "0.5", "LEDGER_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
                "LEDGER_WEBHOOK_BACKOFF_BASE_S": "0.05", "LEDGER_WEBHOOK_BACKOFF_MAX_S": "0.1",
                "LEDGER_WEBHOOK_POLL_S": "0.05"})
            try:
                async with aiohttp.ClientSession(base_url=server.base_url) as session:
                    api = Api(session)
                    # When a message to both is tried until it is parked failed
                    username = await api.funded_account(700)

                    async def parked() -> Any:
                        reply = await api.get("/v1/outbox?status=failed&limit=1000",
                                              role="auditor")
                        assert reply.status == 200, reply.text
                        mine = [m for m in reply.json["items"] if m["username"] == username]
                        done = mine and all(d["status"] == "failed"
                                            for d in mine[0]["deliveries"])
                        return reply.text if done and len(mine[0]["deliveries"]) == 2 else None

                    shown = await until_async(parked, "both deliveries parked failed")
                await until(lambda: server.log().count("parked failed") >= 2,
                            "the two WARNING lines of the deliveries parked")
            finally:
                server.stop()
            log = server.log()
    finally:
        garbage.close()
    # Then what each met is told, without the URL's password or query token
    deliveries = {d["subscriber"]: d for m in json.loads(shown)["items"]
                  if m["username"] == username for d in m["deliveries"]}
    assert set(deliveries) == {f"http://127.0.0.1:{garbage.port}/h",
                               closed.replace(f"hookuser:{PASSWORD}@", "").split("?")[0]}
    errors = [d["last_error"] for d in deliveries.values()]
    assert any(e.startswith("ClientResponseError") for e in errors), errors
    assert any(e.startswith("ClientConnectorError") for e in errors), errors
    assert_no_secret(shown)
    # nor in the log, the WARNING lines of the deliveries parked included
    assert_no_secret(log)


async def test_a_subscription_made_before_urls_were_checked_is_shown_without_secrets_not_sent_to(
    api: Api, hooked: Hooked
) -> None:
    # Given a refund request, and a subscription from before subscriber URLs were checked, its
    # port out of range, whose delivery of the request's message failed saying the whole URL
    username = await api.customer_with_order(deposit=5_000, paid=1_000)
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "ORD-1", "amount": 500}, role="cs")
    assert reply.status == 201, reply.text
    request_id = reply.json["id"]
    reply = await api.get(f"/v1/refund-requests/{request_id}", role="finance")
    assert reply.status == 200, reply.text
    (message,) = reply.json["messages"]
    bad = secret_url("127.0.0.1:99999")
    view = open_view(store_settings(hooked.server.database_url), OutboxProjection, pool_size=1)
    try:
        outbox.subscribe(view, bad, since=outbox.last_position(view),
                         added_at="2026-12-05T10:00:00Z", key=session_key())
        outbox.execute(view, "INSERT INTO ob_deliveries (message_id, subscriber, position,"
                             " username, status, attempts, next_at, delivered_at, last_error)"
                             " VALUES (%(m)s, %(s)s, %(p)s, %(u)s, 'failed', 1, 0, NULL, %(e)s)",
                       {"m": message["id"], "s": bad, "p": message["position"], "u": username,
                        "e": f"InvalidUrlClientError: {bad}"})
        # When finance reads the request and the outbox
        reply = await api.get(f"/v1/refund-requests/{request_id}", role="finance")
        listed = await api.get("/v1/outbox?status=failed&limit=1000", role="finance")
        # Then both answer, showing the subscriber and what it met without the URL's secrets
        assert reply.status == 200, reply.text
        assert listed.status == 200, listed.text
        # (beside the delivery to the module's own receiver, if its deliverer got there first)
        [delivery] = [d for d in reply.json["messages"][0]["deliveries"]
                      if d["subscriber"] != outbox.shown_url(hooked.receiver.url)]
        assert delivery["subscriber"] == outbox.INVALID_URL_SHOWN
        assert delivery["last_error"].startswith("InvalidUrlClientError: ")
        assert_no_secret(reply.text)
        assert_no_secret(listed.text)
        # and the deliverer sends it nothing, saying why once, without its secrets either
        await until(lambda: "is not sent to: its port is not a number" in hooked.server.log(),
                    "the deliverer's warning of the subscription it cannot send to")
        assert_no_secret(hooked.server.log())
    finally:
        outbox.unsubscribe(view, bad)
        view.datastore.close()


def session_key() -> ChainKey:
    """The chain key the tests' servers seal with (``LEDGER_CHAIN_KEY_FILE``)."""
    return read_key(Path(os.environ["LEDGER_CHAIN_KEY_FILE"]))


async def test_a_subscription_inserted_by_sql_is_sent_nothing_until_the_key_holder_adds_it(
    api: Api, hooked: Hooked
) -> None:
    # Given someone with the database's password but not the service's key, who subscribes a
    # receiver of theirs by SQL to every customer's messages since the beginning
    thief = Receiver()
    env = {**os.environ, "LEDGER_DATABASE_URL": hooked.server.database_url}

    def ledger(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ledger_command(), "webhooks", *args], cwd=hooked.workdir,
                              env=env, capture_output=True, text=True, timeout=60, check=False)

    view = open_view(store_settings(hooked.server.database_url), OutboxProjection, pool_size=1)
    try:
        outbox.execute(view, "INSERT INTO ob_subscriptions (url, since, added_at)"
                             " VALUES (%(url)s, 0, '2026-12-05T10:00:00Z')", {"url": thief.url})
        # When a customer is told something
        username = await api.funded_account(700)
        # Then the service's own receiver has it, the thief nothing; the log says why, once,
        # and the operator's list marks the row
        await until(lambda: hooked.receiver.of(username), "the message at the receiver")
        await until(lambda: f"the subscription {thief.url} is not sealed" in hooked.server.log(),
                    "the deliverer's ERROR line naming the unsealed subscription")
        assert thief.got == []
        listed = ledger("list")
        assert listed.returncode == 0, listed.stderr
        assert "NOT SEALED" in listed.stdout.split(thief.url)[1].splitlines()[0]
        # and the auditors' verify names it
        named = f"webhook subscription {thief.url} is not sealed"
        report = await api.get("/v1/audit/verify", role="auditor")
        assert report.status == 200, report.text
        assert report.json["ok"] is False
        assert [p for p in report.json["problems"] if p.startswith(named)], report.json
        # and once the key's holder adds it (theirs after all), it is sent what comes next
        added = ledger("add", thief.url)
        assert added.returncode == 0, added.stderr
        assert "NOT SEALED" not in ledger("list").stdout
        report = await api.get("/v1/audit/verify", role="auditor")
        assert not [p for p in report.json["problems"] if p.startswith(named)], report.json
        later = await api.funded_account(800)
        await until(lambda: thief.of(later), "the next message at the receiver now added")
        assert thief.of(username) == []  # only the messages after it was added
        assert hooked.server.log().count(f"the subscription {thief.url} is not sealed") == 1
    finally:
        outbox.unsubscribe(view, thief.url)
        view.datastore.close()
        thief.close()


def test_a_url_that_cannot_be_read_is_shown_as_such_never_an_error() -> None:
    for url in (secret_url("127.0.0.1:99999"), secret_url("[::1"), secret_url("[zz]")):
        assert outbox.shown_url(url) == outbox.INVALID_URL_SHOWN
    assert outbox.shown_url(secret_url("[::1]:8080")) == "http://[::1]:8080/h"
