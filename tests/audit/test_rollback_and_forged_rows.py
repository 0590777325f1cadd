"""An intruder who can write to the database (but holds neither the chain key file nor the
signing key) changes checkpoints, leaves and the log's tail: each change is named (by ``ledger
verify``'s ``projections.audit.verify``, by the notary, or by the checkpoint file kept outside
the database), never served as the service's own, and never crashes the check that should name
it.
"""

from __future__ import annotations

import base64
from contextlib import closing
from pathlib import Path

import pytest

from projections import checkpoints
from projections.audit import verify
from projections.chain import Chain, Damage, all_notifications, check_chain
from projections.checkpoints import Notary, guard_notary, latest_checkpoint
from projections.notes import Checkpoint, load_or_create_signer, read_checkpoints
from projections.store import open_application
from tests.audit.conftest import Intruder, Ledger
from tests.audit.history import SYSTEM, History, RandomChooser


@pytest.fixture
def notary(ledger: Ledger, tmp_path: Path) -> Notary:
    guard_notary(ledger.app.recorder)
    signer = load_or_create_signer(tmp_path / "signing.key", "ledger.test/log", may_create=True)
    return Notary(ledger.app.recorder, signer, tmp_path / "checkpoints.txt", interval_s=3600)


def _forged_note(origin: str, key_hash: bytes, size: int, root: bytes) -> str:
    """A checkpoint note in the service's form, naming the service's key, whose signature is 64
    bytes of nothing: what an intruder without the signing key can write."""
    body = Checkpoint(origin, size, root).body()
    blob = base64.b64encode(key_hash + b"\x00" * 64).decode()
    return f"{body}\n\u2014 {origin} {blob}\n"


def _cut_tail(intruder: Intruder, position: int) -> None:
    """DELETE every event from ``position`` on, with its seal, its leaf and every checkpoint
    row (guards off): the database alone then holds a shorter history that looks whole."""
    for table, column in ((intruder.events, intruder.key), ("ledger_chain", "position"),
                          ("ledger_merkle_leaves", "position")):
        intruder.run(f"DELETE FROM {table} WHERE {column} >= %s", (position,), unguarded=True)
    intruder.run("DELETE FROM ledger_checkpoints", (), unguarded=True)


# -- a checkpoint row the service did not sign ---


def test_a_checkpoint_row_with_a_forged_signature_is_never_served_as_the_latest(
    ledger: Ledger, notary: Notary, intruder: Intruder
) -> None:
    # Given a signed checkpoint
    History(ledger.app, RandomChooser(seed=21)).run(10)
    signed = notary.round(force_checkpoint=True)
    assert signed is not None
    # When a row is INSERTed by SQL for a larger tree, filed under its own note's size and root,
    # its note carrying a signature the intruder could not make (no guard refuses an INSERT)
    size, root = 10**6, b"\x07" * 32
    forged = _forged_note(notary.origin, notary.verifier.hash, size, root)
    intruder.run("INSERT INTO ledger_checkpoints (tree_size, root, note, made_at)"
                 " VALUES (%s, %s, %s, %s)", (size, root.hex(), forged, "then"), unguarded=False)
    # Then the latest checkpoint the service serves (GET /v1/audit/checkpoint, `ledger
    # checkpoint`) is still the one it signed
    assert notary.latest() is not None and notary.latest().note == signed  # type: ignore[union-attr]
    assert latest_checkpoint(ledger.app.recorder, notary.verifier).note == signed  # type: ignore[union-attr]
    # And verify names the row
    report = verify(ledger.settings, ledger.app, read_models=False,
                    checkpoint_key=notary.verifier)
    assert not report.ok
    assert any("does not verify" in p for p in report.problems), report.problems


# -- a chain row that is no event's ---


def test_a_chain_row_past_the_log_is_neither_served_as_its_head_nor_sealed_after(
    ledger: Ledger, intruder: Intruder
) -> None:
    # Given a history
    history = History(ledger.app, RandomChooser(seed=5))
    history.run(6)
    recorder = ledger.app.recorder
    head = Chain(recorder).head()
    # When a chain row is INSERTed by SQL past the log's last event (no guard refuses an INSERT,
    # and a least-privileged login may make it)
    intruder.run("INSERT INTO ledger_chain (position, previous, hash) VALUES (%s, %s, %s)",
                 (10**6, "0" * 64, "f" * 64), unguarded=False)
    # Then the head served to auditors (GET /v1/audit/digest, `ledger digest`) is the log's own
    assert Chain(recorder).head() == head
    # And the events written after it are sealed after the log's true last link, even when
    # the head is read from the store (PostgreSQL: under the writers' lock, as after another
    # process wrote)
    if hasattr(recorder, "_head"):
        recorder._head = None
    history.run(3)
    end = recorder.max_notification_id()
    assert end is not None and end > head.position
    checked = check_chain(recorder.chain_key, all_notifications(recorder),  # type: ignore[attr-defined]
                          Chain(recorder).links(upto=end))
    assert checked.damage == [], checked.damage


# -- an event removed long after it became a leaf ---


def test_an_event_removed_far_behind_the_log_s_tail_is_found_by_the_running_notary(
    ledger: Ledger, tmp_path: Path, intruder: Intruder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a notary whose tail window (8 leaves here) the early events have long left, and
    # which re-checks 5 leaves before it each round
    monkeypatch.setattr(checkpoints, "TAIL_WINDOW", 8)
    guard_notary(ledger.app.recorder)
    signer = load_or_create_signer(tmp_path / "signing.key", "ledger.test/log", may_create=True)
    notary = Notary(ledger.app.recorder, signer, tmp_path / "checkpoints.txt",
                    interval_s=3600, sweep_window=5)
    History(ledger.app, RandomChooser(seed=23)).run(40)
    notary.round()
    assert notary.damage is None and len(notary.tree) > 8 + 5
    # When an early event is DELETEd with its seal and its leaf (guards off), while it runs
    position = notary.positions[2]
    for table, column in ((intruder.events, intruder.key), ("ledger_chain", "position"),
                          ("ledger_merkle_leaves", "position")):
        intruder.run(f"DELETE FROM {table} WHERE {column} = %s", (position,), unguarded=True)
    # Then a round of its sweep finds it gone, before the sweep has gone round the tree once
    for _ in range(len(notary.tree) // 5 + 2):  # bounded: one turn of the sweep and a round
        notary.round()
        if notary.damage is not None:
            break
    assert notary.damage == Damage(position, "missing")


# -- a stored leaf that is not a hash ---


@pytest.mark.parametrize("stored", ["zz" * 32, "é" * 64])
def test_a_stored_leaf_that_is_not_hex_is_named_not_a_crash_of_verify(
    ledger: Ledger, notary: Notary, intruder: Intruder, stored: str
) -> None:
    # Given a checkpointed history
    History(ledger.app, RandomChooser(seed=22)).run(10)
    assert notary.round(force_checkpoint=True) is not None
    index, position = len(notary.tree) - 1, notary.positions[-1]
    # When a stored leaf hash is overwritten with 64 characters that are no hex (the table's
    # CHECK counts characters only)
    intruder.run("UPDATE ledger_merkle_leaves SET hash = %s WHERE leaf_index = %s",
                 (stored, index), unguarded=True)
    # Then verify names the leaf at its position, rather than failing with a traceback
    report = verify(ledger.settings, ledger.app, read_models=False,
                    checkpoint_key=notary.verifier)
    assert not report.ok
    assert {"position": position, "what": "leaf"} in report.damage


# -- the log's tail rolled back, with everything in the database that tells ---


def test_a_tail_rolled_back_with_its_checkpoints_is_named_by_a_restarted_notary_from_its_file(
    ledger: Ledger, notary: Notary, intruder: Intruder, tmp_path: Path
) -> None:
    # Given a checkpoint kept in the checkpoint file outside the database
    History(ledger.app, RandomChooser(seed=23)).run(12)
    assert notary.round(force_checkpoint=True) is not None
    size, last = len(notary.tree), notary.positions[-1]
    kept = (tmp_path / "checkpoints.txt").read_text()
    # When an intruder rolls the log's tail back: its last three events with their seals,
    # leaves, and every checkpoint row (the database alone then looks whole)
    _cut_tail(intruder, notary.positions[size - 3])
    assert verify(ledger.settings, ledger.app, read_models=False,
                  checkpoint_key=notary.verifier).ok
    # Then the service, restarted on that store with its checkpoint file, names the cut at the
    # log's end and signs nothing over it: the file keeps only what the service signed
    restarted = Notary(ledger.app.recorder, notary.signer, tmp_path / "checkpoints.txt",
                       interval_s=3600)
    assert restarted.round(force_checkpoint=True) is None
    assert restarted.damage is not None and restarted.damage.what == "checkpoint"
    assert restarted.damage.position == notary.positions[size - 4] < last
    assert (tmp_path / "checkpoints.txt").read_text() == kept


def test_a_tail_rolled_back_and_regrown_is_named_by_a_restarted_notary_from_its_file(
    ledger: Ledger, notary: Notary, intruder: Intruder, tmp_path: Path
) -> None:
    # Given a checkpoint kept in the checkpoint file outside the database
    history = History(ledger.app, RandomChooser(seed=24))
    history.run(12)
    assert notary.round(force_checkpoint=True) is not None
    size = len(notary.tree)
    kept = (tmp_path / "checkpoints.txt").read_text()
    # When the tail is rolled back and the log grows past the checkpoint's size again
    _cut_tail(intruder, notary.positions[size - 3])
    with closing(open_application(ledger.settings)) as other:
        for i in range(3):
            other.open_account(f"regrown{i}", "EUR", actor=SYSTEM)
    # Then a restarted notary with the service's checkpoint file names the checkpoint whose
    # events were rewritten, and signs nothing
    restarted = Notary(ledger.app.recorder, notary.signer, tmp_path / "checkpoints.txt",
                       interval_s=3600)
    assert restarted.round(force_checkpoint=True) is None
    assert restarted.damage is not None and restarted.damage.what == "checkpoint"
    assert restarted.damage.position == restarted.positions[size - 1]
    assert (tmp_path / "checkpoints.txt").read_text() == kept
    assert len(read_checkpoints(kept)) == 1


def test_verify_given_the_services_checkpoint_file_names_a_tail_rolled_back_with_its_rows(
    ledger: Ledger, notary: Notary, intruder: Intruder, tmp_path: Path
) -> None:
    # Given two checkpoints kept in the service's checkpoint file
    history = History(ledger.app, RandomChooser(seed=25))
    history.run(8)
    assert notary.round(force_checkpoint=True) is not None
    history.run(8)
    assert notary.round(force_checkpoint=True) is not None
    size = len(notary.tree)
    # When the tail after the first is rolled back with every checkpoint row
    _cut_tail(intruder, notary.positions[size - 3])
    # Then verify given the file (as `ledger verify` and /v1/audit/verify could be, from
    # LEDGER_CHECKPOINT_FILE) names the cut at the log's end; without it nothing tells
    assert verify(ledger.settings, ledger.app, read_models=False,
                  checkpoint_key=notary.verifier).ok
    report = verify(ledger.settings, ledger.app, read_models=False,
                    checkpoint_key=notary.verifier,
                    checkpoint_file=tmp_path / "checkpoints.txt")
    assert not report.ok
    assert {"position": notary.positions[size - 4], "what": "checkpoint"} in report.damage
    assert any(f"checkpoint of {size} events is beyond the log" in p for p in report.problems)
    # And a file that is missing, or holds notes of another key only, adds nothing
    other = load_or_create_signer(tmp_path / "other.key", "ledger.test/log", may_create=True)
    assert verify(ledger.settings, ledger.app, read_models=False, checkpoint_key=other.verifier,
                  checkpoint_file=tmp_path / "checkpoints.txt").ok
    assert verify(ledger.settings, ledger.app, read_models=False,
                  checkpoint_key=notary.verifier, checkpoint_file=tmp_path / "none.txt").ok


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_rows_that_are_no_text_or_number_on_sqlite_are_named_not_a_crash(
    ledger: Ledger, notary: Notary, intruder: Intruder
) -> None:
    # Given a checkpointed history on SQLite (which keeps whatever is written into a column)
    History(ledger.app, RandomChooser(seed=26)).run(8)
    signed = notary.round(force_checkpoint=True)
    assert signed is not None
    # When a checkpoint row whose note is bytes that are no UTF-8, and a leaf row whose index
    # is no number, are written by SQL
    intruder.run("INSERT INTO ledger_checkpoints (tree_size, root, note, made_at)"
                 " VALUES (%s, CAST(X'FFFE' AS TEXT), CAST(X'FFFE' AS TEXT), %s)",
                 (10**6, "then"), unguarded=False)
    intruder.run("INSERT INTO ledger_merkle_leaves (leaf_index, position, hash)"
                 " VALUES (%s, %s, %s)", ("abc", 10**6, "00" * 32), unguarded=True)
    # Then verify names both, rather than failing on the read
    report = verify(ledger.settings, ledger.app, read_models=False,
                    checkpoint_key=notary.verifier)
    assert not report.ok
    assert {"position": 10**6, "what": "leaf"} in report.damage
    assert any("not a signed note" in p for p in report.problems), report.problems
    # And the notary's round names the row and goes on; the latest served is still its own
    notary.round()
    assert notary.damage is not None and notary.damage.what == "checkpoint"
    assert latest_checkpoint(ledger.app.recorder, notary.verifier).note == signed  # type: ignore[union-attr]
