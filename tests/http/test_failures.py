"""What the API answers when what it depends on fails: a read side that lags or breaks.

These run the real app in-process with a fake read side (``create_app``'s ``read_models`` and
``keeper`` seams): a real server cannot be made to fail on cue.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from eventsourcing.persistence import OperationalError

from api.app import create_app
from api.auth import Tokens
from ledger.application import LedgerApplication
from ledger.errors import NotReady
from ledger.settings import StoreSettings
from tests.conftest import store_settings
from tests.http.conftest import TOKENS, tokens_env

AUTH = {"Authorization": f"Bearer {TOKENS['auditor']}"}
ClientMaker = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


class BrokenReadSide:
    """Answers every query by raising ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name == "close":
            return lambda: None

        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail


class IdleKeeper:
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def nudge(self) -> None: ...


async def _client(aiohttp_client: ClientMaker, tmp_path: Path, error: Exception
                  ) -> TestClient[web.Request, web.Application]:
    def read_models(settings: StoreSettings, app: LedgerApplication) -> Any:
        return BrokenReadSide(error)

    app = create_app(
        store_settings(f"sqlite:///{tmp_path}/ledger.db"), Tokens.parse(tokens_env()),
        read_models=read_models, keeper=lambda settings: IdleKeeper(),
    )
    return await aiohttp_client(app)


async def test_an_unexpected_error_is_a_logged_500_without_its_stack_trace(
    aiohttp_client: ClientMaker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await _client(aiohttp_client, tmp_path, RuntimeError("secret internals"))
    reply = await client.get("/v1/accounts/someone", headers=AUTH)
    assert reply.status == 500
    assert reply.content_type == "application/problem+json"
    text = await reply.text()
    assert "secret internals" not in text and "Traceback" not in text
    body = await reply.json()
    assert body["code"] == "internal_error"
    assert body["request_id"] == reply.headers["X-Request-Id"]
    assert "secret internals" in caplog.text  # the log has what the answer leaves out


async def test_an_unexpected_error_is_logged_under_its_route_not_its_path(
    aiohttp_client: ClientMaker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The path carries a customer's name (and whatever a caller sends); logs name routes only.
    client = await _client(aiohttp_client, tmp_path, RuntimeError("boom"))
    reply = await client.get("/v1/accounts/maria.lopez", headers=AUTH)
    assert reply.status == 500
    line = next(r for r in caplog.records if r.getMessage().startswith("unexpected error"))
    assert line.getMessage().startswith("unexpected error in GET /v1/accounts/{username} ")
    assert "maria.lopez" not in caplog.text


async def test_read_models_that_cannot_catch_up_answer_503_not_ready(
    aiohttp_client: ClientMaker, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, NotReady("lagging"))
    reply = await client.get("/v1/accounts/someone", headers=AUTH)
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "1"
    assert (await reply.json())["code"] == "not_ready"


async def test_ready_says_not_ready_when_the_store_does_not_answer(
    aiohttp_client: ClientMaker, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path, OSError("connection refused"))
    reply = await client.get("/ready", headers=AUTH)
    assert reply.status == 503
    assert (await reply.json())["code"] == "not_ready"
    health = await client.get("/health")
    assert health.status == 200  # alive, though not ready


def test_more_executor_workers_than_pool_connections_are_refused(tmp_path: Path) -> None:
    settings = store_settings(f"sqlite:///{tmp_path}/ledger.db")
    with pytest.raises(ValueError, match="pool size"):
        create_app(settings, Tokens.parse(tokens_env()),
                   executor_workers=settings.pool_size + 1)


async def test_a_store_that_does_not_answer_is_503_with_retry_after(
    aiohttp_client: ClientMaker, tmp_path: Path
) -> None:
    client = await _client(aiohttp_client, tmp_path,
                           OperationalError("FATAL: sorry, too many clients already"))
    reply = await client.get("/v1/accounts/someone", headers=AUTH)
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "1"
    body = await reply.json()
    assert body["code"] == "store_unavailable"
    assert "too many clients" not in body["detail"]


async def test_a_verify_asked_while_one_runs_is_503_busy_and_the_first_is_answered(
    aiohttp_client: ClientMaker, tmp_path: Path
) -> None:
    started, release = threading.Event(), threading.Event()
    report = {"ok": True, "events_checked": 0, "first_bad_position": None, "problems": [],
              "damage": []}

    def slow_verifier(settings: StoreSettings, app: LedgerApplication) -> dict[str, Any]:
        started.set()
        release.wait(10)
        return report

    app = create_app(
        store_settings(f"sqlite:///{tmp_path}/ledger.db"), Tokens.parse(tokens_env()),
        read_models=lambda settings, app: BrokenReadSide(RuntimeError("unused")),
        keeper=lambda settings: IdleKeeper(), verifier=slow_verifier,
    )
    client = await aiohttp_client(app)
    first = asyncio.create_task(client.get("/v1/audit/verify", headers=AUTH))
    assert await asyncio.to_thread(started.wait, 10)

    second = await client.get("/v1/audit/verify", headers=AUTH)
    assert second.status == 503
    assert second.headers["Retry-After"] == "1"
    assert (await second.json())["code"] == "busy"
    # the running verify holds no worker of the request executor: /ready is still answered
    # (503 only because its fake read side fails)
    other = await client.get("/ready", headers=AUTH)
    assert (await other.json())["code"] == "not_ready"

    release.set()
    answered = await first
    assert answered.status == 200
    assert await answered.json() == report
    again = await client.get("/v1/audit/verify", headers=AUTH)
    assert again.status == 200
