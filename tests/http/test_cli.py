"""The one-off commands, run as processes on a store filled through the application, on SQLite
and PostgreSQL: ``ledger rebuild``, ``verify``, ``digest``, ``checkpoint`` and ``export``."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from beancount import loader
from beancount.core import data as bean
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.application import CaseApplication, LedgerApplication
from ledger.identity import Actor
from projections.beancount import account_name
from projections.chain import Chain
from projections.checkpoints import stored_checkpoints
from projections.notes import Signer
from projections.readmodels import ReadModels
from projections.store import open_application
from tests.conftest import drop_pg_database, make_pg_database, pg_url, store_settings
from tests.http.conftest import TOKENS, cli_workdir, ledger_command, start_server

ACTOR = Actor("cs:cli-test", "test-cli")
TIMEOUT_S = 120
EVENTS = 15  # what ``fill`` writes: positions 1..15 of a fresh store


def ledger(database_url: str, *args: str, cwd: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ledger_command(), *args], capture_output=True, text=True, timeout=TIMEOUT_S,
        cwd=cwd or cli_workdir(),
        env={"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": database_url,
             "LEDGER_CHAIN_KEY_FILE": os.environ["LEDGER_CHAIN_KEY_FILE"]},
    )


def fill(app: LedgerApplication) -> None:
    """Two customers in two currencies; a case resolved by a refund with freight."""
    app.open_account("alice", "USD", actor=ACTOR)
    app.deposit("alice", 10_000, "PAY-1", actor=ACTOR)
    app.purchase("alice", "ORD-1", 3_000, actor=ACTOR)
    app.open_account("bob.smith_1", "JPY", actor=ACTOR)
    app.deposit("bob.smith_1", 5_000, "PAY-1", actor=ACTOR)
    app.purchase("bob.smith_1", "ORD-9", 1_200, actor=ACTOR)
    today = app.today()
    opened = app.open_return_case(
        CaseApplication("alice", "ORD-1", "defective", today - timedelta(days=5),
                        [{"sku": None, "description": "a kettle", "quantity": 1}],
                        ["goods.jpg"], ["box.jpg"], False, False, False, True),
        actor=ACTOR,
    )
    case_id = uuid.UUID(opened.body["id"])
    app.start_supplier_review(case_id, "", actor=ACTOR)
    app.accept_return_case(case_id, today + timedelta(days=10), "Dock 4", "", actor=ACTOR)
    app.ship_back(case_id, "T-1", actor=ACTOR)
    app.receive_return(case_id, today, True, True, True, actor=ACTOR)
    app.forward_to_supplier(case_id, "", actor=ACTOR)
    app.resolve_return_case(case_id, "refund", 2_000, 300, None, actor=ACTOR)


@contextmanager
def filled_store(kind: str, folder: Path) -> Iterator[str]:
    """The URL of a new store of ``kind``, filled (each event sealed by the writer as it was
    recorded); dropped after."""
    name = None
    if kind == "sqlite":
        url = f"sqlite:///{folder}/ledger.db"
    else:
        name = make_pg_database()
        url = pg_url(name)
    try:
        app = open_application(store_settings(url, pool_size=1))
        try:
            fill(app)
            assert app.recorder.max_notification_id() == EVENTS
            assert Chain(app.recorder).head().position == EVENTS
        finally:
            app.close()
        yield url
    finally:
        if name is not None:
            drop_pg_database(name)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    """A store's URL, filled, shared by the module's tests that only read it."""
    with filled_store(request.param, tmp_path_factory.mktemp("cli")) as url:
        yield url


def test_rebuild_replays_the_log_into_the_read_models_with_a_progress_bar(filled: str) -> None:
    result = ledger(filled, "rebuild")
    assert result.returncode == 0, result.stderr
    assert f"rebuilt every read model from {EVENTS} events" in result.stdout
    assert "events/s" in result.stdout
    assert f"{EVENTS}/{EVENTS}" in result.stderr  # the progress bar counted every event
    settings = store_settings(filled, pool_size=1)
    app = open_application(settings)
    read_models = ReadModels(settings, app)
    try:
        assert read_models.status()["lag"] == 0
        account = read_models.account("alice")
        assert account is not None and account["posted"] == 8_700
    finally:
        read_models.close()
        app.close()


def test_rebuild_while_a_server_keeps_the_read_models_swaps_fresh_ones_in(
    filled: str, tmp_path: Path
) -> None:
    server = start_server(filled, tmp_path)
    try:
        # a read after a write proves the server's keeper runs, holding the keepers' lock
        request = urllib.request.Request(
            f"{server.base_url}/v1/accounts/alice",
            headers={"Authorization": f"Bearer {TOKENS['system']}"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.load(reply)["posted"] == 8_700
        result = ledger(filled, "rebuild", "--lock-timeout", "30")
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.load(reply)["posted"] == 8_700  # served from the fresh read models
    finally:
        assert server.stop() == 0
    assert result.returncode == 0, result.stderr
    assert f"rebuilt every read model from {EVENTS} events" in result.stdout
    assert "swapped in" in result.stdout
    assert "Traceback" not in result.stderr


def test_verify_finds_a_clean_store_ok(filled: str) -> None:
    result = ledger(filled, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"ok: {EVENTS} events checked")
    as_json = ledger(filled, "verify", "--json")
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    # a server run on this store earlier signed checkpoints with a key not in this folder
    app = open_application(store_settings(filled, pool_size=1))
    try:
        stored = len(stored_checkpoints(app.recorder))
    finally:
        app.close()
    assert report == {"ok": True, "events_checked": EVENTS, "first_bad_position": None,
                      "problems": [], "damage": [], "unchecked_signatures": stored}


@pytest.fixture(params=["sqlite", "postgres"])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store of its own, filled, for a test that adds checkpoints to it."""
    with filled_store(request.param, tmp_path) as url:
        yield url


def forge_signature(note: str) -> str:
    """The note with one bit of its signature flipped: the key hash still names the key."""
    body, _, line = note.rstrip("\n").rpartition("\n")
    dash, name, blob = line.split(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    return f"{body}\n{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"


def test_ledger_checkpoint_signs_one_that_verify_checks_with_the_key_given(
    fresh: str, tmp_path: Path
) -> None:
    # Given a checkpoint signed by `ledger checkpoint` in the service's folder
    service, auditor = tmp_path / "service", tmp_path / "auditor"
    service.mkdir()
    auditor.mkdir()
    made = ledger(fresh, "checkpoint", cwd=service)
    assert made.returncode == 0, made.stderr
    assert made.stdout.split("\n")[:2] == ["ledger.local/log", str(EVENTS)]
    kept = service / "var" / "checkpoints.txt"
    assert kept.read_text() == made.stdout + "\n"
    key = ledger(fresh, "keys", "public", cwd=service).stdout.strip()
    # Then verify beside the signing key checks it, the stored one and the file's alike
    beside = ledger(fresh, "verify", "--checkpoint", str(kept), cwd=service)
    assert beside.returncode == 0, beside.stdout + beside.stderr
    assert beside.stdout.startswith("ok:") and "NOT checked" not in beside.stdout
    # And an auditor with the public key only checks them too
    audited = ledger(fresh, "verify", "--key", key, "--checkpoint", str(kept), cwd=auditor)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "NOT checked" not in audited.stdout
    # And a forged signature is named, with the key given
    forged = tmp_path / "badsig.txt"
    forged.write_text(forge_signature(made.stdout) + "\n")
    bad = ledger(fresh, "verify", "--key", key, "--checkpoint", str(forged), cwd=auditor)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"first bad position: {EVENTS}" in bad.stdout
    assert "the signature of ledger.local/log does not verify" in bad.stdout
    # And a checkpoint of another key is not taken for the service's
    other = Signer("ledger.local/log", Ed25519PrivateKey.generate()).verifier.text()
    wrong = ledger(fresh, "verify", "--key", other, cwd=auditor)
    assert wrong.returncode == 1 and "carries no signature of ledger.local/log" in wrong.stdout


def test_verify_with_no_key_says_the_signatures_were_not_checked(
    fresh: str, tmp_path: Path
) -> None:
    assert ledger(fresh, "checkpoint", cwd=tmp_path).returncode == 0
    elsewhere = tmp_path / "elsewhere"  # no signing key here, and no --key
    elsewhere.mkdir()
    # a file of checkpoints is refused: its signatures are the reason to give it
    given = ledger(fresh, "verify", "--checkpoint", str(tmp_path / "var" / "checkpoints.txt"),
                   cwd=elsewhere)
    assert given.returncode == 2, given.stdout + given.stderr
    assert "no verifier key" in given.stderr and given.stdout == ""
    # the stored checkpoint's root is checked, and the answer says its signature was not
    stored = ledger(fresh, "verify", cwd=elsewhere)
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert "signatures NOT checked: 1 stored checkpoints" in stored.stdout
    as_json = json.loads(ledger(fresh, "verify", "--json", cwd=elsewhere).stdout)
    assert as_json["ok"] is True and as_json["unchecked_signatures"] == 1
    # and a key that is not one is refused
    garbled = ledger(fresh, "verify", "--key", "not-a-key", cwd=elsewhere)
    assert garbled.returncode == 2 and "--key" in garbled.stderr


def test_digests_kept_outside_are_checked_and_a_wrong_one_names_its_position(
    filled: str, tmp_path: Path
) -> None:
    digests = tmp_path / "digests.jsonl"
    for _ in range(2):
        result = ledger(filled, "digest", "-o", str(digests))
        assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in digests.read_text().splitlines()]
    assert len(lines) == 2 and lines[0] == lines[1]
    assert lines[0]["position"] == EVENTS and len(lines[0]["hash"]) == 64
    printed = ledger(filled, "digest")
    assert json.loads(printed.stdout) == lines[0]

    assert ledger(filled, "verify", "--digest", str(digests)).returncode == 0

    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps({"position": 5, "hash": "ab" * 32}) + "\n")
    result = ledger(filled, "verify", "--digest", str(digests), "--digest", str(forged))
    assert result.returncode == 1
    assert "first bad position: 5" in result.stdout


def test_a_digest_file_that_is_not_one_is_refused(filled: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    result = ledger(filled, "verify", "--digest", str(bad))
    assert result.returncode == 2
    assert "not a file of digests" in result.stderr
    missing = ledger(filled, "verify", "--digest", str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 2


def test_export_writes_a_beancount_file_bean_check_accepts_with_the_ledgers_balances(
    filled: str, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.beancount"
    result = ledger(filled, "export", "--format", "beancount", "-o", str(path))
    assert result.returncode == 0, result.stderr
    checked = subprocess.run([str(Path(sys.executable).with_name("bean-check")), str(path)],
                             capture_output=True, text=True, timeout=TIMEOUT_S)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    entries, errors, _ = loader.load_file(str(path))
    assert errors == []
    totals = {name: sum((p.units.number for e in entries if isinstance(e, bean.Transaction)
                         for p in e.postings if p.account == account_name(f"customer:{name}")),
                        start=0)
              for name in ("alice", "bob.smith_1")}
    assert totals == {"alice": -87, "bob.smith_1": -3_800}  # 87.00 USD, 3,800 JPY


def test_export_of_one_currency_to_standard_output(filled: str) -> None:
    result = ledger(filled, "export", "--format", "beancount", "--currency", "JPY")
    assert result.returncode == 0, result.stderr
    assert "JPY" in result.stdout and "USD" not in result.stdout
    assert account_name("customer:bob.smith_1") in result.stdout


@pytest.mark.parametrize("args", [["export", "--format", "xlsx"], ["export"],
                                  ["export", "--format", "beancount", "--currency", "usd"]])
def test_export_with_bad_arguments_is_refused(filled: str, args: list[str]) -> None:
    result = ledger(filled, *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_the_commands_refuse_a_store_that_does_not_exist(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/none.db"
    for args in (["rebuild"], ["verify"], ["digest"], ["export", "--format", "beancount"]):
        result = ledger(url, *args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert "no store" in result.stderr
    assert not (tmp_path / "none.db").exists()
    bad_url = ledger("mysql://x/y", "verify")
    assert bad_url.returncode == 2 and "LEDGER_DATABASE_URL" in bad_url.stderr


def test_a_digest_of_a_store_that_holds_no_event_yet_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    open_application(store_settings(url, pool_size=1)).close()
    result = ledger(url, "digest")
    assert result.returncode == 1
    assert "seals no event yet" in result.stderr
    assert result.stdout == ""


def test_a_digest_names_the_last_event_as_soon_as_it_is_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    app = open_application(store_settings(url, pool_size=1))
    try:
        app.open_account("carol", "EUR", actor=ACTOR)
    finally:
        app.close()
    result = ledger(url, "digest")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["position"] == 1
