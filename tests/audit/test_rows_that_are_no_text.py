"""An intruder who can write to an SQLite store's file puts bytes that are no UTF-8 into a TEXT
column of an event or of its seal (SQLite keeps whatever is written): ``ledger verify`` and
``/v1/audit/verify`` name the row at its position as not valid text, and the keeper and a
rebuild stop before it, as before any other damaged row; no reader fails on it. So is an
event whose stream id is respelled (capitals, hyphens), or whose state is retyped as TEXT:
what the writer never writes.

SQLite only: PostgreSQL refuses such bytes when they are written (``invalid byte sequence for
encoding "UTF8"``, in a database of the UTF8 encoding, as every store of the service is), so no
row of it can hold them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import aiohttp
import pytest

from ledger.errors import HistoryDamaged
from projections.audit import verify
from projections.chain import Damage, look_after
from projections.checkpoints import Notary
from projections.notes import load_or_create_signer
from projections.replay import rebuild
from tests.audit.conftest import Intruder, Ledger
from tests.audit.history import History, RandomChooser
from tests.conftest import store_settings
from tests.http.conftest import Api, Server, ledger_command, start_server, until

DEPOSIT = "ledger:Account.DepositReceived"
NOT_TEXT = "the row is not valid text"
# 64 bytes that are no UTF-8 and that SQLite counts as 64 characters (the seal's CHECK).
NO_UTF8_LINK = "CAST(X'" + "FF" * 64 + "' AS TEXT)"
KEEPER_WAIT_S = 10.0

# Each change an intruder makes to a stored row: the table, and the SET clause (guards off).
CHANGES = {
    "an event's topic": ("stored_events", "topic = CAST(X'FF41' AS TEXT)"),
    "an event's stream": ("stored_events", "originator_id = CAST(X'C3' AS TEXT)"),
    "its seal's link": ("ledger_chain", f"hash = {NO_UTF8_LINK}"),
    "its seal's previous link": ("ledger_chain", f"previous = {NO_UTF8_LINK}"),
}


@pytest.fixture
def audited(ledger: Ledger) -> Ledger:
    """A settled random history, the keeper stopped so that nothing reads on meanwhile."""
    History(ledger.app, RandomChooser(seed=41)).run(20)
    ledger.settle()
    ledger.stop_keeper()
    return ledger


def forge_not_text(intruder: Intruder, like: int, column: str) -> int:
    """INSERT, with plain SQL, a copy of the event at position ``like`` as its stream's version
    1000, at the log's next position, ``column`` (topic or originator_id) holding a byte that is
    no UTF-8 (no guard refuses an INSERT); answers its position."""
    columns = {"originator_id": "originator_id", "topic": "topic"}
    columns[column] = "CAST(X'C3' AS TEXT)"
    intruder.run(
        "INSERT INTO stored_events (originator_id, originator_version, topic, state)"
        f" SELECT {columns['originator_id']}, 1000, {columns['topic']}, state"
        " FROM stored_events WHERE rowid = %s", (like,), unguarded=False)
    (position,) = intruder.select("SELECT MAX(rowid) FROM stored_events", ())[0]
    return int(position)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_stored_row_whose_text_is_no_utf8_is_named_by_verify_at_its_position(
    audited: Ledger, intruder: Intruder, change: str
) -> None:
    # Given a deposit whose stored row (or its seal's) is changed to hold bytes that are no UTF-8
    position = intruder.positions_of(DEPOSIT)[1]
    table, assignment = CHANGES[change]
    column = "rowid" if table == "stored_events" else "position"
    intruder.run(f"UPDATE {table} SET {assignment} WHERE {column} = %s", (position,),
                 unguarded=True)

    # When an auditor verifies the history
    report = verify(audited.settings, audited.app)

    # Then verify names the row at its position as not valid text, rather than failing the read
    assert not report.ok
    assert report.first_bad_position == position
    assert {"position": position, "what": "text"} in report.damage
    assert f"chain damaged at position {position}: {NOT_TEXT}" in " ".join(report.problems)


# An event's stream id spelled otherwise than the writer writes it (32 lower-case hex digits):
# the same UUID read as text, but no longer its aggregate's (found by that spelling).
RESPELLINGS = {
    "in capitals": "upper(originator_id)",
    "with hyphens": "substr(originator_id, 1, 8) || '-' || substr(originator_id, 9, 4) || '-'"
                    " || substr(originator_id, 13, 4) || '-' || substr(originator_id, 17, 4)"
                    " || '-' || substr(originator_id, 21)",
}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("respelling", list(RESPELLINGS))
def test_an_event_whose_stream_is_respelled_is_named_by_verify_at_its_position(
    audited: Ledger, intruder: Intruder, respelling: str
) -> None:
    # Given a deposit whose stream id is respelled (guards off): its seal, made of the UUID,
    # would still hold, while its account no longer finds it (its money spendable again)
    position = intruder.positions_of(DEPOSIT)[1]
    intruder.run(f"UPDATE stored_events SET originator_id = {RESPELLINGS[respelling]}"
                 " WHERE rowid = %s", (position,), unguarded=True)

    # When an auditor verifies the history
    report = verify(audited.settings, audited.app)

    # Then verify names the row at its position: text the writer never writes
    assert not report.ok
    assert report.first_bad_position == position
    assert {"position": position, "what": "text"} in report.damage


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_an_event_whose_state_is_retyped_as_text_is_named_at_its_position_by_verify_and_notary(
    audited: Ledger, intruder: Intruder, tmp_path: Path
) -> None:
    # Given a deposit whose state (a BLOB) is retyped as TEXT (guards off): the same bytes, so
    # its seal would still hold
    position = intruder.positions_of(DEPOSIT)[1]
    intruder.run("UPDATE stored_events SET state = CAST(state AS TEXT) WHERE rowid = %s",
                 (position,), unguarded=True)

    # When an auditor verifies the history, and a notary reads it
    report = verify(audited.settings, audited.app)
    signer = load_or_create_signer(tmp_path / "signing.key", "ledger.test/log", may_create=True)
    notary = Notary(audited.app.recorder, signer, tmp_path / "checkpoints.txt", interval_s=3600)
    notary.round()

    # Then both name the row at its position, rather than failing on it
    assert {"position": position, "what": "text"} in report.damage
    assert report.first_bad_position == position
    assert notary.damage == Damage(position, "text")


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("column", ["topic", "originator_id"])
def test_an_event_inserted_with_text_that_is_no_utf8_stops_the_keeper_and_a_rebuild_before_it(
    ledger: Ledger, intruder: Intruder, column: str
) -> None:
    # Given a settled history, the keeper running
    History(ledger.app, RandomChooser(seed=42)).run(12)
    head = ledger.settle()

    # When an event is INSERTed at the log's next position holding a byte that is no UTF-8
    forged = forge_not_text(intruder, intruder.positions_of(DEPOSIT)[0], column)
    assert forged == head + 1

    # Then the keeper stops before it and names it, and its read models stay where they were
    deadline = time.monotonic() + KEEPER_WAIT_S
    while ledger.keeper.damage is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ledger.keeper.damage == Damage(forged, "text")
    assert set(ledger.read_models.tracked().values()) == {head}
    # and any process looking after the head names it too (the notary's and /ready's look)
    assert look_after(ledger.app.recorder, ledger.app.recorder.chain_key, head) == (  # type: ignore[attr-defined]
        Damage(forged, "text"), None)
    # and a rebuild refuses to replay it, naming its position
    ledger.stop_keeper()
    with pytest.raises(HistoryDamaged, match=f"position {forged}: {NOT_TEXT}") as told:
        rebuild(ledger.settings, ledger.app)
    assert told.value.position == forged
    # and verify names it as not valid text
    report = verify(ledger.settings, ledger.app, read_models=False)
    assert report.first_bad_position == forged
    assert {"position": forged, "what": "text"} in report.damage


# -- over HTTP and on the command line, beside a running server ---


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, Api]]:
    server = start_server(f"sqlite:///{tmp_path}/ledger.db", tmp_path)
    try:
        async with aiohttp.ClientSession(base_url=server.base_url) as session:
            yield server, Api(session)
    finally:
        server.stop()


def run_ledger(server: Server, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``ledger ARGS`` on the server's store, as an operator runs it beside the server."""
    return subprocess.run(
        [*ledger_command(), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
        env={"LEDGER_DATABASE_URL": server.database_url, "PATH": "/usr/bin:/bin",
             "LEDGER_CHAIN_KEY_FILE": os.environ["LEDGER_CHAIN_KEY_FILE"]},
        check=False,
    )


async def test_ledger_verify_and_the_verify_route_name_a_row_that_is_no_utf8_not_a_traceback(
    served: tuple[Server, Api], tmp_path: Path
) -> None:
    server, api = served
    # Given a funded account, and an event INSERTed after it whose topic is no UTF-8
    await api.funded_account(1_000)
    intruder = Intruder(store_settings(server.database_url))
    forged = forge_not_text(intruder, intruder.positions_of(DEPOSIT)[0], "topic")

    # When an auditor verifies over HTTP
    reply = await api.get("/v1/audit/verify", role="auditor")

    # Then the report names the row at its position, in the shape of any other damage
    assert reply.status == 200, reply.text
    assert reply.json["ok"] is False
    assert reply.json["first_bad_position"] == forged
    assert {"position": forged, "what": "text"} in reply.json["damage"]
    # and `ledger verify` says it in a line and exits 1, with no traceback
    cli = run_ledger(server, tmp_path, "verify")
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"position {forged}: {NOT_TEXT}" in cli.stdout
    assert "Traceback" not in cli.stderr
    # and the server's keeper and notary stop before it and say why, with no traceback
    await until(lambda: f"position {forged}: {NOT_TEXT}" in server.log(),
                "the server's log names the row")
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_loading_an_account_with_an_event_whose_text_is_no_utf8_is_refused_as_damaged_history(
    ledger: Ledger, intruder: Intruder
) -> None:
    # Given a history, and an event INSERTed into an account's stream with a topic that is no
    # UTF-8
    History(ledger.app, RandomChooser(seed=43)).run(8)
    ledger.settle()
    like = intruder.positions_of(DEPOSIT)[0]
    ((stream,),) = intruder.select("SELECT originator_id FROM stored_events WHERE rowid = %s",
                                   (like,))
    forged = forge_not_text(intruder, like, "topic")

    # When the account's events are read to load it, then the read is refused as damaged
    # history naming the forged position (503 not_ready), not a failed read of the store
    with pytest.raises(HistoryDamaged) as told:
        ledger.app.recorder.select_events(UUID(stream))
    assert told.value.position == forged
