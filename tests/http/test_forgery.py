"""History written behind the service's back is refused by the running service, on both stores.

Someone with the database's password but not the service's chain key INSERTs a well-formed
deposit of 5,000,000 on an existing account, as its next version. The service never uses it:
the balance does not show it, no purchase or refund can spend it, the read models stop before
it and ``/ready`` says where, the log served to auditors ends before it, and
``/v1/audit/verify`` and ``ledger verify`` name its position; ``ledger rebuild`` and ``ledger
export`` refuse to replay it. A staff event inserted, deleted or changed (given another topic)
lets no one named in again, before or after a restart; the role tokens still work.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.audit.conftest import Intruder
from tests.conftest import store_settings
from tests.http.conftest import (
    Api,
    Server,
    add_person,
    assert_problem,
    case_body,
    ledger_command,
    me,
    start_server,
    store,
    wait_for_person,
)

FORGED = 5_000_000


@pytest.fixture(params=["sqlite", "postgres"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[
    tuple[Server, Api]
]:
    with store(request.param, tmp_path) as url:
        server = start_server(url, tmp_path)
        try:
            async with aiohttp.ClientSession(base_url=server.base_url) as session:
                yield server, Api(session)
        finally:
            server.stop()


def deposit_position(api_reply_history: list[dict[str, object]]) -> int:
    (deposit,) = [item for item in api_reply_history if item["type"] == "deposit_received"]
    position = deposit["position"]
    assert isinstance(position, int)
    return position


async def test_a_deposit_inserted_by_sql_never_becomes_money(
    served: tuple[Server, Api], tmp_path: Path
) -> None:
    server, api = served
    # Given a customer with 1,000 deposited through the service
    username = await api.funded_account(1_000)
    _, history = await api.state(username)
    position = deposit_position(history)

    # When an intruder INSERTs a deposit of 5,000,000 as the account's next version
    intruder = Intruder(store_settings(server.database_url))
    forged = intruder.forge_deposit(position, FORGED, "FORGED-1")

    # Then nothing can spend it: purchases within or beyond the forged money are refused
    for amount in (500, FORGED):
        reply = await api.post(f"/v1/accounts/{username}/purchases",
                               {"order_no": f"ORD-{amount}", "amount": amount})
        problem = assert_problem(reply, 503, "not_ready")
        assert f"position {forged}" in problem["detail"]
    reply = await api.post(f"/v1/accounts/{username}/refund-requests",
                           {"order_no": "ORD-X", "amount": FORGED, "reason": "cash out"},
                           role="cs")
    assert reply.status == 503, reply.text

    # and the read side never shows it: the read models stop before it, and say why
    ready = await api.get("/ready", role="auditor")
    problem = assert_problem(ready, 503, "not_ready")
    assert f"position {forged}" in problem["detail"]
    balance = await api.get(f"/v1/accounts/{username}/balance")
    assert balance.status == 503, balance.text
    assert str(FORGED) not in balance.text
    # and the log served to auditors ends before it: the next page names it instead
    page = await api.get("/v1/events?limit=1000", role="auditor")
    assert page.status == 200, page.text
    assert [item["position"] for item in page.json["items"]] == list(range(1, forged))
    assert page.json["next"] == str(forged - 1)
    beyond = await api.get(f"/v1/events?after={page.json['next']}", role="auditor")
    problem = assert_problem(beyond, 503, "not_ready")
    assert f"position {forged}" in problem["detail"]

    # and the auditors' verify names it, over HTTP and on the command line
    report = await api.get("/v1/audit/verify", role="auditor")
    assert report.status == 200, report.text
    assert report.json["ok"] is False
    assert {"position": forged, "what": "unsealed"} in report.json["damage"]
    cli = run_ledger(server, tmp_path, "verify")
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"position {forged}" in cli.stdout
    assert "no seal" in cli.stdout
    assert "ERROR" in server.log() and f"position {forged}" in server.log()


async def test_no_rebuild_or_export_turns_a_deposit_inserted_by_sql_into_money(
    served: tuple[Server, Api], tmp_path: Path
) -> None:
    server, api = served
    # Given a deposit of 5,000,000 INSERTed by SQL, and no server keeping the read models (so a
    # rebuild replays the log up to its head itself)
    username = await api.funded_account(1_000)
    _, history = await api.state(username)
    forged = Intruder(store_settings(server.database_url)).forge_deposit(
        deposit_position(history), FORGED, "FORGED-1"
    )
    assert server.stop() == 0

    # When an operator rebuilds the read models, and an auditor exports the journal
    runs = {command[0]: run_ledger(server, tmp_path, *command)
            for command in (["rebuild"], ["export", "--format", "csv"])}

    # Then each refuses, naming the forged row, and nothing of it was made
    for command, run in runs.items():
        assert run.returncode == 1, f"{command}: {run.stdout}{run.stderr}"
        assert f"position {forged}: an event with no seal" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
        assert str(FORGED) not in run.stdout
    # and the read models the rebuild left are the ones before it, which stop short of the row
    restarted = start_server(server.database_url, tmp_path)
    try:
        async with aiohttp.ClientSession(base_url=restarted.base_url) as session:
            ready = await Api(session).get("/ready", role="auditor")
            problem = assert_problem(ready, 503, "not_ready")
            assert f"position {forged}" in problem["detail"]
    finally:
        assert restarted.stop() == 0


async def test_a_member_of_staff_inserted_by_sql_is_never_let_in(
    served: tuple[Server, Api], tmp_path: Path
) -> None:
    server, api = served
    username = await api.funded_account(1_000)
    # Given a member of staff added by the service, and one INSERTed by SQL as a copy of that
    # one's event: mallory, in the system role, with a token the intruder knows
    ann = add_person(server, "ann", "cs")
    intruder = Intruder(store_settings(server.database_url))
    (added,) = intruder.positions_of("ledger:Staff.StaffAdded")
    forged = intruder.forge_staff(added, "mallory", "system", "mallorys-own-token")

    # When the server's staff directory has read it (from then on it lets ann in no more: a row
    # the service did not seal could as well be one of its own, changed)
    wait_for_person(server, ann, None)

    # Then mallory's token is refused like any unknown token: no deposit can be made with it
    assert me(server, "mallorys-own-token")[0] == 401
    reply = await api.session.post(
        f"/v1/accounts/{username}/deposits", json={"amount": FORGED, "reference": "PAY-M"},
        headers={"Authorization": "Bearer mallorys-own-token"},
    )
    assert reply.status == 401
    # and the server names the forged event in an ERROR line; the role tokens still work
    assert f"history damaged at position {forged}: an event with no seal" in server.log()
    assert (await api.get("/v1/me", role="cs")).status == 200


@pytest.mark.parametrize("change", ["revoke", "rotate"])
async def test_a_staff_event_given_another_topic_lets_no_old_token_in_after_a_restart(
    served: tuple[Server, Api], tmp_path: Path, change: str
) -> None:
    server, _ = served
    # Given ann, whose token the service rotated or whom it revoked (her old token refused), and
    # bea, added after
    old = add_person(server, "ann", "cs")
    changed = run_ledger(server, tmp_path, "staff", change, "ann", "--by", "tests")
    assert changed.returncode == 0, changed.stderr
    wait_for_person(server, old, None)
    bea = add_person(server, "bea", "finance")
    topic = {"revoke": "ledger:Staff.StaffRevoked", "rotate": "ledger:Staff.TokenRotated"}[change]
    intruder = Intruder(store_settings(server.database_url))
    (position,) = intruder.positions_of(topic)

    # When an intruder gives that event another topic (guards off: the log keeps its rows, its
    # positions and every other seal), and the server starts again, reading its staff afresh
    intruder.set_topic(position, "ledger:Staff.Nothing")
    assert server.stop() == 0
    restarted = start_server(server.database_url, tmp_path)
    try:
        # Then ann's old token is not let in again, nor is anyone named, while the log holds
        # the changed event
        assert me(restarted, old)[0] == 401
        assert me(restarted, bea)[0] == 401
        async with aiohttp.ClientSession(base_url=restarted.base_url) as session:
            mine = Api(session)
            # but the configuration's role tokens still are
            assert (await mine.get("/v1/me", role="cs")).status == 200
            # and /ready and an ERROR line name the position
            problem = assert_problem(await mine.get("/ready", role="auditor"), 503, "not_ready")
            assert f"position {position}" in problem["detail"]
        assert (f"history damaged at position {position}: the seal does not match the event"
                in restarted.log())
    finally:
        assert restarted.stop() == 0


async def test_a_revocation_deleted_by_sql_lets_no_member_of_staff_in_after_a_restart(
    served: tuple[Server, Api], tmp_path: Path
) -> None:
    server, _ = served
    # Given ann, whose revocation the service recorded, and bea, added after it
    ann = add_person(server, "ann", "cs")
    revoked = run_ledger(server, tmp_path, "staff", "revoke", "ann", "--by", "tests")
    assert revoked.returncode == 0, revoked.stderr
    bea = add_person(server, "bea", "finance")
    assert me(server, ann)[0] == 401
    intruder = Intruder(store_settings(server.database_url))
    (revocation,) = intruder.positions_of("ledger:Staff.StaffRevoked")

    # When an intruder deletes the revocation with its seal (guards off; every event left
    # keeps a seal that holds), and the server starts again, reading its staff afresh
    intruder.delete_with_seal(revocation)
    assert server.stop() == 0
    restarted = start_server(server.database_url, tmp_path)
    try:
        # Then ann is not let back in, nor is anyone named while the log has a gap
        assert me(restarted, ann)[0] == 401
        assert me(restarted, bea)[0] == 401
        # but the configuration's role tokens still are (the operator is not locked out)
        async with aiohttp.ClientSession(base_url=restarted.base_url) as session:
            mine = Api(session)
            assert (await mine.get("/v1/me", role="cs")).status == 200
            # and /ready and an ERROR line name the position
            problem = assert_problem(await mine.get("/ready", role="auditor"), 503, "not_ready")
            assert f"position {revocation}" in problem["detail"]
        assert (f"history damaged at position {revocation}: a sealed event is gone"
                in restarted.log())
        # and the operator's staff list still shows who is on the staff, and says why
        listed = run_ledger(restarted, tmp_path, "staff", "list")
        assert listed.returncode == 0, listed.stderr
        assert f"position {revocation}: a sealed event is gone" in listed.stderr
        assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["ann", "bea"]
    finally:
        assert restarted.stop() == 0


def run_ledger(server: Server, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ledger ARGS`` on the server's store, as an operator runs it beside the server."""
    return subprocess.run(
        [*ledger_command(), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
        env={"LEDGER_DATABASE_URL": server.database_url, "PATH": "/usr/bin:/bin",
             "LEDGER_CHAIN_KEY_FILE": os.environ["LEDGER_CHAIN_KEY_FILE"]},
        check=False,
    )


async def test_a_key_record_deleted_by_sql_credits_nothing_twice(
    served: tuple[Server, Api],
) -> None:
    server, api = served
    # Given a partial failure credited under a key (it has no natural key of its own)
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "F-1", "amount": 400})
    credit = (f"/v1/accounts/{username}/purchases/F-1/failure",
              {"amount": 150, "reason": "one item out of stock"})
    key = {"Idempotency-Key": "failure-F-1-part-1"}
    first = await api.post(*credit, headers=key)
    assert first.status == 201, first.text

    # When an intruder deletes the key's record, and the order system retries
    Intruder(store_settings(server.database_url)).run("DELETE FROM ledger_keys", (),
                                                     unguarded=False)
    retry = await api.post(*credit, headers=key)

    # Then the retry is refused, not carried out again: the log shows the credit made under it
    problem = assert_problem(retry, 503, "not_ready")
    assert "deleted behind the service's back" in problem["detail"]
    assert (await api.account(username))["available"] == 750


async def test_a_key_record_deleted_by_sql_opens_no_second_case(
    served: tuple[Server, Api],
) -> None:
    server, api = served
    # Given a case opened under a key (opening a case changes no account)
    username = await api.customer_with_order()
    key = {"Idempotency-Key": "case-ORD-1"}
    first = await api.post("/v1/return-cases", case_body(username), role="cs", headers=key)
    assert first.status == 201, first.text

    # When an intruder deletes the key's record, and customer service sends it again
    Intruder(store_settings(server.database_url)).run("DELETE FROM ledger_keys", (),
                                                     unguarded=False)
    retry = await api.post("/v1/return-cases", case_body(username), role="cs", headers=key)

    # Then it is refused as a credit's retry is, and the order has its one case
    problem = assert_problem(retry, 503, "not_ready")
    assert "deleted behind the service's back" in problem["detail"]
    listed = await api.get(f"/v1/return-cases?username={username}", role="cs")
    assert [case["id"] for case in listed.json["items"]] == [first.json["id"]]
