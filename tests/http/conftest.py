"""A real ``ledger serve`` process per store, and a small client for it.

One server per store (SQLite, PostgreSQL) serves each test module: starting one takes about a
second, so a module's tests share it and keep apart by using fresh user names. Not one for the
whole session: a server holds some 25-50 PostgreSQL connections, and the tests that start
servers of their own (several processes, start-up and shutdown) must not find the database's
100 connections taken.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import drop_pg_database, make_pg_database, pg_url

TOKENS = {
    "system": "system-test-token-1f2e3d",
    "cs": "cs-test-token-4c5b6a",
    "finance": "finance-test-token-7d8e9f",
    "auditor": "auditor-test-token-0a1b2c",
}
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def tokens_env(tokens: Mapping[str, str] = TOKENS) -> str:
    return ",".join(f"{role}:{token}" for role, token in tokens.items())


def ledger_command() -> list[str]:
    script = Path(sys.executable).with_name("ledger")
    if not script.exists():
        found = shutil.which("ledger")
        if found is None:
            pytest.fail("the ledger console script is not installed: run make install")
        script = Path(found)
    return [str(script)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str
    # Named staff added to this server's store (``add_person``): name -> token.
    people: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, a bounded wait, then SIGKILL. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        return self.process.returncode


def start_server(
    database_url: str, workdir: Path, *, env: Mapping[str, str | None] | None = None,
    health_port: int | None = None,
) -> Server:
    """``ledger serve`` on a free port in ``workdir``; returns once /health answers (on
    ``health_port`` when given: the operations port). In ``env``, None unsets a variable."""
    port = free_port()
    overrides = {"LEDGER_DATABASE_URL": database_url, "LEDGER_TOKENS": tokens_env(), **(env or {})}
    full_env = {k: v for k, v in {**os.environ, **overrides}.items() if v is not None}
    log_path = workdir / f"serve-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*ledger_command(), "serve", "--port", str(port)],
            cwd=workdir, env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, database_url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ledger serve exited with {process.returncode}:\n{server.log()}")
        try:
            probe = server.base_url if health_port is None else f"http://127.0.0.1:{health_port}"
            with urllib.request.urlopen(f"{probe}/health", timeout=1) as answer:
                if answer.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    server.stop()
    pytest.fail(f"ledger serve did not answer /health in {START_TIMEOUT_S} s:\n{server.log()}")


def cli_workdir() -> Path:
    """Where the tests run `ledger` commands not given a folder: beside the session's chain key,
    never the repository (a command's ./var/ files, the signing key among them, land there)."""
    folder = Path(os.environ["LEDGER_CHAIN_KEY_FILE"]).parent / "cli"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def add_person(server: Server, name: str, role: str,
               env: Mapping[str, str | None] | None = None) -> str:
    """``ledger staff add NAME --role ROLE`` on the server's store; returns the token once the
    server knows it (``GET /v1/me`` answers the person)."""
    overrides = {"LEDGER_DATABASE_URL": server.database_url, **(env or {})}
    full_env = {k: v for k, v in {**os.environ, **overrides}.items() if v is not None}
    added = subprocess.run(
        [*ledger_command(), "staff", "add", name, "--role", role, "--by", "tests"],
        cwd=server.log_path.parent, env=full_env, capture_output=True, text=True, timeout=60,
    )
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    server.people[name] = token
    wait_for_person(server, token, name)
    return token


def me(server: Server, token: str) -> tuple[int, dict[str, Any]]:
    """``GET /v1/me`` with ``token``: the status and the body."""
    asked = urllib.request.Request(f"{server.base_url}/v1/me",
                                   headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(asked, timeout=5) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, json.load(refused)


def wait_for_person(server: Server, token: str, name: str | None,
                    timeout_s: float = START_TIMEOUT_S) -> float:
    """Polls ``GET /v1/me`` until the token is ``name``'s (None: until it is refused, 401);
    returns the seconds it took."""
    started = time.monotonic()
    while True:
        status, body = me(server, token)
        if (status == 200 and body["person"] == name) if name else status == 401:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"the server never saw {name or 'the revocation'}: {status} {body}")
        time.sleep(0.02)


@contextmanager
def store(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh store's URL (the same kinds as the ``store_url`` fixture)."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir}/ledger.db"
        return
    name = make_pg_database()
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in a folder of its own, as each server it starts does: an app it makes in
    its own process (``create_app``) keeps its files under ``./var/`` as ``ledger serve`` does
    (the notary's checkpoint file and signing key), and one test's last checkpoint, signed as
    its app stopped, would be the next test's store's log cut short."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"serve-{request.param}")
    with store(request.param, workdir) as url:
        running = start_server(url, workdir)
        try:
            # Four eyes: a second finance person pays what the finance role token approved.
            add_person(running, "payer", "finance")
            yield running
        finally:
            running.stop()


@pytest.fixture(scope="module")
def spec(server: Server) -> dict[str, Any]:
    answer = urllib.request.Request(
        f"{server.base_url}/openapi.json",
        headers={"Authorization": f"Bearer {TOKENS['auditor']}"},
    )
    with urllib.request.urlopen(answer, timeout=10) as reply:
        document: dict[str, Any] = json.load(reply)
    return document


# -- the client ---------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()


class Api:
    """Calls the server as a role; ``json`` bodies are sent as application/json."""

    def __init__(self, session: aiohttp.ClientSession,
                 people: Mapping[str, str] | None = None) -> None:
        self.session = session
        # Named staff by name (``add_person``): ``role="payer"`` calls as that person.
        self.people = dict(people or {})

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = "system",
        json_body: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> Reply:
        all_headers = dict(headers or {})
        if token is None and role is not None:
            token = TOKENS[role] if role in TOKENS else self.people[role]
        if token is not None:
            all_headers.setdefault("Authorization", f"Bearer {token}")
        if json_body is not None:
            data = json.dumps(json_body)
            all_headers.setdefault("Content-Type", "application/json")
        async with self.session.request(method, path, data=data, headers=all_headers) as r:
            return Reply(r.status, r.headers, await r.text(errors="replace"))

    async def get(self, path: str, **options: Any) -> Reply:
        return await self.call("GET", path, **options)

    async def post(self, path: str, body: Any = None, **options: Any) -> Reply:
        return await self.call("POST", path, json_body=body, **options)

    # -- steps most tests take ------------------------------------------------------------------

    async def open_account(self, currency: str = "USD") -> str:
        username = f"u-{uuid.uuid4().hex[:12]}"
        reply = await self.post("/v1/accounts", {"username": username, "currency": currency})
        assert reply.status == 201, reply.text
        return username

    async def funded_account(self, amount: int) -> str:
        username = await self.open_account()
        reply = await self.post(f"/v1/accounts/{username}/deposits",
                                {"amount": amount, "reference": f"pay-{uuid.uuid4().hex[:8]}"})
        assert reply.status == 201, reply.text
        return username

    async def account(self, username: str) -> dict[str, Any]:
        reply = await self.get(f"/v1/accounts/{username}")
        assert reply.status == 200, reply.text
        document: dict[str, Any] = reply.json
        return document

    async def state(self, username: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The account and its whole history: what must not change after a refusal."""
        history = await self.get(f"/v1/accounts/{username}/history?limit=1000")
        assert history.status == 200, history.text
        return await self.account(username), history.json["items"]


    # -- return cases -----------------------------------------------------------------------------

    async def customer_with_order(self, *, deposit: int = 10_000, paid: int = 3_000,
                                  order_no: str = "ORD-1") -> str:
        username = await self.funded_account(deposit)
        reply = await self.post(f"/v1/accounts/{username}/purchases",
                                {"order_no": order_no, "amount": paid})
        assert reply.status == 201, reply.text
        return username

    async def open_case(self, username: str, order_no: str = "ORD-1", **changes: Any
                        ) -> dict[str, Any]:
        reply = await self.post("/v1/return-cases", case_body(username, order_no, **changes),
                                role="cs")
        assert reply.status == 201, reply.text
        case: dict[str, Any] = reply.json
        return case

    async def step(self, case_id: str, step: str, body: Any = None, *, status: int = 200
                   ) -> dict[str, Any]:
        reply = await self.post(f"/v1/return-cases/{case_id}/{step}",
                                {} if body is None else body, role="cs")
        assert reply.status == status, reply.text
        answer: dict[str, Any] = reply.json
        return answer

    async def walk(self, case_id: str, to: str) -> None:
        """Take a case from opened along the main path until it is in state ``to``."""
        for step, body, state in main_path():
            answer = await self.step(case_id, step, body)
            assert answer["state"] == state
            if state == to:
                return
        raise AssertionError(f"{to} is not on the main path")

    async def case(self, case_id: str, role: str = "cs") -> dict[str, Any]:
        reply = await self.get(f"/v1/return-cases/{case_id}", role=role)
        assert reply.status == 200, reply.text
        case: dict[str, Any] = reply.json
        return case


def today() -> date:
    """The server's date: it keeps the shop's calendar in UTC."""
    return datetime.now(UTC).date()


def days_from_today(days: int) -> str:
    return (today() + timedelta(days=days)).isoformat()


@dataclass(frozen=True)
class FromToday:
    """A date ``days`` from the day a test runs, in a test's parameters: written out when the
    test runs (``dated``), not when it is collected, since a run may cross midnight."""

    days: int


def dated(value: Any) -> Any:
    """``value`` with every ``FromToday`` in it written out as today's date moved by its days."""
    if isinstance(value, FromToday):
        return days_from_today(value.days)
    if isinstance(value, dict):
        return {key: dated(item) for key, item in value.items()}
    if isinstance(value, list):
        return [dated(item) for item in value]
    return value


def case_body(username: str, order_no: str = "ORD-1", **changes: Any) -> dict[str, Any]:
    """An application the policy accepts: defective goods, photos of both kinds."""
    body: dict[str, Any] = {
        "username": username,
        "order_no": order_no,
        "kind": "defective",
        "shipped_on": days_from_today(-10),
        "items": [{"sku": "SKU-1", "description": "an electric kettle", "quantity": 1}],
        "evidence": {"goods_photos": ["photo-goods-1"], "package_photos": ["photo-box-1"]},
        "conditions": {"replaced_or_modified": False, "parts_missing": False,
                       "opened_media": False, "has_quality_assurance": True},
        "note": "the kettle leaks",
    }
    body.update(changes)
    return body


def main_path() -> list[tuple[str, dict[str, Any], str]]:
    """The main path from opened, one step at a time: (step, body, the state after it)."""
    return [
        ("supplier-review", {"note": "asked the supplier"}, "supplier_review"),
        ("accept", {"return_by": days_from_today(14), "return_address": "Supplier Ltd, Dock 4",
                    "instructions": "original box if possible"}, "accepted"),
        ("ship-back", {"tracking": "TRK-BACK-1"}, "goods_in_transit"),
        ("receive", {"postmark_date": days_from_today(0), "goods": True,
                     "original_packaging": False, "acceptance_copy": True}, "received"),
        ("forward", {}, "with_supplier"),
    ]


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(base_url=server.base_url) as session:
        yield Api(session, server.people)


def assert_problem(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply.text
    assert reply.content_type == "application/problem+json"
    problem: dict[str, Any] = reply.json
    assert problem["status"] == status
    assert problem["code"] == code
    assert isinstance(problem["type"], str) and problem["type"]
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str)
    assert "Traceback" not in reply.text
    return problem


async def metric(api: Api, name: str) -> float:
    """The value of the unlabelled sample ``name`` on ``/metrics`` now."""
    reply = await api.get("/metrics", role="auditor")
    assert reply.status == 200, reply.text
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"no {name} on /metrics")


UNTIL_TIMEOUT_S = 10.0


async def until(condition: Callable[[], bool], what: str,
                timeout_s: float = UNTIL_TIMEOUT_S) -> None:
    """Wait until ``condition`` holds (a state the test watches, such as the admission's counts
    of requests holding and waiting), failing with ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"never happened within {timeout_s:g} s: {what}")
        await asyncio.sleep(0.005)
