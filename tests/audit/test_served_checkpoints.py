"""The auditor's kit against a real ``ledger serve``, on both stores, after an intruder who can
write to the database (not the signing key) worked on it: a checkpoint row it did not sign is
never served as the latest, and a service restarted on a log rolled back under it names the cut
from the checkpoint file it keeps outside the database.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from projections.notes import Checkpoint
from tests.audit.conftest import Intruder
from tests.conftest import store_settings
from tests.http.conftest import Api, Server, start_server, store
from tests.http.test_auditkit import WAIT_S, checkpoint_of_at_least, some_money
from tests.http.test_forgery import run_ledger

FAST = {"LEDGER_CHECKPOINT_INTERVAL_S": "0.1"}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store(request.param, tmp_path) as url:
        yield url


async def _forge_a_larger_checkpoint_row(server: Server, note: str) -> None:
    """INSERT a row for a tree 1000 events larger than ``note``'s, filed under its own size and
    root, its note naming the service's key with a signature of nothing."""
    origin, size_text, _ = note.split("\n", 3)[:3]
    blob = base64.b64decode(note.rsplit(" ", 1)[1])
    size, root = int(size_text) + 1000, b"\x07" * 32
    body = Checkpoint(origin, size, root).body()
    forged = f"{body}\n\u2014 {origin} {base64.b64encode(blob[:4] + bytes(64)).decode()}\n"
    Intruder(store_settings(server.database_url)).run(
        "INSERT INTO ledger_checkpoints (tree_size, root, note, made_at) VALUES (%s, %s, %s, %s)",
        (size, root.hex(), forged, "then"), unguarded=False)


async def test_a_checkpoint_row_inserted_by_sql_is_not_served_nor_proved_against(
    database: str, tmp_path: Path
) -> None:
    server = start_server(database, tmp_path, env=FAST)
    try:
        async with aiohttp.ClientSession(base_url=server.base_url) as session:
            api = Api(session)
            # Given a signed checkpoint of the log
            await some_money(api, 2)
            signed = await checkpoint_of_at_least(api, 4)
            # When a larger checkpoint row is INSERTed by SQL with a signature no one made
            await _forge_a_larger_checkpoint_row(server, signed)
            # Then the latest checkpoint served is still one the service signed
            reply = await api.get("/v1/audit/checkpoint", role="auditor")
            assert reply.status == 200
            assert reply.text.split("\n")[1] == signed.split("\n")[1], reply.text
            # And a proof without a tree size is against that one, not the forged size
            events = (await api.get("/v1/events?limit=10", role="finance")).json["items"]
            proof = await api.get(f"/v1/audit/proof?position={events[0]['position']}",
                                  role="auditor")
            assert proof.status == 200, proof.text
            assert proof.json["tree_size"] == int(signed.split("\n")[1])
    finally:
        server.stop()


async def test_a_service_restarted_on_a_log_rolled_back_under_it_names_the_cut(
    database: str, tmp_path: Path
) -> None:
    # Given a service that signed a checkpoint (kept in ./var/checkpoints.txt), then stopped
    server = start_server(database, tmp_path, env=FAST)
    try:
        async with aiohttp.ClientSession(base_url=server.base_url) as session:
            api = Api(session)
            await some_money(api, 3)
            signed = await checkpoint_of_at_least(api, 6)
    finally:
        server.stop()
    size = int(signed.split("\n")[1])
    # When the log's last two events are deleted with their seals, leaves and every checkpoint
    # row (a restore of an older backup of the database looks the same)
    intruder = Intruder(store_settings(database))
    (end,) = intruder.select(f"SELECT MAX({intruder.key}) FROM {intruder.events}", ())[0]
    cut = int(end) - 1
    for table, column in ((intruder.events, intruder.key), ("ledger_chain", "position"),
                          ("ledger_merkle_leaves", "position")):
        intruder.run(f"DELETE FROM {table} WHERE {column} >= %s", (cut,), unguarded=True)
    intruder.run("DELETE FROM ledger_checkpoints", (), unguarded=True)
    kept = (tmp_path / "var" / "checkpoints.txt").read_text()
    # Then the service started again there answers /ready 503 naming the log's end, and signs
    # no checkpoint of the shorter log into its file
    again = start_server(database, tmp_path, env=FAST)
    try:
        async with aiohttp.ClientSession(base_url=again.base_url) as session:
            api = Api(session)
            deadline = asyncio.get_running_loop().time() + WAIT_S
            while (reply := await api.get("/ready")).status == 200:
                assert asyncio.get_running_loop().time() < deadline, "/ready never failed"
                await asyncio.sleep(0.05)
            assert reply.status == 503
            assert f"position {cut - 1}" in reply.json["detail"], reply.json
            assert f"checkpoint of {size} events" in again.log()
            assert (await api.get("/v1/audit/checkpoint", role="auditor")).status == 404
            # And no write is taken: money the lost events paid out is not spent again
            refused = await api.post("/v1/accounts", {"username": "after-the-cut",
                                                      "currency": "USD"})
            assert refused.status == 503, refused.text
            assert refused.json["code"] == "not_ready"
            assert "no write is taken" in refused.json["detail"]
            # And the auditors' verify, over HTTP, reads the service's checkpoint file too
            verified = await api.get("/v1/audit/verify", role="auditor")
            assert verified.status == 200, verified.text
            assert verified.json["ok"] is False
            assert any(f"checkpoint of {size} events is beyond the log" in problem
                       for problem in verified.json["problems"]), verified.json
        assert (tmp_path / "var" / "checkpoints.txt").read_text() == kept
    finally:
        again.stop()
    # And so does `ledger verify`, run beside the service with its settings
    done = run_ledger(again, tmp_path, "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"checkpoint of {size} events is beyond the log" in done.stdout
