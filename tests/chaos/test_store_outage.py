"""While PostgreSQL is down, the service answers at once that the store is unavailable, does
nothing, and takes writes again as soon as the store is back.

A store that refuses connections used to cost every request its pool's whole timeout: a write
waited out the request's deadline (503 ``deadline_exceeded``, "may still complete") while
holding its account's lock, so the next write to the account answered ``busy`` ten seconds
later, and the read-model keeper logged a traceback every second. Now the first refused
connection is said once in the log, and every request answers 503 ``store_unavailable`` at
once (``projections.pgpool.StoreOutage``), a WARNING line each no more."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.chaos.cluster import Cluster
from tests.http.conftest import TOKENS, Server, start_server

OUTAGE_SAID = "refuses connections"
BACK_SAID = "answers again"
WAIT_FOR_STATE_S = 60


def ask(server: Server, method: str, path: str, body: dict[str, object] | None = None,
        *, key: str | None = None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {TOKENS['system']}", "Content-Type": "application/json"}
    if body is not None:
        headers["Idempotency-Key"] = key or uuid.uuid4().hex
    request = urllib.request.Request(
        server.base_url + path, method=method, headers=headers,
        data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def wait_for_log(server: Server, words: str, after: int = 0) -> None:
    """Until the server's log (past ``after`` characters) says ``words``: a state, bounded."""
    deadline = time.monotonic() + WAIT_FOR_STATE_S
    while words not in server.log()[after:]:
        assert time.monotonic() < deadline, f"the log never said {words!r}:\n{server.log()}"
        time.sleep(0.05)


def test_while_the_store_is_down_every_request_is_refused_at_once_and_nothing_happens(
    scratch_cluster: Cluster, tmp_path: Path,
) -> None:
    # Given a server on a store of its own, and an account with a deposit
    scratch_cluster.ensure()
    scratch_cluster.create_database("ledger")
    server = start_server(scratch_cluster.url("ledger"), tmp_path,
                          env={"LEDGER_REQUEST_DEADLINE_S": "8"})
    try:
        assert ask(server, "POST", "/v1/accounts", {"username": "ann", "currency": "EUR"})[0] == 201
        assert ask(server, "POST", "/v1/accounts/ann/deposits",
                   {"amount": 1000, "reference": "before"})[0] == 201

        # When PostgreSQL stops, and the service has found it out
        scratch_cluster.stop()
        wait_for_log(server, OUTAGE_SAID)
        down = len(server.log())

        # Then every write and every read answers 503 store_unavailable (never "busy", never
        # "no answer within the deadline, it may still complete") with a Retry-After
        for n in range(3):
            for method, path, body in (
                ("POST", "/v1/accounts/ann/deposits", {"amount": 5, "reference": f"during-{n}"}),
                ("GET", "/v1/accounts/ann", None),
            ):
                status, problem = ask(server, method, path, body)
                assert (status, problem["code"]) == (503, "store_unavailable"), problem
                assert "try again" in str(problem["detail"])
        during = server.log()[down:]
        assert "Traceback" not in during  # said once, not once a second
        assert "the store did not answer" not in during  # nor once a request

        # When PostgreSQL is back
        scratch_cluster.ensure()
        wait_for_log(server, BACK_SAID, after=down)

        # Then a write is taken again, and the refused ones never happened
        key = uuid.uuid4().hex
        deadline = time.monotonic() + WAIT_FOR_STATE_S
        while (answer := ask(server, "POST", "/v1/accounts/ann/deposits",
                             {"amount": 1000, "reference": "after"}, key=key))[0] != 201:
            assert answer[0] == 503 and time.monotonic() < deadline, answer
            time.sleep(0.05)
        status, account = ask(server, "GET", "/v1/accounts/ann")
        while status != 200:  # the reads' own pool reconnects on its own schedule
            assert time.monotonic() < deadline, account
            time.sleep(0.05)
            status, account = ask(server, "GET", "/v1/accounts/ann")
        assert account["posted"] == 2000
    finally:
        server.stop()
