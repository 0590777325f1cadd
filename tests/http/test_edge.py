"""The edge (``api.edge``): malformed requests, slow clients, content codings, the banner and
the headers every answer carries, out-of-range numbers and times."""

from __future__ import annotations

import gzip
import json
import os
import resource
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.http.conftest import (
    START_TIMEOUT_S,
    TOKENS,
    Api,
    Server,
    assert_problem,
    free_port,
    ledger_command,
    tokens_env,
)

SECRET = "leak-me-not-5f1e9a7c3b2d4e6f"
DESCRIPTOR_LIMIT = 256
SLOW_CLIENTS = 300
# Long enough that the slow clients are all still open while /health is asked (a server
# without the cap stops accepting them at its descriptor limit: connections, /health's too,
# wait in the kernel's queue).
HEADER_TIMEOUT_S = 5.0


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTOR_LIMIT, DESCRIPTOR_LIMIT))


def launch(workdir: Path, env: Mapping[str, str], *, limited: bool = False) -> Server:
    """``ledger serve`` on an SQLite store in ``workdir`` (optionally under a descriptor limit),
    once /health answers."""
    port = free_port()
    url = f"sqlite:///{workdir}/ledger.db"
    full_env = {**os.environ, "LEDGER_DATABASE_URL": url, "LEDGER_TOKENS": tokens_env(), **env}
    log_path = workdir / f"serve-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [*ledger_command(), "serve", "--port", str(port)], cwd=workdir, env=full_env,
            stdout=log_file, stderr=subprocess.STDOUT,
            preexec_fn=_limit_descriptors if limited else None,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, url)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ledger serve exited with {process.returncode}:\n{server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    pytest.fail(f"ledger serve did not start:\n{server.log()}")


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("edge")
    server = launch(workdir, {"LEDGER_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
                              "LEDGER_LOG_FORMAT": "text"}, limited=True)
    try:
        yield server
    finally:
        server.stop()


def port_of(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def raw_exchange(server: Server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def health_within(server: Server, seconds: float) -> int:
    with urllib.request.urlopen(f"{server.base_url}/health", timeout=seconds) as answer:
        return int(answer.status)


def evicted(server: Server) -> float:
    """How many connections the server closed to stay under its cap (its own gauge)."""
    with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith("ledger_http_connections_evicted "):
            return float(line.split()[1])
    raise AssertionError(f"no ledger_http_connections_evicted on /metrics:\n{text}")


MALFORMED = [
    b"GET /health HTTP/1.1\r\nAuthorization: Bearer " + SECRET.encode() + b"\x01\r\n\r\n",
    b"GET /he\x00alth HTTP/1.1\r\nAuthorization: Bearer " + SECRET.encode() + b"\r\n\r\n",
    b"GET /v1/accounts HTTP/1.1\r\nAuthorization: Bearer " + SECRET.encode()
    + b"\r\nContent-Length: x\r\n\r\n",
    b"POST /v1/accounts HTTP/1.1\r\nAuthorization: Bearer " + SECRET.encode()
    + b"\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
]


@pytest.mark.parametrize("request_bytes", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_request_gets_a_short_problem_and_leaves_no_token_in_the_logs(
    edge_server: Server, request_bytes: bytes
) -> None:
    answer = raw_exchange(edge_server, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0]
    assert b"content-type: application/problem+json" in head.lower()
    problem = json.loads(body)
    assert problem["status"] == 400 and problem["code"] == "bad_request"
    assert SECRET.encode() not in answer
    log = edge_server.log()
    assert "malformed request from 127.0.0.1 refused with 400" in log
    assert SECRET not in log
    assert "Traceback" not in log


def test_slow_clients_do_not_stop_health_and_are_closed_at_the_header_deadline(
    edge_server: Server,
) -> None:
    port = port_of(edge_server)
    evicted_before = evicted(edge_server)
    slow: list[socket.socket] = []
    try:
        for number in range(SLOW_CLIENTS):
            # Within a second: the kernel queues every handshake of the burst for the server's
            # accepts (a handshake dropped from a full queue waits a second for its retry).
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            except TimeoutError:
                pytest.fail(f"slow client {number} waited a second for its handshake: the "
                            "listen queue overflowed")
            slow.append(connection)
            try:  # a head never ended
                connection.sendall(f"GET /health HTTP/1.1\r\nX-Slow: {number}\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                pass  # already evicted by a newer connection
        opened = time.monotonic()
        # /health answers within a second while the 300 are open (the server has 256
        # descriptors), again and again.
        for _ in range(5):
            try:
                assert health_within(edge_server, 1.0) == 200
            except (TimeoutError, urllib.error.URLError) as error:  # urllib wraps a timeout
                pytest.fail(f"/health failed or did not answer within 1 s ({error}):\n"
                            f"{edge_server.log()[-3000:]}")
        # Each slow connection is closed by the server: at the header deadline, or earlier
        # when a newer connection needed its place under the cap.
        for connection in slow:
            connection.settimeout(HEADER_TIMEOUT_S + 10)
            try:
                assert connection.recv(1024) == b""
            except ConnectionResetError:
                pass
        assert time.monotonic() - opened < HEADER_TIMEOUT_S + 10
        assert health_within(edge_server, 1.0) == 200
        # The server made room under its cap by closing the oldest heads, not by refusing to
        # accept: 300 heads beyond 256 descriptors cannot all have waited for the deadline.
        assert evicted(edge_server) > evicted_before
        assert "Too many open files" not in edge_server.log()
    finally:
        for connection in slow:
            connection.close()


def test_a_client_dribbling_header_lines_is_closed_once_the_deadline_passed(
    edge_server: Server,
) -> None:
    with socket.create_connection(("127.0.0.1", port_of(edge_server)), timeout=5) as connection:
        started = time.monotonic()
        connection.sendall(b"GET /health HTTP/1.1\r\n")
        closed_at = None
        for number in range(100):
            connection.settimeout(0.25)
            try:
                connection.sendall(f"X-Line-{number}: still here\r\n".encode())
                if connection.recv(1024) == b"":
                    closed_at = time.monotonic()
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic()
                break
        assert closed_at is not None, "the server kept a dribbling client beyond 25 s"
        # Sending lines never extends the deadline: closed at it (within the timer's slack).
        assert HEADER_TIMEOUT_S - 0.1 <= closed_at - started <= HEADER_TIMEOUT_S + 2.0


# A client that sends requests and never reads: its answers (the console's script, 34 KB, no
# token needed) fill the socket's buffers, the server's included, within the first few.
PIPELINED_ASKS = 200
STALL_CAP = 4
STALL_TIMEOUT_S = 2.0


def slow_reader(port: int) -> socket.socket:
    connection = socket.socket()
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.connect(("127.0.0.1", port))
    connection.setblocking(False)
    try:
        connection.send(b"GET /console/console.js HTTP/1.1\r\nHost: ledger\r\n\r\n"
                        * PIPELINED_ASKS)
    except BlockingIOError:
        pass  # what did not fit is never sent: the server has asks enough
    return connection


def test_clients_that_never_read_their_answers_are_closed_and_do_not_lock_health_out(
    tmp_path: Path,
) -> None:
    server = launch(tmp_path, {"LEDGER_MAX_CONNECTIONS": str(STALL_CAP),
                               "LEDGER_HEADER_TIMEOUT_S": str(STALL_TIMEOUT_S),
                               "LEDGER_LOG_FORMAT": "text"})
    readers: list[socket.socket] = []
    try:
        # Every place under the cap taken by a connection whose answers are not read.
        readers = [slow_reader(port_of(server)) for _ in range(STALL_CAP)]
        stalled = "took none of its answer for 2 s"
        deadline = time.monotonic() + STALL_TIMEOUT_S + 20
        while server.log().count(stalled) < STALL_CAP:
            assert time.monotonic() < deadline, (
                f"the slow readers were not closed at the answer deadline:\n{server.log()[-3000:]}")
            time.sleep(0.1)
        assert health_within(server, 1.0) == 200
        for connection in readers:  # dropped by the server: no longer open at its end
            connection.setblocking(True)
            connection.settimeout(5)
            taken = 0
            try:
                for _ in range(PIPELINED_ASKS * 10):  # bounded: each read takes >= 1 byte
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    taken += len(chunk)
            except ConnectionResetError:
                pass
            assert taken < PIPELINED_ASKS * 34_000, "a slow reader was sent every answer"
    finally:
        for connection in readers:
            connection.close()
        server.stop()


def test_the_header_deadline_is_at_most_ten_seconds(tmp_path: Path) -> None:
    result = subprocess.run(
        [*ledger_command(), "serve", "--port", str(free_port())], cwd=tmp_path,
        env={**os.environ, "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/l.db",
             "LEDGER_TOKENS": tokens_env(), "LEDGER_HEADER_TIMEOUT_S": "30"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "LEDGER_HEADER_TIMEOUT_S is in (0, 10] seconds" in result.stderr


# -- content codings, numbers and times, headers (through the shared servers) ---------------------


async def test_a_gzip_body_that_is_not_gzip_is_400(api: Api) -> None:
    username = await api.open_account()
    reply = await api.post(f"/v1/accounts/{username}/deposits", data=b'{"amount": 1}',
                           headers={"Content-Type": "application/json",
                                    "Content-Encoding": "gzip"})
    assert_problem(reply, 400, "bad_content_encoding")


def test_a_body_that_is_not_its_coding_is_answered_and_closed_not_logged_as_a_fault(
    edge_server: Server,
) -> None:
    # Given a client sending a body that says gzip and is not
    body = b'{"amount": 1, "reference": "not-gzip"}'
    asked = (b"POST /v1/accounts/nobody/deposits HTTP/1.1\r\nHost: ledger\r\n"
             b"Authorization: Bearer " + TOKENS["system"].encode() + b"\r\n"
             b"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    before = len(edge_server.log())
    # When it is answered (the server closing the connection: the rest cannot be read)
    answer = raw_exchange(edge_server, asked)
    # Then 400 bad_content_encoding, and nothing in the log an operator must look at: anyone
    # could fill the error log with tracebacks by sending it again and again
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b'"bad_content_encoding"' in answer
    assert b"Connection: close" in answer
    said = edge_server.log()[before:]
    assert "Unhandled exception" not in said and "Traceback" not in said, said


async def test_a_real_gzip_body_is_read(api: Api) -> None:
    username = await api.open_account()
    body = gzip.compress(json.dumps({"amount": 500, "reference": "gz-1"}).encode())
    reply = await api.post(f"/v1/accounts/{username}/deposits", data=body,
                           headers={"Content-Type": "application/json",
                                    "Content-Encoding": "gzip"})
    assert reply.status == 201, reply.text
    assert (await api.account(username))["posted"] == 500


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, rot13"])
async def test_a_content_coding_the_service_cannot_decode_is_415(api: Api, coding: str
                                                                 ) -> None:
    username = await api.open_account()
    reply = await api.post(f"/v1/accounts/{username}/deposits", data=b'{"amount": 1}',
                           headers={"Content-Type": "application/json",
                                    "Content-Encoding": coding})
    assert_problem(reply, 415, "unsupported_media_type")
    assert reply.headers["Accept-Encoding"] == "gzip, deflate"
    assert "Brotli" not in reply.text


async def test_a_4301_digit_integer_is_422_in_words(api: Api) -> None:
    username = await api.open_account()
    text = '{"amount": ' + "9" * 4301 + ', "reference": "huge"}'
    reply = await api.post(f"/v1/accounts/{username}/deposits", data=text,
                           headers={"Content-Type": "application/json"})
    problem = assert_problem(reply, 422, "validation_error")
    message = problem["errors"][0]["message"]
    assert "4,301 digits" in message
    assert "sys." not in reply.text and "set_int_max_str_digits" not in reply.text


@pytest.mark.parametrize("as_of", [
    "0999-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59", "9999-12-31T23:59:59Z",
])
async def test_times_out_of_the_ledgers_range_are_422(api: Api, as_of: str) -> None:
    username = await api.open_account()
    reply = await api.get(
        f"/v1/accounts/{username}/balance?as_of={as_of.replace('+', '%2B')}")
    problem = assert_problem(reply, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["as_of"]


@pytest.mark.parametrize("path,role", [
    ("/health", None), ("/v1/accounts", "cs"), ("/v1/accounts/nobody-here", "system"),
    ("/openapi.json", "auditor"),
])
async def test_answers_carry_no_banner_no_store_and_nosniff(api: Api, path: str,
                                                            role: str | None) -> None:
    reply = await api.get(path, role=role)
    assert "Server" not in reply.headers
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_balance_is_not_cached(api: Api) -> None:
    username = await api.open_account()
    reply = await api.get(f"/v1/accounts/{username}/balance", role="system")
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "no-store"
    assert "Server" not in reply.headers


def test_tokens_are_not_echoed(edge_server: Server) -> None:
    request = urllib.request.Request(f"{edge_server.base_url}/v1/accounts/nobody",
                                     headers={"Authorization": f"Bearer {SECRET}"})
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as error:
        assert error.code == 401
        assert SECRET.encode() not in error.read()
    assert SECRET not in edge_server.log()
    assert TOKENS["system"] not in edge_server.log()


# -- a case's notes are bounded and its steps paged ------------------------------------------------


async def test_a_case_view_gives_its_steps_a_page_at_a_time(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    for number in range(5):
        reply = await api.post(f"/v1/return-cases/{case['id']}/notes",
                               {"text": f"progress {number}"}, role="cs")
        assert reply.status == 201, reply.text
    whole = await api.case(case["id"])
    assert len(whole["steps"]) == 6 and whole["steps_next"] is None

    pages: list[dict[str, Any]] = []
    after = None
    while True:
        query = "steps_limit=2" + ("" if after is None else f"&steps_after={after}")
        reply = await api.get(f"/v1/return-cases/{case['id']}?{query}", role="cs")
        assert reply.status == 200, reply.text
        assert len(reply.json["steps"]) <= 2
        pages.append(reply.json)
        after = reply.json["steps_next"]
        if after is None:
            break
    assert [step for page in pages for step in page["steps"]] == whole["steps"]
    assert len(pages) == 3
    # Every page has the whole case's facts and evidence
    assert all(page["evidence"] == whole["evidence"] for page in pages)
    assert all(page["state"] == whole["state"] for page in pages)


async def test_a_case_view_refuses_an_unbounded_page_of_steps(api: Api) -> None:
    username = await api.customer_with_order()
    case = await api.open_case(username)
    reply = await api.get(f"/v1/return-cases/{case['id']}?steps_limit=100000", role="cs")
    problem = assert_problem(reply, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["steps_limit"]


async def test_a_case_takes_a_bounded_number_of_notes(api: Api) -> None:
    from ledger.return_case import MAX_NOTES_PER_CASE

    username = await api.customer_with_order()
    case = await api.open_case(username)
    path = f"/v1/return-cases/{case['id']}/notes"
    for number in range(MAX_NOTES_PER_CASE):
        reply = await api.post(path, {"text": f"note {number}"}, role="cs")
        assert reply.status == 201, reply.text
    reply = await api.post(path, {"text": "one too many"}, role="cs")
    problem = assert_problem(reply, 409, "notes_full")
    assert f"holds {MAX_NOTES_PER_CASE} notes" in problem["detail"]
    # The default view is a bounded page; the rest follows with steps_next
    view = await api.case(case["id"])
    assert len(view["steps"]) == 100 and view["steps_next"] == "100"


# -- Expect: 100-continue ------------------------------------------------------------------------


def expect_continue(server: Server, path: str, length: int, token: str | None,
                    body: bytes = b"") -> tuple[list[str], bytes]:
    """Headers with ``Expect: 100-continue``, then the server's answer: every status line it
    sent, and the final answer's body. ``body`` is sent only once the server said ``100
    Continue``; a server waiting for the body before answering leaves ``recv`` to time out."""
    auth = "" if token is None else f"Authorization: Bearer {token}\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: ledger\r\nContent-Type: application/json\r\n"
            f"{auth}Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n").encode()
    statuses: list[str] = []
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=5) as connection:
        connection.sendall(head)
        received = b""
        while True:
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(65536)
                assert chunk, f"the server closed before answering: {received!r}"
                received += chunk
            answer_head, received = received.split(b"\r\n\r\n", 1)
            lines = answer_head.decode().split("\r\n")
            statuses.append(lines[0])
            if lines[0] != "HTTP/1.1 100 Continue":
                break
            connection.sendall(body)
        size = next(int(line.split(":")[1]) for line in lines
                    if line.lower().startswith("content-length:"))
        while len(received) < size:
            received += connection.recv(65536)
    return statuses, received


async def test_an_expected_body_over_the_limit_is_refused_413_before_it_is_sent(
    api: Api, server: Server
) -> None:
    username = await api.funded_account(1_000)
    before = await api.state(username)
    statuses, body = expect_continue(server, f"/v1/accounts/{username}/deposits",
                                     10 * 1024 * 1024, TOKENS["system"])
    # No 100 Continue: the client is told at once, and never sends the 10 MiB.
    assert statuses == ["HTTP/1.1 413 Request Entity Too Large"]
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (413, "too_large")
    assert problem["detail"] == ("the body is 10,485,760 bytes: the most a request may send is "
                                 "65,536 bytes (64 KiB)")
    assert await api.state(username) == before


async def test_an_expected_body_without_a_token_is_refused_before_it_is_sent(
    api: Api, server: Server
) -> None:
    username = await api.open_account()
    statuses, _ = expect_continue(server, f"/v1/accounts/{username}/deposits", 40, None)
    assert statuses == ["HTTP/1.1 401 Unauthorized"]


async def test_an_expected_body_the_service_takes_is_asked_for_with_100_continue(
    api: Api, server: Server
) -> None:
    username = await api.open_account()
    body = json.dumps({"amount": 250, "reference": "expect-1"}).encode()
    statuses, _ = expect_continue(server, f"/v1/accounts/{username}/deposits", len(body),
                                  TOKENS["system"], body)
    assert statuses == ["HTTP/1.1 100 Continue", "HTTP/1.1 201 Created"]
    assert (await api.account(username))["posted"] == 250
