"""The logs (``api.logs``): JSON lines by default, one access line per request with who, what
and how it went; text on demand; the level; bad settings refused at start."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api import logs
from tests.http.conftest import (
    TOKENS,
    Api,
    Server,
    free_port,
    ledger_command,
    start_server,
    tokens_env,
    until,
)


def json_lines(server: Server) -> list[dict[str, Any]]:
    found = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def access_lines(server: Server, request_id: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(server)
            if line["logger"] == logs.ACCESS_LOGGER and line.get("request_id") == request_id]


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("logs")
    server = start_server(f"sqlite:///{workdir}/ledger.db", workdir,
                          env={"LEDGER_LOG_FORMAT": None, "LEDGER_LOG_LEVEL": None})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def json_api(json_server: Server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(base_url=json_server.base_url) as session:
        yield Api(session)


async def test_every_line_is_json_by_default(json_server: Server, json_api: Api) -> None:
    await json_api.get("/health", role=None)
    lines = json_server.log().splitlines()
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record)


async def test_the_access_line_says_who_did_what_and_how_it_went(
    json_server: Server, json_api: Api
) -> None:
    username = await json_api.open_account()
    reply = await json_api.post(f"/v1/accounts/{username}/deposits",
                                {"amount": 700, "reference": "log-1"},
                                headers={"X-Request-Id": "log-test-deposit"})
    assert reply.status == 201, reply.text
    await until(lambda: bool(access_lines(json_server, "log-test-deposit")), "the access line")

    [line] = access_lines(json_server, "log-test-deposit")
    assert line["level"] == "INFO"
    assert line["person"].startswith("system:") and len(line["person"]) == len("system:") + 8
    assert line["role"] == "system"
    assert line["method"] == "POST"
    assert line["route"] == "/v1/accounts/{username}/deposits"  # the template, no user name
    assert line["status"] == 201
    assert line["problem"] is None
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert username not in json.dumps(line)
    assert TOKENS["system"] not in json_server.log()


async def test_a_refusal_logs_its_problem_code(json_server: Server, json_api: Api) -> None:
    reply = await json_api.post("/v1/accounts/nobody-at-all/deposits",
                                {"amount": 1, "reference": "x"},
                                headers={"X-Request-Id": "log-test-refusal"})
    assert reply.status == 404
    await until(lambda: bool(access_lines(json_server, "log-test-refusal")), "the access line")
    [line] = access_lines(json_server, "log-test-refusal")
    assert (line["status"], line["problem"]) == (404, "not_found")

    reply = await json_api.get("/v1/accounts", role="system",
                               headers={"X-Request-Id": "log-test-forbidden"})
    assert reply.status == 403
    await until(lambda: bool(access_lines(json_server, "log-test-forbidden")), "the line")
    [line] = access_lines(json_server, "log-test-forbidden")
    assert (line["role"], line["problem"], line["route"]) == ("system", "forbidden",
                                                              "/v1/accounts")

    reply = await json_api.get("/v1/accounts", role=None, token="wrong-token-0123456789",
                               headers={"X-Request-Id": "log-test-unknown"})
    assert reply.status == 401
    await until(lambda: bool(access_lines(json_server, "log-test-unknown")), "the line")
    [line] = access_lines(json_server, "log-test-unknown")
    assert (line["person"], line["role"], line["problem"]) == (None, None, "unauthorized")
    assert "wrong-token-0123456789" not in json_server.log()


def test_text_lines_on_demand_with_the_same_fields(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path}/ledger.db", tmp_path,
                          env={"LEDGER_LOG_FORMAT": "text"})
    try:
        # The access line of start_server's /health is written once its answer is sent.
        deadline = time.monotonic() + 10
        while "route=/health" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        log = server.log()
    finally:
        server.stop()
    assert "INFO api.cli: serving on" in log
    assert "route=/health" in log and "status=200" in log  # start_server asked /health
    assert not any(line.startswith("{") for line in log.splitlines())


def test_the_level_leaves_out_the_lines_below_it(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path}/ledger.db", tmp_path,
                          env={"LEDGER_LOG_LEVEL": "WARNING"})
    try:
        log = server.log()
    finally:
        server.stop()
    assert '"level": "INFO"' not in log
    assert "serving on" not in log


@pytest.mark.parametrize("name,value,said", [
    ("LEDGER_LOG_FORMAT", "xml", "LEDGER_LOG_FORMAT is one of json, text, not 'xml'"),
    ("LEDGER_LOG_LEVEL", "chatty", "LEDGER_LOG_LEVEL is one of DEBUG, INFO, WARNING, ERROR"),
])
def test_a_bad_log_setting_is_refused_at_start(tmp_path: Path, name: str, value: str,
                                               said: str) -> None:
    result = subprocess.run(
        [*ledger_command(), "serve", "--port", str(free_port())], cwd=tmp_path,
        env={**os.environ, "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/l.db",
             "LEDGER_TOKENS": tokens_env(), name: value},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert said in result.stderr


def test_the_json_formatter_keeps_a_stack_in_one_line() -> None:
    formatter = logs.JsonFormatter()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("here",), exc_info=sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed here" and "RuntimeError: boom" in parsed["exception"]
