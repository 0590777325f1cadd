"""The auditor's kit against a real ``ledger serve`` on both stores: signed checkpoints made while
the log grows, proofs an auditor checks with the RFC 9162 verifier written in
``tests/audit/test_checkpoints.py`` (not the service's code), the offline verifier on the
service's own files, and the running service noticing history edited under it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from projections.merkle import Tree, event_leaf_hash
from projections.notes import Checkpoint, Signer
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


# -- the offline verifier refuses a history that is not the one signed ---------------------------


@pytest.fixture
def signed_export(tmp_path: Path) -> tuple[str, Path, list[str]]:
    """(verifier key, checkpoint file, export lines): 20 sealed events over three streams, shaped
    as ``ledger export --format events`` writes them, and a checkpoint of all 20."""
    signer = Signer("audit.test/log", Ed25519PrivateKey.generate())
    streams = [uuid.uuid4() for _ in range(3)]
    tree, lines, previous = Tree(), [], "0" * 64
    for position in range(1, 21):
        stream, state = streams[position % 3], json.dumps({"amount": position}).encode()
        leaf = event_leaf_hash(position, stream, position, "ledger:Deposited", state)
        tree.append(leaf)
        link = hashlib.sha256(f"link {position}".encode()).hexdigest()
        lines.append(json.dumps({
            "position": position, "stream": str(stream), "version": position,
            "type": "ledger:Deposited", "state": base64.b64encode(state).decode(),
            "leaf_hash": base64.b64encode(leaf).decode(), "link": link, "previous": previous}))
        previous = link
    checkpoints = tmp_path / "checkpoints.txt"
    checkpoints.write_text(signer.sign(Checkpoint("audit.test/log", 20, tree.root()).body()) + "\n")
    return signer.verifier.text(), checkpoints, lines


def offline_audit(tmp_path: Path, key: str, checkpoints: Path, lines: list[str]
                  ) -> subprocess.CompletedProcess[str]:
    export = tmp_path / "events.jsonl"
    export.write_text("".join(line + "\n" for line in lines))
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "ledger_audit.py"), "--key", key,
         "--checkpoints", str(checkpoints), "--events", str(export)],
        capture_output=True, text=True, timeout=120)


def test_the_offline_verifier_accepts_the_history_signed(
    tmp_path: Path, signed_export: tuple[str, Path, list[str]]
) -> None:
    done = offline_audit(tmp_path, *signed_export)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok: 20 events; every checkpoint's signature")


def test_the_offline_verifier_says_which_events_no_checkpoint_covers(
    tmp_path: Path, signed_export: tuple[str, Path, list[str]]
) -> None:
    # Given an export that grew past the checkpoint of its first 20 events, and the last event
    # changed with its leaf hash made again (as anyone holding the database can)
    key, checkpoints, lines = signed_export
    last = json.loads(lines[-1])
    changed = json.dumps({"amount": 1_000_000}).encode()
    leaf = event_leaf_hash(21, uuid.UUID(last["stream"]), 21, "ledger:Deposited", changed)
    lines = [*lines, json.dumps({
        "position": 21, "stream": last["stream"], "version": 21, "type": "ledger:Deposited",
        "state": base64.b64encode(changed).decode(), "leaf_hash": base64.b64encode(leaf).decode(),
        "link": "1" * 64, "previous": last["link"]})]
    # Then the verifier does not call all 21 checked: it names the one no signature covers
    done = offline_audit(tmp_path, key, checkpoints, lines)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the first 20 are covered by a signed checkpoint; the last 1 are NOT" in done.stdout


def test_the_offline_verifier_names_an_edited_event(
    tmp_path: Path, signed_export: tuple[str, Path, list[str]]
) -> None:
    key, checkpoints, lines = signed_export
    event = json.loads(lines[5])
    event["state"] = base64.b64encode(json.dumps({"amount": 999}).encode()).decode()
    lines[5] = json.dumps(event)
    done = offline_audit(tmp_path, key, checkpoints, lines)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "position 6: the exported leaf hash is not its bytes'" in done.stdout
    assert "the signed root does not match the export's first 20 events" in done.stdout


def test_the_offline_verifier_names_an_export_cut_short(
    tmp_path: Path, signed_export: tuple[str, Path, list[str]]
) -> None:
    key, checkpoints, lines = signed_export
    done = offline_audit(tmp_path, key, checkpoints, lines[:15])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "checkpoint of 20 events (audit.test/log): the export holds only 15" in done.stdout


def test_the_offline_verifier_refuses_a_checkpoint_of_another_key(
    tmp_path: Path, signed_export: tuple[str, Path, list[str]]
) -> None:
    _, checkpoints, lines = signed_export
    other = Signer("audit.test/log", Ed25519PrivateKey.generate()).verifier.text()
    done = offline_audit(tmp_path, other, checkpoints, lines)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no signature of audit.test/log" in done.stdout
    assert "no checkpoint verified" in done.stdout


def test_the_offline_verifier_names_two_events_reordered(
    tmp_path: Path, signed_export: tuple[str, Path, list[str]]
) -> None:
    key, checkpoints, lines = signed_export
    lines[3], lines[4] = lines[4], lines[3]
    done = offline_audit(tmp_path, key, checkpoints, lines)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "position 5: the seal does not follow the one before it" in done.stdout
    assert "the signed root does not match the export's first 20 events" in done.stdout
