"""The auditor's kit against a real ``ledger serve``, on both stores, after an intruder who can
write to the database (not the signing key) worked on it: a checkpoint row it did not sign is
never served as the latest, a service restarted on a log rolled back under it names the cut
from the checkpoint file it keeps outside the database, and a service stopped gracefully signs
a last checkpoint of what it acknowledged since its last one, so no write it took can be cut
unseen after a stop.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from projections.notes import Checkpoint, read_checkpoints
from tests.audit.conftest import Intruder
from tests.conftest import store_settings
from tests.http.conftest import Api, Server, add_person, start_server, store
from tests.http.test_auditkit import WAIT_S, checkpoint_of_at_least, some_money
from tests.http.test_forgery import run_ledger

FAST = {"LEDGER_CHECKPOINT_INTERVAL_S": "0.1"}
# Checkpoints an hour apart: a test's service signs at its first round after a write, and then
# only when it stops.
SLOW = {"LEDGER_CHECKPOINT_INTERVAL_S": "3600"}


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


# -- a graceful stop signs what it acknowledged ---


def _kept_sizes(folder: Path) -> list[int]:
    """The tree sizes of the checkpoints in the service's file (``./var/checkpoints.txt``)."""
    text = (folder / "var" / "checkpoints.txt").read_text()
    return [int(note.split("\n")[1]) for note in read_checkpoints(text)]


def _log_end(intruder: Intruder) -> int:
    (end,) = intruder.select(f"SELECT MAX({intruder.key}) FROM {intruder.events}", ())[0]
    return int(end)


async def _approved_refund(api: Api) -> tuple[str, int]:
    """A customer's balance refund of 300, requested and approved (not yet paid): its id, and
    the approval's position."""
    username = await api.funded_account(1_000)
    await api.post(f"/v1/accounts/{username}/purchases", {"order_no": "ORD-9", "amount": 400})
    requested = await api.post(f"/v1/accounts/{username}/refund-requests",
                               {"order_no": "ORD-9", "amount": 300, "reason": "wants it back"},
                               role="cs")
    assert requested.status == 201, requested.text
    approved = await api.post(f"/v1/refund-requests/{requested.json['id']}/approve",
                              {"note": "checked"}, role="finance")
    assert approved.status == 200, approved.text
    return requested.json["id"], approved.json["position"]


async def test_a_payout_acknowledged_just_before_a_graceful_stop_is_signed_so_its_cut_is_named(
    database: str, tmp_path: Path
) -> None:
    # Given a service that signs checkpoints an hour apart, and signed one of an approved refund
    server = start_server(database, tmp_path, env=SLOW)
    try:
        add_person(server, "payer", "finance")  # four eyes: not the approver pays
        async with aiohttp.ClientSession(base_url=server.base_url) as session:
            api = Api(session, server.people)
            refund, approved = await _approved_refund(api)
            await checkpoint_of_at_least(api, approved)
            # When it pays the refund out, and is stopped (SIGTERM) well within the hour
            paid = await api.post(f"/v1/refund-requests/{refund}/pay",
                                  {"payout_reference": "BANK-77"}, role="payer")
            assert paid.status == 200, paid.text
    finally:
        assert server.stop() == 0, server.log()
    # Then the checkpoint file outside the database holds a checkpoint of the whole log, the
    # payout's events included
    intruder = Intruder(store_settings(database))
    end = _log_end(intruder)
    assert approved < paid.json["position"] <= end
    assert _kept_sizes(tmp_path)[-1] == end
    # And when the database's owner cuts the payout from the log with its seals, leaves and
    # every checkpoint row (guards off), and rebuilds the read models from what is left, the
    # database alone looks whole to an auditor with the verifier key
    cut = approved + 1
    for table, column in ((intruder.events, intruder.key), ("ledger_chain", "position"),
                          ("ledger_merkle_leaves", "position")):
        intruder.run(f"DELETE FROM {table} WHERE {column} >= %s", (cut,), unguarded=True)
    intruder.run("DELETE FROM ledger_checkpoints", (), unguarded=True)
    assert run_ledger(server, tmp_path, "rebuild").returncode == 0
    key = run_ledger(server, tmp_path, "keys", "public").stdout.strip()
    auditor = tmp_path / "auditor"  # no signing key, no checkpoint file of the service's
    auditor.mkdir()
    alone = run_ledger(server, auditor, "verify", "--key", key)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    # but `ledger verify` given the service's checkpoint file names the cut
    kept = tmp_path / "var" / "checkpoints.txt"
    done = run_ledger(server, auditor, "verify", "--key", key, "--checkpoint", str(kept))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"checkpoint of {end} events is beyond the log's {cut - 1}" in done.stdout


async def test_a_service_stopped_with_nothing_written_since_its_last_checkpoint_signs_none(
    database: str, tmp_path: Path
) -> None:
    # Given a service that signed a checkpoint of every event written, and was then stopped
    server = start_server(database, tmp_path, env=SLOW)
    try:
        async with aiohttp.ClientSession(base_url=server.base_url) as session:
            api = Api(session)
            await some_money(api, 2)
            await checkpoint_of_at_least(api, 4)
    finally:
        assert server.stop() == 0, server.log()
    intruder = Intruder(store_settings(database))
    end = _log_end(intruder)
    assert _kept_sizes(tmp_path) == [end]
    # When it is started again, places the log in its tree, and is stopped with nothing written
    again = start_server(database, tmp_path, env=SLOW)
    try:
        async with aiohttp.ClientSession(base_url=again.base_url) as session:
            api = Api(session)
            deadline = asyncio.get_running_loop().time() + WAIT_S
            while (await api.get(f"/v1/events?after={end - 1}", role="auditor")
                   ).json["items"][0]["leaf_index"] is None:
                assert asyncio.get_running_loop().time() < deadline, "the log was never placed"
                await asyncio.sleep(0.05)
    finally:
        assert again.stop() == 0, again.log()
    # Then neither stop signed a second checkpoint of the same log: the file and the table
    # hold the one
    assert _kept_sizes(tmp_path) == [end]
    assert intruder.select("SELECT tree_size FROM ledger_checkpoints", ()) == [(end,)]
