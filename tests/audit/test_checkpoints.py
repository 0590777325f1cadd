"""Signed checkpoints and Merkle proofs (``projections.checkpoints``) on both stores, checked the
way an auditor would: with an RFC 9162 verifier written here from the RFC (sections 2.1.1,
2.1.3.2, 2.1.4.2), not the service's code, against notes whose signatures are checked with the
exported verifier key and ``cryptography`` alone.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import threading
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from api.auditkit import NotaryThread
from ledger.commands import OpenAccount
from projections.audit import verify
from projections.chain import Damage
from projections.checkpoints import (
    ROWS_LOOKED_AT,
    Notary,
    _signed_by,
    adopt_signer,
    guard_notary,
    latest_checkpoint,
    stored_checkpoints,
)
from projections.notes import Checkpoint, NoteError, load_or_create_signer, read_checkpoints
from projections.store import open_application
from tests.audit.conftest import Intruder, Ledger, seals_checked_here
from tests.audit.history import SYSTEM, History, RandomChooser

# -- the auditor's own RFC 9162 and signed-note code ---------------------------------------------


def rfc_leaf(position: int, stream: str, version: int, topic: str, state: bytes) -> bytes:
    parts = [str(position).encode(), stream.encode(), str(version).encode(), topic.encode(),
             state]
    data = b"".join(len(p).to_bytes(8, "big") + p for p in parts)
    return hashlib.sha256(b"\x00" + data).digest()


def rfc_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def rfc_verify_inclusion(index: int, size: int, leaf: bytes, path: list[bytes],
                         root: bytes) -> bool:
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = rfc_node(p, r)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = rfc_node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def rfc_verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes,
                           path: list[bytes]) -> bool:
    if first == second:
        return path == [] and first_hash == second_hash
    if not path:
        return False
    if first & (first - 1) == 0:
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1
    while fn % 2 == 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            fr, sr = rfc_node(c, fr), rfc_node(c, sr)
            if fn % 2 == 0:
                while not (fn % 2 == 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = rfc_node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_hash and sr == second_hash


def open_note(verifier_key: str, note: str) -> tuple[str, int, bytes]:
    """(origin, tree size, root) of a checkpoint whose signature by ``verifier_key`` holds."""
    name, key_hash_hex, encoded = verifier_key.split("+", 2)
    raw = base64.b64decode(encoded)
    assert raw[0] == 1 and len(raw) == 33
    key_hash = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert key_hash.hex() == key_hash_hex
    body, signatures = note.split("\n\n", 1)
    for line in signatures.splitlines():
        dash, signer, blob64 = line.split(" ")
        blob = base64.b64decode(blob64)
        if dash == "\u2014" and signer == name and blob[:4] == key_hash:
            Ed25519PublicKey.from_public_bytes(raw[1:]).verify(blob[4:], (body + "\n").encode())
            origin, size, root = body.split("\n")
            return origin, int(size), base64.b64decode(root)
    raise AssertionError("no signature of the key")


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def notary(ledger: Ledger, tmp_path: Path) -> Notary:
    guard_notary(ledger.app.recorder)
    signer = load_or_create_signer(tmp_path / "signing.key", "ledger.test/log", may_create=True)
    return Notary(ledger.app.recorder, signer, tmp_path / "checkpoints.txt", interval_s=3600)


def test_every_event_and_every_pair_of_checkpoints_prove_with_the_rfc_verifier(
    ledger: Ledger, notary: Notary, tmp_path: Path
) -> None:
    # Given a random history checkpointed four times as it grows
    history = History(ledger.app, RandomChooser(seed=11))
    for _ in range(4):
        history.run(12)
        assert notary.round(force_checkpoint=True) is not None
    public = notary.verifier.text()
    # When an auditor reads the checkpoint file and the events
    notes = read_checkpoints((tmp_path / "checkpoints.txt").read_text())
    checkpoints = [open_note(public, note) for note in notes]
    assert len(checkpoints) == 4 and all(c[0] == "ledger.test/log" for c in checkpoints)
    events = ledger.app.recorder.select_notifications(start=1, limit=10_000)
    leaves = [rfc_leaf(e.id, str(e.originator_id), e.originator_version, e.topic,
                       bytes(e.state)) for e in events]
    assert checkpoints[-1][1] == len(leaves)
    # Then every event is included in every checkpoint that covers it
    for _, size, root in checkpoints:
        for index, event in enumerate(events[:size]):
            proof = notary.inclusion(event.id, size)
            assert proof["leaf_index"] == index
            assert base64.b64decode(proof["leaf_hash"]) == leaves[index]
            path = [base64.b64decode(p) for p in proof["path"]]
            assert rfc_verify_inclusion(index, size, leaves[index], path, root)
    # And each checkpoint is consistent with every later one
    for (_, m, old_root), (_, n, new_root) in itertools.combinations(checkpoints, 2):
        path = [base64.b64decode(p) for p in notary.consistency(m, n)["path"]]
        assert rfc_verify_consistency(m, n, old_root, new_root, path)
        assert not rfc_verify_consistency(m, n, new_root, old_root, path)
    assert notary.damage is None


def test_a_rewrite_with_the_chain_key_before_the_latest_checkpoint_is_caught_by_it(
    ledger: Ledger, notary: Notary, intruder: Intruder, tmp_path: Path
) -> None:
    # Given a checkpointed history
    History(ledger.app, RandomChooser(seed=5)).run(20)
    assert notary.round(force_checkpoint=True) is not None
    size = len(notary.tree)
    position = notary.positions[size // 2]
    # When an insider holding the chain key edits an event and reseals the chain after it
    intruder.flip_amount_digit(position)
    intruder.relink_with_key(ledger.app.recorder.chain_key, position)  # type: ignore[attr-defined]
    # Then a notary starting afresh (a restarted service) finds the chain whole, but the
    # signed checkpoint does not match the log
    fresh = Notary(ledger.app.recorder, notary.signer, None, interval_s=3600)
    fresh.round()
    assert fresh.damage is not None and fresh.damage.what == "checkpoint"
    assert fresh.damage.position == notary.positions[size - 1]


def test_an_event_edited_after_it_became_a_leaf_is_named_by_the_running_notary(
    ledger: Ledger, notary: Notary, intruder: Intruder
) -> None:
    History(ledger.app, RandomChooser(seed=8)).run(15)
    notary.round()
    position = notary.positions[-3]

    intruder.flip_amount_digit(position)
    notary.round()

    assert notary.damage is not None
    assert (notary.damage.position, notary.damage.what) == (position, "content")
    assert notary.damage_found == 1


def test_a_forged_event_never_becomes_a_leaf(
    ledger: Ledger, notary: Notary, intruder: Intruder
) -> None:
    History(ledger.app, RandomChooser(seed=8)).run(15)
    notary.round()
    size = len(notary.tree)
    like = notary.positions[0]

    forged = intruder.forge_deposit(like, 5_000_000, "FORGED-1")
    notary.round(force_checkpoint=True)

    assert len(notary.tree) == size
    assert notary.damage is not None
    assert (notary.damage.position, notary.damage.what) == (forged, "unsealed")


def _money_event_after(ledger: Ledger, skip: int) -> int:
    """The position of a stored event with an amount, after the first ``skip`` events."""
    events = ledger.app.recorder.select_notifications(start=1, limit=10_000)
    return next(e.id for e in events[skip:] if b'"amount":' in bytes(e.state))




@pytest.mark.parametrize("tampering", ["event", "link"])
def test_an_event_written_here_and_changed_before_it_is_placed_is_named_not_placed(
    ledger: Ledger, notary: Notary, intruder: Intruder, tampering: str
) -> None:
    # Given events this process wrote and the notary has not yet placed (on PostgreSQL the
    # writer remembers each as it sealed it)
    History(ledger.app, RandomChooser(seed=8)).run(15)
    position = _money_event_after(ledger, 3)
    # When its row, or only its stored link, is changed behind the service's back first
    if tampering == "event":
        intruder.flip_amount_digit(position)
    else:
        intruder.run("UPDATE ledger_chain SET hash = %s WHERE position = %s",
                     ("f" * 64, position), unguarded=True)
    notary.round()
    # Then the notary names it, and places the events before it and nothing from it on
    assert notary.damage is not None
    assert (notary.damage.position, notary.damage.what) == (position, "content")
    assert list(notary.positions) == [
        e.id for e in ledger.app.recorder.select_notifications(start=1, limit=10_000)
        if e.id < position
    ]


def test_events_written_here_are_placed_without_their_seals_computed_again(
    ledger: Ledger, notary: Notary, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = seals_checked_here(monkeypatch)
    # Given events this process wrote
    History(ledger.app, RandomChooser(seed=3)).run(10)
    checked.clear()  # loading aggregates checks seals too: only the notary's are counted
    # When its notary places them
    notary.round()
    # Then on PostgreSQL the writer's memory of what it sealed vouches for each (the same
    # key over the same bytes), and SQLite's events are checked as they were
    assert len(notary.tree) > 0 and notary.damage is None
    assert checked == ([] if ledger.settings.kind == "postgres" else list(notary.positions))
    # And an event another process wrote is checked in full, on both stores
    other = open_application(ledger.settings)
    try:
        other.execute(OpenAccount("zed-elsewhere", "USD"), actor=SYSTEM)
    finally:
        other.close()
    placed = len(notary.tree)
    checked.clear()
    notary.round()
    assert len(notary.tree) == placed + 1 and notary.damage is None
    assert checked == [notary.positions[-1]]


def test_a_process_without_a_notary_keeps_nothing_of_what_it_writes(ledger: Ledger) -> None:
    # Given a process that writes and runs no notary (a `ledger` command, an import)
    History(ledger.app, RandomChooser(seed=3)).run(10)
    # Then its writer remembers none of its events: only a notary would read that memory
    assert getattr(ledger.app.recorder, "written", None) is None


def test_a_notary_made_after_writes_checks_those_in_full_and_trusts_only_later_ones(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given events written before this process's notary was made
    history = History(ledger.app, RandomChooser(seed=4))
    history.run(8)
    before = ledger.app.recorder.max_notification_id()
    guard_notary(ledger.app.recorder)
    signer = load_or_create_signer(tmp_path / "signing.key", "ledger.test/log", may_create=True)
    notary = Notary(ledger.app.recorder, signer, tmp_path / "checkpoints.txt", interval_s=3600)
    # And events written after it
    history.run(8)
    checked = seals_checked_here(monkeypatch)
    # When the notary places them all
    notary.round()
    # Then the earlier ones had their seals checked in full; on PostgreSQL the later ones
    # are vouched for by the writer's memory (SQLite's writer keeps none)
    assert notary.damage is None and list(notary.positions)[-1] > before
    earlier = [p for p in notary.positions if p <= before]
    later = [p for p in notary.positions if p > before]
    assert earlier and later
    assert checked == (earlier if ledger.settings.kind == "postgres" else earlier + later)


# -- ledger verify with checkpoints --------------------------------------------------------------


def test_verify_names_the_checkpoint_a_keyed_rewrite_before_it_breaks(
    ledger: Ledger, notary: Notary, intruder: Intruder
) -> None:
    History(ledger.app, RandomChooser(seed=5)).run(20)
    notary.round(force_checkpoint=True)
    last = notary.positions[-1]
    assert verify(ledger.settings, ledger.app, read_models=False,
           checkpoint_key=notary.signer.verifier).ok
    position = notary.positions[len(notary.tree) // 2]

    intruder.flip_amount_digit(position)
    intruder.relink_with_key(ledger.app.recorder.chain_key, position)  # type: ignore[attr-defined]

    report = verify(ledger.settings, ledger.app, read_models=False,
           checkpoint_key=notary.signer.verifier)
    # the chain was resealed with the key, so only the signed checkpoint and the stored leaf
    # hash (kept by the notary) still tell
    assert {"position": position, "what": "leaf"} in report.damage
    assert {"position": last, "what": "checkpoint"} in report.damage
    assert not report.ok


def test_a_truncation_after_a_checkpoint_is_caught_by_the_checkpoint_kept_outside(
    ledger: Ledger, notary: Notary, intruder: Intruder, tmp_path: Path
) -> None:
    # Given two checkpoints, the second kept in the checkpoint file outside the database
    history = History(ledger.app, RandomChooser(seed=9))
    history.run(10)
    notary.round(force_checkpoint=True)
    history.run(10)
    notary.round(force_checkpoint=True)
    notes = read_checkpoints((tmp_path / "checkpoints.txt").read_text())
    size = int(notes[-1].split("\n")[1])
    cut = notary.positions[size - 3]
    # When an insider cuts the log short after the first checkpoint, with its chain, leaves and
    # the second checkpoint's row
    for table, column in ((intruder.events, intruder.key), ("ledger_chain", "position"),
                          ("ledger_merkle_leaves", "position")):
        intruder.run(f"DELETE FROM {table} WHERE {column} >= %s", (cut,), unguarded=True)
    intruder.run("DELETE FROM ledger_checkpoints WHERE tree_size > %s", (size - 3,),
                 unguarded=True)
    # Then the database alone looks whole, but the checkpoint kept outside says what is gone
    assert verify(ledger.settings, ledger.app, read_models=False,
           checkpoint_key=notary.signer.verifier).damage == []
    report = verify(ledger.settings, ledger.app, read_models=False, checkpoint_notes=notes,
                    checkpoint_key=notary.signer.verifier)
    assert report.damage == [{"position": notary.positions[size - 4], "what": "checkpoint"}]
    assert "beyond the log" in report.problems[0]


def test_a_log_cut_after_a_checkpoint_and_grown_past_it_again_is_named_by_the_checkpoint(
    ledger: Ledger, notary: Notary, intruder: Intruder, tmp_path: Path
) -> None:
    # Given a checkpoint kept in the checkpoint file outside the database
    History(ledger.app, RandomChooser(seed=13)).run(12)
    assert notary.round(force_checkpoint=True) is not None
    kept = read_checkpoints((tmp_path / "checkpoints.txt").read_text())
    size = len(notary.tree)
    assert int(kept[-1].split("\n")[1]) == size
    # When an insider cuts the log's last three events (with their seals, leaves and the
    # checkpoint's row) and the log then grows past the checkpoint's size again, written by a
    # service started after the cut (the one running would place its next event after the
    # last one it wrote, and its seal would name the cut: test_verify)
    cut = notary.positions[size - 3]
    for table, column in ((intruder.events, intruder.key), ("ledger_chain", "position"),
                          ("ledger_merkle_leaves", "position")):
        intruder.run(f"DELETE FROM {table} WHERE {column} >= %s", (cut,), unguarded=True)
    intruder.run("DELETE FROM ledger_checkpoints", (), unguarded=True)
    with closing(open_application(ledger.settings)) as restarted:
        for i in range(3):
            restarted.open_account(f"regrown{i}", "EUR", actor=SYSTEM)
            restarted.deposit(f"regrown{i}", 1_000 + i, f"PAY-R{i}", actor=SYSTEM)
    # and a notary of a later start signs the regrown log
    later = Notary(ledger.app.recorder, notary.signer, tmp_path / "later.txt", interval_s=3600)
    assert later.round(force_checkpoint=True) is not None
    assert len(later.tree) > size and later.damage is None  # the database alone looks whole
    # Then verify with the kept checkpoint names it at the last position it covers: the
    # regrown log's first `size` events are not the ones it signed
    report = verify(ledger.settings, ledger.app, read_models=False, checkpoint_notes=kept,
                    checkpoint_key=notary.signer.verifier)
    assert not report.ok
    assert {"position": later.positions[size - 1], "what": "checkpoint"} in report.damage
    assert any("does not match the log" in p for p in report.problems), report.problems
    # And the later checkpoint is not consistent with the kept one: no consistency proof
    # from the kept size reaches the kept root
    (_, _, kept_root), (_, later_size, later_root) = (
        open_note(notary.signer.verifier.text(), note)
        for note in (kept[-1], read_checkpoints((tmp_path / "later.txt").read_text())[-1]))
    path = later.tree.consistency(size, later_size)
    assert not rfc_verify_consistency(size, later_size, kept_root, later_root, path)


# -- checkpoint rows written behind the service's back ---------------------------------------------


def test_a_copy_of_a_checkpoint_filed_beyond_the_log_is_named_and_signing_goes_on(
    ledger: Ledger, notary: Notary, intruder: Intruder, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a signed checkpoint
    history = History(ledger.app, RandomChooser(seed=6))
    history.run(8)
    first = notary.round(force_checkpoint=True)
    assert first is not None
    # When a copy of its note is INSERTed by SQL, filed under a tree of 10**12 events (no guard
    # refuses an INSERT), and the log grows
    intruder.run("INSERT INTO ledger_checkpoints (tree_size, root, note, made_at)"
                 " VALUES (%s, %s, %s, %s)", (10**12, "00" * 32, first, "then"), unguarded=False)
    history.run(8)
    with caplog.at_level(logging.ERROR, logger="projections.checkpoints"):
        made = notary.round(force_checkpoint=True)
    # Then the notary names the row in an ERROR line, and signs the grown log all the same:
    # the new checkpoint is stored, kept in the checkpoint file, and the latest one served
    assert notary.damage is not None and notary.damage.what == "checkpoint"
    assert "filed under 1000000000000 events" in caplog.text
    assert made is not None and made != first
    assert read_checkpoints((tmp_path / "checkpoints.txt").read_text()) == [first, made]
    assert latest_checkpoint(ledger.app.recorder) == stored_checkpoints(ledger.app.recorder)[1]
    assert stored_checkpoints(ledger.app.recorder)[1].note == made
    # and verify names it, at the last position its note covers
    report = verify(ledger.settings, ledger.app, read_models=False,
                    checkpoint_key=notary.signer.verifier)
    assert not report.ok
    assert report.damage == [{"position": _last_of(first, notary), "what": "checkpoint"}]
    assert "filed under 1000000000000 events" in report.problems[0]


def test_a_log_cut_after_a_checkpoint_row_filed_beyond_it_is_caught_by_the_file_kept_outside(
    ledger: Ledger, notary: Notary, intruder: Intruder, tmp_path: Path
) -> None:
    # Given a checkpoint, a copy of its note filed under 10**12 events, and the log grown and
    # checkpointed again by the notary
    history = History(ledger.app, RandomChooser(seed=7))
    history.run(8)
    first = notary.round(force_checkpoint=True)
    assert first is not None
    intruder.run("INSERT INTO ledger_checkpoints (tree_size, root, note, made_at)"
                 " VALUES (%s, %s, %s, %s)", (10**12, "00" * 32, first, "then"), unguarded=False)
    history.run(8)
    notary.round(force_checkpoint=True)
    kept = read_checkpoints((tmp_path / "checkpoints.txt").read_text())
    # When the events after the first checkpoint are deleted with their seals and leaves, and
    # the later checkpoint's row
    cut = notary.positions[_size_of(first)]
    for table, column in ((intruder.events, intruder.key), ("ledger_chain", "position"),
                          ("ledger_merkle_leaves", "position")):
        intruder.run(f"DELETE FROM {table} WHERE {column} >= %s", (cut,), unguarded=True)
    intruder.run("DELETE FROM ledger_checkpoints WHERE tree_size = %s", (_size_of(kept[-1]),),
                 unguarded=True)
    # Then verify with the checkpoint file kept outside the database names the cut
    report = verify(ledger.settings, ledger.app, read_models=False, checkpoint_notes=kept,
                    checkpoint_key=notary.signer.verifier)
    assert not report.ok
    assert any(f"checkpoint of {_size_of(kept[-1])} events is beyond the log" in p
               for p in report.problems), report.problems


@pytest.mark.parametrize("column", ["root", "tree_size"])
def test_a_checkpoint_row_changed_from_its_note_is_named_by_a_notary_started_afresh(
    ledger: Ledger, notary: Notary, intruder: Intruder, tmp_path: Path, column: str
) -> None:
    # Given two signed checkpoints
    history = History(ledger.app, RandomChooser(seed=12))
    history.run(6)
    first = notary.round(force_checkpoint=True)
    history.run(6)
    assert first is not None and notary.round(force_checkpoint=True) is not None
    size = _size_of(first)
    # When the first one's row is filed under another root or tree size than its note's
    value: object = "ab" * 32 if column == "root" else size - 1
    intruder.run(f"UPDATE ledger_checkpoints SET {column} = %s WHERE tree_size = %s",
                 (value, size), unguarded=True)
    # Then a notary started afresh names it, checks the one after it, and signs on
    history.run(4)
    fresh = Notary(ledger.app.recorder, notary.signer, tmp_path / "fresh.txt", interval_s=3600)
    assert fresh.round(force_checkpoint=True) is not None
    assert fresh.damage == Damage(fresh.positions[size - 1], "checkpoint")
    # and so does verify
    report = verify(ledger.settings, ledger.app, read_models=False,
                    checkpoint_key=notary.signer.verifier)
    assert report.damage == [{"position": fresh.positions[size - 1], "what": "checkpoint"}]
    assert "the row was written behind the service's back" in report.problems[0]


def _size_of(note: str) -> int:
    return int(note.split("\n")[1])


def _last_of(note: str, notary: Notary) -> int:
    """The position of the last event a checkpoint note covers."""
    return notary.positions[_size_of(note) - 1]


# -- the signing key a store takes (``adopt_signer``) --------------------------------------------

ORIGIN = "ledger.test/log"


def _note_in_the_name_of(key_hash: bytes, size: int, root: bytes) -> str:
    """A note forged by SQL: it names a key, with no signature that key made."""
    body = Checkpoint(ORIGIN, size, root).body()
    signature = base64.b64encode(key_hash + bytes(64)).decode()
    return f"{body}\n\u2014 {ORIGIN} {signature}\n"


def _insert(intruder: Intruder, size: int, note: str) -> None:
    intruder.run("INSERT INTO ledger_checkpoints (tree_size, root, note, made_at)"
                 " VALUES (%s, %s, %s, %s)", (size, (b"\x01" * 32).hex(), note, "then"),
                 unguarded=False)


def test_rows_forged_on_top_of_the_real_checkpoints_keep_no_key_from_starting(
    ledger: Ledger, intruder: Intruder, tmp_path: Path,
) -> None:
    # Given checkpoints signed with the store's key, and on top of them rows INSERTed by SQL,
    # more than a start looks at, in the name of the store's key and of another
    key = tmp_path / "signing.key"
    guard_notary(ledger.app.recorder)
    signer = adopt_signer(ledger.app.recorder, key, ORIGIN, may_create=True)
    notary = Notary(ledger.app.recorder, signer, tmp_path / "checkpoints.txt", interval_s=3600)
    History(ledger.app, RandomChooser(seed=5)).run(10)
    assert notary.round(force_checkpoint=True) is not None
    for n in range(ROWS_LOOKED_AT):
        _insert(intruder, 10**6 + 2 * n, _note_in_the_name_of(signer.verifier.hash, 1, b"x" * 32))
        _insert(intruder, 10**6 + 2 * n + 1, _note_in_the_name_of(b"\x0b" * 4, 1, b"x" * 32))
    # Then the store's key still starts (the forged rows are the notary's to name)
    assert adopt_signer(ledger.app.recorder, key, ORIGIN, may_create=True).verifier == (
        signer.verifier)


def test_a_fresh_store_whose_only_row_is_forged_in_its_key_s_name_takes_that_key(
    ledger: Ledger, intruder: Intruder, tmp_path: Path,
) -> None:
    key = tmp_path / "signing.key"
    guard_notary(ledger.app.recorder)
    signer = adopt_signer(ledger.app.recorder, key, ORIGIN, may_create=True)
    _insert(intruder, 5, _note_in_the_name_of(signer.verifier.hash, 5, b"\x01" * 32))
    assert adopt_signer(ledger.app.recorder, key, ORIGIN, may_create=True).verifier == (
        signer.verifier)


def test_two_hosts_started_at_once_with_keys_of_their_own_leave_the_store_one_signer(
    ledger: Ledger, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # Given two hosts that both found no checkpoint at start, each with a key of its own
    guard_notary(ledger.app.recorder)
    first = adopt_signer(ledger.app.recorder, tmp_path / "a.key", ORIGIN, may_create=True)
    second = adopt_signer(ledger.app.recorder, tmp_path / "b.key", ORIGIN, may_create=True)
    notary_a = Notary(ledger.app.recorder, first, tmp_path / "a.txt", interval_s=3600)
    notary_b = Notary(ledger.app.recorder, second, tmp_path / "b.txt", interval_s=3600)
    history = History(ledger.app, RandomChooser(seed=6))
    history.run(10)
    # When the first signs, and then the second would
    assert notary_a.round(force_checkpoint=True) is not None
    history.run(5)
    with caplog.at_level(logging.ERROR, logger="projections.checkpoints"):
        assert notary_b.round(force_checkpoint=True) is None
    # Then the second signs none and says why; the first goes on, its history undamaged
    assert "signs none; restart it with the store's LEDGER_SIGNING_KEY_FILE" in caplog.text
    assert notary_a.round(force_checkpoint=True) is not None and notary_a.damage is None
    assert {_signed_by(c.note) for c in stored_checkpoints(ledger.app.recorder)} == {
        f"{ORIGIN}+{first.verifier.hash.hex()}"}
    # and a restart of the second is refused
    with pytest.raises(NoteError, match="signed with the key"):
        adopt_signer(ledger.app.recorder, tmp_path / "b.key", ORIGIN, may_create=True)


# -- when a checkpoint is signed ------------------------------------------------------------------


def test_a_new_notary_signs_at_its_first_round_on_a_host_up_for_less_than_its_interval(
    ledger: Ledger, tmp_path: Path
) -> None:
    # Given a notary signing an hour apart, on a host up for 5 s (its monotonic clock's reading)
    guard_notary(ledger.app.recorder)
    signer = load_or_create_signer(tmp_path / "signing.key", "ledger.test/log", may_create=True)
    now_s = [5.0]
    notary = Notary(ledger.app.recorder, signer, tmp_path / "checkpoints.txt", interval_s=3600,
                    clock=lambda: now_s[0])
    history = History(ledger.app, RandomChooser(seed=9))
    history.run(5)
    # When its first round comes
    first = notary.round()
    # Then it signs the log at once, and the next an hour after
    assert first is not None and _size_of(first) == len(notary.tree)
    history.run(5)
    assert notary.round() is None
    now_s[0] += 3600
    assert notary.round() is not None


# -- the notary's thread stopped (``api.auditkit.NotaryThread``) ----------------------------------


N = TypeVar("N", bound=Notary)


class LastRoundFails(Notary):
    """A notary whose store is gone by its last round, the one forced at a stop."""

    def round(self, *, force_checkpoint: bool = False) -> str | None:
        if force_checkpoint:
            raise OSError("server closed the connection unexpectedly\n\tThis probably means"
                          " the server terminated abnormally")
        return super().round()


class LastRoundHangs(Notary):
    """A notary whose last round waits for a store that does not answer, until released."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.released = threading.Event()

    def round(self, *, force_checkpoint: bool = False) -> str | None:
        if force_checkpoint:
            self.released.wait(60.0)  # bounded: the test releases it once its stop returned
            return None
        return super().round()


def _made(kind: type[N], ledger: Ledger, tmp_path: Path) -> N:
    guard_notary(ledger.app.recorder)
    signer = load_or_create_signer(tmp_path / "signing.key", "ledger.test/log", may_create=True)
    return kind(ledger.app.recorder, signer, tmp_path / "checkpoints.txt", interval_s=3600)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_last_round_that_fails_at_a_stop_is_said_in_one_line_and_the_stop_goes_on(
    ledger: Ledger, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the notary's thread of a service whose store is gone by the time it stops
    thread = NotaryThread(_made(LastRoundFails, ledger, tmp_path))
    thread.start()
    # When it is stopped
    with caplog.at_level(logging.ERROR, logger="api.auditkit"):
        thread.stop()
    # Then its last round was tried, and its failure said in one line without a traceback
    (said,) = [r for r in caplog.records if r.name == "api.auditkit"]
    assert said.getMessage() == (
        "the notary's last round failed, so no checkpoint was signed at the stop: server closed"
        " the connection unexpectedly This probably means the server terminated abnormally")
    assert said.exc_info is None


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_last_round_that_does_not_end_keeps_no_stop_waiting_past_its_bound(
    ledger: Ledger, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the notary's thread of a service whose store does not answer its last round
    notary = _made(LastRoundHangs, ledger, tmp_path)
    thread = NotaryThread(notary, last_round_wait_s=0.1)
    thread.start()
    try:
        # When it is stopped
        with caplog.at_level(logging.ERROR, logger="api.auditkit"):
            thread.stop()
        # Then the stop returns, its last round still waiting, and says so in one line
        assert [r.getMessage() for r in caplog.records if r.name == "api.auditkit"] == [
            "the notary's last round did not end within 0.1 s: stopping without it, and the "
            "events since the last checkpoint may be signed by none"]
    finally:
        notary.released.set()
