"""The auditor's kit against a real ``ledger serve`` on both stores: signed checkpoints made while
the log grows, proofs an auditor checks with the RFC 9162 verifier written in
``tests/audit/test_checkpoints.py`` (not the service's code), the offline verifier on the
service's own files, and the running service noticing history edited under it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.audit.conftest import Intruder
from tests.audit.test_checkpoints import open_note, rfc_verify_consistency, rfc_verify_inclusion
from tests.conftest import store_settings
from tests.http.conftest import Api, Server, ledger_command, start_server, store

WAIT_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def notarised(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with store(request.param, tmp_path) as url:
        running = start_server(url, tmp_path, env={"LEDGER_CHECKPOINT_INTERVAL_S": "0.1"})
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
async def api(notarised: Server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(base_url=notarised.base_url) as session:
        yield Api(session)


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEDGER_DATABASE_URL": server.database_url}
    return subprocess.run([*ledger_command(), *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=server.log_path.parent)


async def checkpoint_of_at_least(api: Api, size: int) -> str:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        reply = await api.get("/v1/audit/checkpoint", role="auditor")
        if reply.status == 200 and int(reply.text.split("\n")[1]) >= size:
            assert reply.content_type == "text/plain"
            return reply.text
        await asyncio.sleep(0.05)
    pytest.fail(f"no checkpoint of {size} events within {WAIT_S} s")


async def some_money(api: Api, accounts: int) -> None:
    for _ in range(accounts):
        username = await api.open_account()
        reply = await api.post(f"/v1/accounts/{username}/deposits",
                               {"amount": 1234, "reference": f"pay-{uuid.uuid4().hex[:8]}"})
        assert reply.status == 201, reply.text


async def test_checkpoints_and_proofs_verify_with_the_exported_key(
    api: Api, notarised: Server
) -> None:
    # Given a growing log, checkpointed by the service as it grows
    await some_money(api, 3)
    first = open_note(cli(notarised, "keys", "public").stdout.strip(),
                      await checkpoint_of_at_least(api, 6))
    await some_money(api, 3)
    key = cli(notarised, "keys", "public").stdout.strip()
    second = open_note(key, await checkpoint_of_at_least(api, 12))
    events = (await api.get("/v1/events?limit=100", role="finance")).json["items"]
    # Then each event's inclusion proof verifies against the signed root
    _, size, root = second
    for event in events[:size]:
        proof = (await api.get(f"/v1/audit/proof?position={event['position']}"
                               f"&tree_size={size}", role="auditor")).json
        assert proof["leaf_index"] == event["leaf_index"]
        assert proof["leaf_hash"] == event["leaf_hash"]
        path = [base64.b64decode(p) for p in proof["path"]]
        assert rfc_verify_inclusion(proof["leaf_index"], size,
                                    base64.b64decode(proof["leaf_hash"]), path, root)
    # And the first checkpoint is a prefix of the second
    reply = await api.get(f"/v1/audit/consistency?from={first[1]}&to={size}", role="finance")
    assert reply.status == 200, reply.text
    path = [base64.b64decode(p) for p in reply.json["path"]]
    assert rfc_verify_consistency(first[1], size, first[2], root, path)
    # And the offline verifier accepts the service's checkpoint file and an export
    export = notarised.log_path.parent / "events.jsonl"
    assert cli(notarised, "export", "--format", "events", "-o", str(export)).returncode == 0
    audited = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "ledger_audit.py"), "--key", key,
         "--checkpoints", str(notarised.log_path.parent / "var" / "checkpoints.txt"),
         "--events", str(export)], capture_output=True, text=True, timeout=120)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    # And the general ledger comes as CSV, over HTTP and from the command line alike
    reply = await api.get("/v1/export/csv", role="auditor")
    assert reply.status == 200 and reply.content_type == "text/csv"
    exported = cli(notarised, "export", "--format", "csv")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == reply.text and reply.text.count("customer:") == 6
    reply = await api.get("/v1/export/hledger", role="finance")
    exported = cli(notarised, "export", "--format", "hledger")
    assert reply.status == 200 and exported.stdout == reply.text
    assert reply.text.count("liabilities:customers:u-") >= 6
    # And a cs token cannot read proofs
    assert (await api.get("/v1/audit/checkpoint", role="cs")).status == 403
    # And /ready says when the service's login could rewrite history (tests connect as the
    # PostgreSQL superuser)
    ready = (await api.get("/ready")).json
    if notarised.database_url.startswith("postgresql"):
        assert "superuser" in ready["privilege"]
    else:
        assert "privilege" not in ready


async def test_an_event_edited_under_the_running_service_fails_ready_with_its_position(
    api: Api, notarised: Server
) -> None:
    await some_money(api, 2)
    await checkpoint_of_at_least(api, 4)
    events = (await api.get("/v1/events?limit=100", role="finance")).json["items"]
    position = events[-1]["position"]
    intruder = Intruder(store_settings(notarised.database_url))

    intruder.flip_amount_digit(position)

    deadline = asyncio.get_running_loop().time() + WAIT_S
    while (reply := await api.get("/ready")).status == 200:
        assert asyncio.get_running_loop().time() < deadline, "/ready never failed"
        await asyncio.sleep(0.05)
    assert reply.status == 503
    assert f"position {position}" in reply.json["detail"]
    assert f"history damaged at position {position}" in notarised.log()
    # /ready may have failed on the read models' own check first; the notary's watch finds the
    # same damage on its next pass, and counts it.
    while "ledger_history_damage_found 1.0" not in (await api.get("/metrics")).text:
        assert asyncio.get_running_loop().time() < deadline, "the notary never counted it"
        await asyncio.sleep(0.05)
