"""Bounds: every wait, line, page and body has one, and passing it is a documented answer.

- Requests beyond a lane's line for workers are 503 ``busy`` with ``Retry-After`` at once,
  and so are those that wait too long in it; no request is answered later than the request
  deadline (503 ``deadline_exceeded``), and a write handed to the store by then still
  completes: the same request with the same ``Idempotency-Key`` tells the client its outcome.
  A client whose body is still arriving at the deadline is answered 408, and nothing was done.
  (How lanes and roles share the workers: ``test_lanes.py``.)
- A hot account under a server with tiny retry and lock bounds answers only 201, 422 and 503
  with ``Retry-After``, never 500, each request within the stated deadline, and the money
  still adds up.
- Pages over 1000 items and bodies over 64 KiB are refused on every route that has them.

The line and the deadline are shown in-process with a read side that blocks on cue (the
``read_models`` seam of ``create_app``), in a read lane of one worker, and a write that waits at
a gate before the ledger executes it; each step waits on the admission's own counts of requests
holding and waiting (never on a sleep, never measuring how long an answer took): a request
refused by its wait in line was seen in the line and left it without a slot, and one cut off by
the deadline is answered while its job still holds its slot. The hot account runs against real
``ledger serve`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import Tokens
from api.keys import ADMISSION, LEDGER
from api.limits import ANONYMOUS, Admission, Lane, LaneLimits, Limits
from api.routes import ROUTES
from ledger.settings import StoreSettings
from tests.conftest import store_settings
from tests.http.conftest import (
    TOKENS,
    Api,
    Server,
    assert_problem,
    ledger_command,
    start_server,
    store,
    tokens_env,
    until,
)
from tests.http.test_failures import IdleKeeper

AUTH = {"Authorization": f"Bearer {TOKENS['auditor']}"}
SYSTEM = {"Authorization": f"Bearer {TOKENS['system']}"}
BLOCK_S = 10.0  # how long a blocked fake waits at most: far beyond every bound under test


class BlockingReadSide:
    """A read side whose ``account`` blocks until ``release`` is set (at most BLOCK_S)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def wait_current(self, timeout_s: float = 5.0) -> int:
        return 0

    def one_snapshot(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def account(self, username: str) -> dict[str, Any]:
        self.entered.release()
        self.release.wait(BLOCK_S)
        return {"username": username, "currency": "USD", "posted": 0, "held": 0,
                "available": 0, "refundable": 0, "opened_at": "2026-01-01T00:00:00+00:00",
                "version": 1}

    def status(self) -> dict[str, Any]:
        return {"log_position": 0, "read_models": {}, "lag": 0, "lag_seconds": 0.0}

    def close(self) -> None:
        self.release.set()


@pytest.fixture
async def blocking(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], BlockingReadSide]]:
    read_side = BlockingReadSide()

    def read_models(settings: StoreSettings, app: Any) -> Any:
        return read_side

    # The reads' lane has one worker and a line of two, which one role may fill.
    app = create_app(
        store_settings(f"sqlite:///{tmp_path}/ledger.db"), Tokens.parse(tokens_env()),
        executor_workers=3,
        limits=Limits(request_deadline_s=1.0, max_waiting=2, queue_wait_s=0.5,
                      read=LaneLimits(workers=1, role_waiting=2)),
        read_models=read_models, keeper=lambda settings: IdleKeeper(),
    )
    async with TestClient(TestServer(app)) as client:
        try:
            yield client, read_side
        finally:
            read_side.release.set()


async def _answer(client: TestClient[Any, Any], path: str, headers: dict[str, str] = AUTH
                  ) -> tuple[int, dict[str, Any], str | None]:
    reply = await client.get(path, headers=headers)
    return reply.status, await reply.json(), reply.headers.get("Retry-After")


def _admission(client: TestClient[Any, Any]) -> Admission:
    admission: Admission = client.app[ADMISSION]
    return admission


async def test_a_request_beyond_the_line_for_workers_is_503_busy_at_once(
    blocking: tuple[TestClient[Any, Any], BlockingReadSide],
) -> None:
    client, read_side = blocking
    admission = _admission(client)
    holder = asyncio.create_task(_answer(client, "/v1/accounts/holder"))
    assert await asyncio.to_thread(read_side.entered.acquire, True, BLOCK_S)
    waiting = [asyncio.create_task(_answer(client, f"/v1/accounts/wait-{n}")) for n in range(2)]
    await until(lambda: admission.waiting(Lane.READ) == 2, "both are in line")
    # another role's request finds the line full, and is refused at once: it never joins the
    # line (that refusal would say "within 0.5 s")
    status, body, retry_after = await _answer(client, "/v1/accounts/one-too-many", SYSTEM)
    assert (status, body["code"], retry_after) == (503, "busy", "1")
    assert "the read lane is full" in body["detail"], body["detail"]
    assert (admission.holding(Lane.READ), admission.waiting(Lane.READ)) == (1, 2)
    read_side.release.set()
    assert [(await task)[0] for task in (holder, *waiting)] == [200, 200, 200]


async def test_a_request_that_waits_too_long_for_a_worker_is_503_busy(
    blocking: tuple[TestClient[Any, Any], BlockingReadSide],
) -> None:
    client, read_side = blocking
    admission = _admission(client)
    holder = asyncio.create_task(_answer(client, "/v1/accounts/holder"))
    assert await asyncio.to_thread(read_side.entered.acquire, True, BLOCK_S)
    in_line = asyncio.create_task(_answer(client, "/v1/accounts/in-line"))
    # it joins the line (it is not refused at once)...
    await until(lambda: admission.waiting(Lane.READ) == 1, "the request is in line")
    status, body, retry_after = await in_line
    # ...and is refused by its wait in line (0.5 s), not by the request deadline (1 s)
    assert (status, body["code"], retry_after) == (503, "busy", "1")
    assert "no worker of the read lane was free for the auditor role within 0.5 s" in (
        body["detail"]), body["detail"]
    # it left the line without a slot: the holder's job still holds the only one
    assert (admission.holding(Lane.READ), admission.waiting(Lane.READ)) == (1, 0)
    read_side.release.set()
    assert (await holder)[0] in (200, 503)


async def test_no_request_is_answered_later_than_its_deadline_and_its_job_still_ends(
    blocking: tuple[TestClient[Any, Any], BlockingReadSide],
) -> None:
    client, read_side = blocking
    admission = _admission(client)
    slow = asyncio.create_task(_answer(client, "/v1/accounts/slow"))
    assert await asyncio.to_thread(read_side.entered.acquire, True, BLOCK_S)  # its job runs
    status, body, retry_after = await slow
    assert (status, body["code"], retry_after) == (503, "deadline_exceeded", "1")
    assert "no answer within 1 s" in body["detail"], body["detail"]  # request_deadline_s
    assert "Idempotency-Key" in body["detail"]
    # Answered while its job still runs (its read blocks until released): the deadline answered
    # it, not the job's end. The job still holds the only worker...
    assert not read_side.release.is_set()
    assert admission.holding(Lane.READ) == 1
    # ...so the next request waits in line (and gives up)...
    following = asyncio.create_task(_answer(client, "/v1/accounts/next"))
    await until(lambda: admission.waiting(Lane.READ) == 1, "the next request is in line")
    status, body, _ = await following
    assert (status, body["code"]) == (503, "busy")
    assert admission.holding(Lane.READ) == 1
    # ...until the job ends and frees it.
    read_side.release.set()
    await until(lambda: admission.holding(Lane.READ) == 0, "the abandoned job freed its slot")
    status, body, _ = await _answer(client, "/v1/accounts/after")
    assert status == 200, body


class SlowStatusReadSide(BlockingReadSide):
    """A read side whose ``status`` (what /ready and /metrics look at) blocks until
    ``release`` is set, counting the looks; the rest of /metrics' facts answer at once."""

    def __init__(self) -> None:
        super().__init__()
        self.looks = 0

    def status(self) -> dict[str, Any]:
        self.looks += 1
        self.entered.release()
        self.release.wait(BLOCK_S)
        return super().status()

    def refund_request_totals(self, **filters: Any) -> list[dict[str, Any]]:
        return []

    def return_cases(self, **filters: Any) -> Any:
        return SimpleNamespace(items=[], next=None)


async def test_a_crowd_of_probes_without_a_token_shares_one_look_and_ready_still_answers(
    tmp_path: Path,
) -> None:
    read_side = SlowStatusReadSide()
    app = create_app(
        store_settings(f"sqlite:///{tmp_path}/ledger.db"), Tokens.parse(tokens_env()),
        executor_workers=4, limits=Limits(read=LaneLimits(workers=2)),
        read_models=lambda settings, app: read_side, keeper=lambda settings: IdleKeeper(),
    )
    async with TestClient(TestServer(app)) as client:
        admission = _admission(client)
        try:
            # Given a crowd of token-less scrapes and readiness probes while the store is slow
            crowd = [asyncio.create_task(client.get(path))
                     for _ in range(30) for path in ("/metrics", "/ready")]
            assert await asyncio.to_thread(read_side.entered.acquire, True, BLOCK_S)
            await until(lambda: admission.waiting(Lane.READ, ANONYMOUS) == 1,
                        "the other probe's look is in line")
            # then they hold one slot of the read lane, and one look waits for the next
            # (one per kind of probe): not a line of sixty
            assert admission.holding(Lane.READ, ANONYMOUS) == 1
            assert admission.waiting(Lane.READ) == 1
            # and once the store answers, every probe is answered from those two looks, none
            # refused for want of a slot (/ready answers what the notary's watch says of this
            # test's store, which the fake read side does not describe: not asked here)
            read_side.release.set()
            answers = [(path, await (await task).text(), (await task).status)
                       for task, path in zip(crowd, ["/metrics", "/ready"] * 30, strict=True)]
        finally:
            read_side.release.set()
        assert [status for path, _, status in answers if path == "/metrics"] == [200] * 30
        for path, text, status in answers:
            assert status == 200 or (path == "/ready" and "history is damaged" in text), text
        assert read_side.looks == 2
        assert (await client.get("/metrics")).status == 200
        assert read_side.looks == 3  # a probe asked after the looks ended looks again


async def test_a_client_that_stalls_its_body_is_answered_408_and_nothing_is_done(
    tmp_path: Path,
) -> None:
    app = create_app(store_settings(f"sqlite:///{tmp_path}/ledger.db"),
                     Tokens.parse(tokens_env()),
                     limits=Limits(request_deadline_s=1.0, queue_wait_s=0.5))
    async with TestClient(TestServer(app)) as client:
        username = f"stall-{uuid.uuid4().hex[:8]}"
        opened = await client.post("/v1/accounts", headers=SYSTEM,
                                   json={"username": username, "currency": "USD"})
        assert opened.status == 201, await opened.text()
        # Given a deposit whose headers promise 40 bytes of body, and only 5 of them sent...
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(
            f"POST /v1/accounts/{username}/deposits HTTP/1.1\r\nHost: ledger\r\n"
            f"Authorization: {SYSTEM['Authorization']}\r\nContent-Type: application/json\r\n"
            "Content-Length: 40\r\n\r\n".encode() + b'{"amo')
        await writer.drain()
        try:
            # ...when the request deadline (1 s) passes with the rest never sent...
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BLOCK_S)).decode()
            lines = head.split("\r\n")
            length = next(int(line.split(":")[1]) for line in lines
                          if line.lower().startswith("content-length:"))
            problem = json.loads(await reader.readexactly(length))
        finally:
            writer.close()
        # ...then the client is told it took too long to send (RFC 9110 408), not that the
        # service was unavailable (503), and the connection is not kept for its unread body...
        assert lines[0] == "HTTP/1.1 408 Request Timeout", head
        assert "Connection: close" in lines, head
        assert "Content-Type: application/problem+json" in lines, head
        assert (problem["status"], problem["code"]) == (408, "bad_request")
        assert "the body did not arrive within 1 s" in problem["detail"]
        # ...and nothing was deposited.
        account = await client.get(f"/v1/accounts/{username}", headers=SYSTEM)
        assert (await account.json())["posted"] == 0


async def test_a_write_cut_off_by_its_deadline_is_learnt_by_sending_it_again_with_its_key(
    tmp_path: Path,
) -> None:
    settings = store_settings(f"sqlite:///{tmp_path}/ledger.db")
    username, key = f"late-{uuid.uuid4().hex[:8]}", f"key-{uuid.uuid4().hex}"
    deposit = {"amount": 700, "reference": "pay-late"}
    app = create_app(settings, Tokens.parse(tokens_env()),
                     limits=Limits(request_deadline_s=1.0, queue_wait_s=0.5))
    async with TestClient(TestServer(app)) as client:
        admission = _admission(client)
        opened = await client.post("/v1/accounts", headers=SYSTEM,
                                   json={"username": username, "currency": "USD"})
        assert opened.status == 201, await opened.text()
        # Given the ledger holding every write at a gate until the test opens it
        ledger = client.app[LEDGER]
        execute, gate, entered = ledger.execute, threading.Event(), threading.Semaphore(0)

        def held_execute(*args: Any, **kwargs: Any) -> Any:
            entered.release()
            gate.wait(BLOCK_S)
            return execute(*args, **kwargs)

        ledger.execute = held_execute  # type: ignore[method-assign]
        try:
            # When a deposit's job is handed to the ledger and its deadline passes
            first = await client.post(f"/v1/accounts/{username}/deposits",
                                      headers={**SYSTEM, "Idempotency-Key": key}, json=deposit)
            assert await asyncio.to_thread(entered.acquire, True, BLOCK_S)
            # Then the client is told so while the write still holds its slot of the write lane
            assert first.status == 503
            assert first.headers["Retry-After"] == "1"
            assert (await first.json())["code"] == "deadline_exceeded"
            assert admission.holding(Lane.WRITE) == 1
        finally:
            gate.set()
            del ledger.execute
        # and the write completes once the ledger takes it
        await until(lambda: admission.holding(Lane.WRITE) == 0, "the cut-off write ended")
        # Sending it again with its key tells the client its outcome: done, exactly once
        again = await client.post(f"/v1/accounts/{username}/deposits",
                                  headers={**SYSTEM, "Idempotency-Key": key}, json=deposit)
        assert again.status == 201, await again.text()
        assert again.headers.get("Idempotent-Replayed") == "true"
        history = await (await client.get(f"/v1/accounts/{username}/history",
                                          headers=AUTH)).json()
        deposits = [i["amount"] for i in history["items"] if "eposit" in i["type"]]
        assert deposits == [700]  # exactly once


# -- a hot account under tiny retry and lock bounds, on real servers ---------------------------

HOT_DEADLINE_S = 5.0
TINY_BOUNDS = {"LEDGER_MAX_ATTEMPTS": "1", "LEDGER_LOCK_TIMEOUT_S": "0.001",
               "LEDGER_REQUEST_DEADLINE_S": str(HOT_DEADLINE_S),
               "LEDGER_MAX_WAITING_REQUESTS": "16", "LEDGER_QUEUE_WAIT_S": "1"}
PURCHASES = 240
PRICE = 100
FUNDS = 4 * PRICE
# the stated deadline, and the time it takes to send and read a small answer on a busy machine
MARGIN_S = 2.0


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def tight(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[list[Server]]:
    """Servers with tiny bounds on one store: two on PostgreSQL, so writers really race."""
    workdir = tmp_path_factory.mktemp(f"tight-{request.param}")
    with store(request.param, workdir) as url:
        servers = [start_server(url, workdir, env=TINY_BOUNDS)
                   for _ in range(2 if request.param == "postgres" else 1)]
        try:
            yield servers
        finally:
            for server in servers:
                server.stop()


async def test_a_hot_account_under_tiny_bounds_answers_201_422_or_503_within_the_deadline(
    tight: list[Server],
) -> None:
    username = f"hot-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        base = tight[0].base_url
        for path, body in ((f"{base}/v1/accounts", {"username": username, "currency": "USD"}),
                           (f"{base}/v1/accounts/{username}/deposits",
                            {"amount": FUNDS, "reference": "funds"})):
            async with session.post(path, json=body, headers=SYSTEM) as reply:
                assert reply.status == 201, await reply.text()

        async def buy(n: int) -> tuple[int, str | None, dict[str, Any], float]:
            server = tight[n % len(tight)]
            started = time.monotonic()
            async with session.post(
                f"{server.base_url}/v1/accounts/{username}/purchases",
                json={"order_no": f"hot-{n}", "amount": PRICE}, headers=SYSTEM,
            ) as reply:
                body = await reply.json(content_type=None)
                return (reply.status, reply.headers.get("Retry-After"), body,
                        time.monotonic() - started)

        answers = await asyncio.gather(*(buy(n) for n in range(PURCHASES)))
        async with session.get(f"{base}/v1/accounts/{username}/orders?limit=1000",
                               headers=AUTH) as reply:
            orders = (await reply.json())["items"]
        async with session.get(f"{base}/v1/accounts/{username}", headers=AUTH) as reply:
            account = await reply.json()

    statuses = Counter(status for status, _, _, _ in answers)
    assert set(statuses) <= {201, 422, 503}, statuses
    assert statuses[201] >= 1, statuses
    for status, retry_after, body, _ in answers:
        if status == 503:
            assert retry_after == "1", body
            assert body["code"] in ("busy", "store_unavailable", "deadline_exceeded"), body
        if status == 422:
            assert body["code"] == "insufficient_funds", body
    slowest_s = max(took for _, _, _, took in answers)
    assert slowest_s <= HOT_DEADLINE_S + MARGIN_S, f"{slowest_s:.2f} s; {statuses}"
    # Whatever was refused, the money adds up: every 201 is an order, paid from the funds.
    assert len(orders) == statuses[201]
    assert account["available"] == FUNDS - PRICE * statuses[201] >= 0
    for server in tight:
        assert "unexpected error" not in server.log()  # no 500 was logged either


# -- pages and bodies ---------------------------------------------------------------------------

PAGED = [route for route in ROUTES
         if route.query is not None and "limit" in route.query.model_fields]
WRITES = [route for route in ROUTES if route.body is not None]
SAMPLE = {"username": "someone-x", "id": "00000000-0000-4000-8000-000000000000",
          "order_no": "o", "name": "swagger-ui.css"}


def _path(template: str) -> str:
    return template.format(**SAMPLE)


@pytest.mark.parametrize("route", PAGED, ids=[r.path for r in PAGED])
async def test_a_page_over_1000_items_is_refused_on_every_paged_route(
    api: Api, route: Any
) -> None:
    path = _path(route.path)
    problem = assert_problem(await api.get(f"{path}?limit=1001", role="auditor"),
                             422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["limit"]
    at_most = await api.get(f"{path}?limit=1000", role="auditor")
    assert at_most.status != 422, at_most.text


async def test_who_am_i_refuses_a_parameter_it_does_not_know_as_every_read_does(api: Api
                                                                                ) -> None:
    problem = assert_problem(await api.get("/v1/me?zzz=1", role="cs"), 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["zzz"]


def test_every_list_of_the_contract_is_paged() -> None:
    assert {r.path for r in PAGED} >= {
        "/v1/accounts/{username}/history", "/v1/accounts/{username}/orders",
        "/v1/refund-requests", "/v1/return-cases", "/v1/events", "/v1/journal"}


@pytest.mark.parametrize("route", WRITES, ids=[r.path for r in WRITES])
async def test_a_body_over_64_kib_is_refused_on_every_write(api: Api, route: Any) -> None:
    role = next(r for r in ("system", "cs", "finance") if r in route.roles)
    body = b'{"note": "' + b"x" * (64 * 1024) + b'"}'
    reply = await api.call("POST", _path(route.path), role=role, data=body,
                           headers={"Content-Type": "application/json"})
    assert_problem(reply, 413, "too_large")


# -- the bounds are checked before the server starts ----------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("LEDGER_MAX_ATTEMPTS", "0"), ("LEDGER_MAX_ATTEMPTS", "1001"), ("LEDGER_MAX_ATTEMPTS", "x"),
    ("LEDGER_LOCK_TIMEOUT_S", "0"), ("LEDGER_LOCK_TIMEOUT_S", "-1"),
    ("LEDGER_REQUEST_DEADLINE_S", "0"), ("LEDGER_REQUEST_DEADLINE_S", "nan"),
    ("LEDGER_MAX_WAITING_REQUESTS", "-1"), ("LEDGER_QUEUE_WAIT_S", "99999"),
    ("LEDGER_HEAVY_WORKERS", "0"), ("LEDGER_WRITE_WORKERS", "9"),  # the pool has 8
    ("LEDGER_READ_ROLE_WORKERS", "3"),  # the read lane has 2
    ("LEDGER_WRITE_MAX_WAITING", "x"), ("LEDGER_HEAVY_QUEUE_WAIT_S", "31"),  # past the deadline
    ("LEDGER_READ_ROLE_WAITING", "257"),  # more than the line
])
def test_a_bound_out_of_range_refuses_to_start(tmp_path: Path, name: str, value: str) -> None:
    result = subprocess.run(
        [*ledger_command(), "serve", "--port", "1"], cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/l.db",
             "LEDGER_TOKENS": tokens_env(), name: value},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ledger serve:" in result.stderr
