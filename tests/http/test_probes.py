"""Probes for load balancers and Prometheus: /health, /ready and /metrics answer GET and HEAD
without a token; with LEDGER_OPS_PORT they are served on that port only; /ready says why it
is not ready."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.http.conftest import Api, Server, assert_problem, free_port, start_server

PROBES = ("/health", "/ready", "/metrics")


def ask(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.mark.parametrize("path", PROBES)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_the_probes_answer_without_a_token(api: Api, path: str, method: str) -> None:
    reply = await api.call(method, path, role=None)
    assert reply.status == 200, reply.text
    if method == "HEAD":
        assert reply.text == ""
    assert "WWW-Authenticate" not in reply.headers


async def test_ready_says_how_far_the_read_models_are(api: Api) -> None:
    reply = await api.get("/ready", role=None)
    assert reply.status == 200
    assert reply.json["status"] == "ready"


async def test_the_rest_still_needs_a_token(api: Api) -> None:
    for path in ("/openapi.json", "/v1/accounts", "/docs"):
        assert_problem(await api.get(path, role=None), 401, "unauthorized")


@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    workdir = tmp_path_factory.mktemp("ops")
    ops_port = free_port()
    server = start_server(f"sqlite:///{workdir}/ledger.db", workdir,
                          env={"LEDGER_OPS_PORT": str(ops_port)},
                          health_port=ops_port)
    try:
        yield server, ops_port
    finally:
        server.stop()


@pytest.mark.parametrize("path", PROBES)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_with_an_operations_port_the_probes_are_served_there(
    ops_server: tuple[Server, int], path: str, method: str
) -> None:
    server, ops_port = ops_server
    status, _, body = ask(f"http://127.0.0.1:{ops_port}{path}", method)
    assert status == 200
    if path == "/ready" and method == "GET":
        assert json.loads(body)["status"] == "ready"
    # ... and not on the public port
    status, _, _ = ask(f"{server.base_url}{path}", method)
    assert status == 404


def test_the_operations_port_serves_nothing_else(ops_server: tuple[Server, int]) -> None:
    server, ops_port = ops_server
    status, headers, body = ask(f"http://127.0.0.1:{ops_port}/openapi.json")
    assert status == 404
    assert headers["Content-Type"].startswith("application/problem+json")
    assert json.loads(body)["code"] == "not_found"
    # The API itself answers on the public port
    status, _, _ = ask(f"{server.base_url}/v1/accounts")
    assert status == 401

# /ready's 503 not_ready when the store does not answer: tests/http/test_failures.py.
