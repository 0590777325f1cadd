"""The notary: the log's Merkle tree (``projections.merkle``) and its signed checkpoints
(``projections.notes``), kept beside the event store.

Every ``ledger serve`` process runs one, in a thread of its own. Each round it:

1. reads the events after the last leaf it holds, admits only those whose writer's seal holds
   and follows the one before (``projections.chain.SealWatch``: a forged, edited, removed or
   reordered event never becomes a leaf), and appends their leaf hashes to its tree in memory
   and to ``ledger_merkle_leaves`` (leaf index, position, leaf hash; INSERT and SELECT only);
2. re-reads the last ``TAIL_WINDOW`` leaves' events and checks them against its tree (an event
   edited or deleted after it became a leaf);
3. checks every checkpoint others stored since the last round: its signature with the
   service's verifier key and its root against the tree of its size (so each is consistent with
   every earlier one);
4. when ``interval_s`` has passed since the last checkpoint and the tree grew, signs a
   checkpoint of the whole tree, stores it in ``ledger_checkpoints`` and appends it to
   ``LEDGER_CHECKPOINT_FILE``.

Damage found (``Notary.damage``) is logged as an ERROR naming the position, counted, and makes
``/ready`` fail, until an operator repairs the store and restarts the service. The proofs the
API answers come from the tree in memory: O(log n) hashes of memoized subtrees.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Notification, Recorder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier

from projections.chain import Damage, SealWatch
from projections.merkle import Tree, event_leaf_hash
from projections.notes import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    append_checkpoint,
    split_note,
)
from projections.store import (
    _PG_GUARDS,
    _SQLITE_GUARDS,
    _SQLITE_KEYS,
    read_log,
    replace_guard_function,
)

LEAVES_TABLE = "ledger_merkle_leaves"
CHECKPOINTS_TABLE = "ledger_checkpoints"
NOTARY_DDL = (
    "CREATE TABLE IF NOT EXISTS ledger_merkle_leaves ("
    " leaf_index BIGINT PRIMARY KEY, position BIGINT NOT NULL UNIQUE, hash TEXT NOT NULL,"
    " CHECK (length(hash) = 64))",
    "CREATE TABLE IF NOT EXISTS ledger_checkpoints ("
    " tree_size BIGINT PRIMARY KEY, root TEXT NOT NULL, note TEXT NOT NULL,"
    " made_at TEXT NOT NULL)",
)
DEFAULT_INTERVAL_S = 60.0
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.05, 3600.0
READ_BATCH = 1000
MAX_BATCHES_PER_ROUND = 100  # a round reads at most this many batches, then checks the rest
TAIL_WINDOW = 256
_NOTARY_LOCK_KEY = 0x1ED6F0
_INSERT_LEAVES_PG = (
    "INSERT INTO ledger_merkle_leaves (leaf_index, position, hash)"
    " SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[])"
)
log = logging.getLogger(__name__)

_SQLITE_KEYS.setdefault(LEAVES_TABLE, "leaf_index = NEW.leaf_index OR position = NEW.position")
_SQLITE_KEYS.setdefault(CHECKPOINTS_TABLE, "tree_size = NEW.tree_size")


def guard_notary(recorder: Recorder) -> None:
    """Create the leaves' and checkpoints' tables and make the database refuse UPDATE, DELETE
    and TRUNCATE of them (needs the tables' owner: ``ledger migrate``, or a first start)."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=True) as cursor:
            for statement in NOTARY_DDL:
                cursor.execute(statement)
            for table in (LEAVES_TABLE, CHECKPOINTS_TABLE):
                for guard in _SQLITE_GUARDS:
                    cursor.execute(guard.format(t=table, key=_SQLITE_KEYS[table]))
        return
    assert isinstance(recorder, PostgresApplicationRecorder)
    schema = Identifier(recorder.datastore.schema)
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (_NOTARY_LOCK_KEY,))
        for statement in NOTARY_DDL:
            curs.execute(statement)
        replace_guard_function(curs, schema)
        for table in (LEAVES_TABLE, CHECKPOINTS_TABLE):
            for guard in _PG_GUARDS:
                curs.execute(SQL(guard).format(
                    schema=schema, table=Identifier(table),
                    trigger_rows=Identifier(f"{table}_refuse_change"),
                    trigger_truncate=Identifier(f"{table}_refuse_truncate")))


@contextmanager
def _transaction(recorder: Recorder, *, lock: bool) -> Iterator[Any]:
    """One transaction; ``run(sql, params)`` answers rows as dicts. ``lock``: one process at a
    time (PostgreSQL's advisory lock; SQLite writes one at a time anyway)."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=True) as cursor:
            def run_sqlite(sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
                cursor.execute(sql.replace("%s", "?"), tuple(params))
                described = cursor.sqlite_cursor.description
                return [dict(r) for r in cursor.fetchall()] if described else []
            yield run_sqlite
        return
    assert isinstance(recorder, PostgresApplicationRecorder)
    with recorder.datastore.transaction(commit=True) as curs:
        if lock:
            curs.execute("SELECT pg_advisory_xact_lock(%s)", (_NOTARY_LOCK_KEY,))

        def run_pg(sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
            curs.execute(sql, tuple(params))
            return [dict(r) for r in curs.fetchall()] if curs.description else []
        yield run_pg


@dataclass(frozen=True)
class StoredCheckpoint:
    tree_size: int
    root: bytes
    note: str


def stored_checkpoints(recorder: Recorder, after_size: int = 0) -> list[StoredCheckpoint]:
    with _transaction(recorder, lock=False) as run:
        rows = run("SELECT tree_size, root, note FROM ledger_checkpoints WHERE tree_size > %s"
                   " ORDER BY tree_size", (after_size,))
    return [StoredCheckpoint(int(r["tree_size"]), bytes.fromhex(r["root"]), r["note"])
            for r in rows]


def latest_checkpoint(recorder: Recorder) -> StoredCheckpoint | None:
    with _transaction(recorder, lock=False) as run:
        rows = run("SELECT tree_size, root, note FROM ledger_checkpoints"
                   " ORDER BY tree_size DESC LIMIT 1")
    return next((StoredCheckpoint(int(r["tree_size"]), bytes.fromhex(r["root"]), r["note"])
                 for r in rows), None)


def stored_leaves(recorder: Recorder, after_index: int = -1) -> Iterator[tuple[int, int, bytes]]:
    """(leaf index, position, leaf hash) from the leaves' table, in order."""
    while True:
        with _transaction(recorder, lock=False) as run:
            rows = run("SELECT leaf_index, position, hash FROM ledger_merkle_leaves"
                       " WHERE leaf_index > %s ORDER BY leaf_index LIMIT %s",
                       (after_index, READ_BATCH))
        for row in rows:
            yield int(row["leaf_index"]), int(row["position"]), bytes.fromhex(row["hash"])
        if len(rows) < READ_BATCH:
            return
        after_index = int(rows[-1]["leaf_index"])


def notification_leaf(notification: Notification) -> bytes:
    return event_leaf_hash(notification.id, notification.originator_id,
                           notification.originator_version, notification.topic,
                           notification.state)


class Notary:
    """The tree, the checkpoints and the watch over them, for one process."""

    def __init__(self, recorder: Recorder, signer: Signer, checkpoint_file: Path | None, *,
                 interval_s: float = DEFAULT_INTERVAL_S, origin: str | None = None) -> None:
        if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
            raise ValueError(f"the checkpoint interval is {MIN_INTERVAL_S}..{MAX_INTERVAL_S} s")
        key = getattr(recorder, "chain_key", None)
        assert key is not None, "the notary admits only sealed events: wire the recorder first"
        self.recorder = recorder
        self.signer = signer
        self.verifier: Verifier = signer.verifier
        self.origin = origin or signer.name
        self.checkpoint_file = checkpoint_file
        self.interval_s = interval_s
        self.tree = Tree()
        self.positions = array("q")  # leaf index → log position
        self.damage: Damage | None = None
        self.damage_found = 0  # how many times damage was found (a counter for /metrics)
        self.checkpoints_made = 0
        # Events this process writes from now on come back as written: the writer's memory of
        # them vouches for their seals (``WrittenHere``; PostgreSQL's writer keeps one).
        keep_written = getattr(recorder, "keep_written", None)
        self._watch = SealWatch(recorder, key,
                                written=keep_written() if keep_written is not None else None)
        self._checked_size = 0  # the largest stored checkpoint checked
        self._last_made_s = 0.0
        self._stored_leaves = 0
        self._lock = threading.RLock()

    # -- reading ---------------------------------------------------------------------------------

    def leaf_index_of(self, position: int) -> int | None:
        i = bisect_left(self.positions, position)
        return i if i < len(self.positions) and self.positions[i] == position else None

    def placed_after(self, position: int, count: int) -> tuple[int, list[int]]:
        """The leaf index of the first event after ``position``, and the positions placed from
        there on (at most ``count``)."""
        i = bisect_right(self.positions, position)
        return i, self.positions[i:i + count].tolist()

    def latest(self) -> StoredCheckpoint | None:
        return latest_checkpoint(self.recorder)

    # -- one round -------------------------------------------------------------------------------

    def round(self, *, force_checkpoint: bool = False) -> str | None:
        """Catch up, check, and sign a checkpoint when due; the new note, if one was made."""
        with self._lock:
            self._grow()
            self._store_leaves()
            self._check_tail()
            self._check_checkpoints()
            due = time.monotonic() - self._last_made_s >= self.interval_s
            if (due or force_checkpoint) and self.damage is None:
                return self._checkpoint()
            return None

    def _grow(self) -> None:
        for _ in range(MAX_BATCHES_PER_ROUND):
            after = self.positions[-1] if self.positions else 0
            batch = list(read_log(self.recorder, after, READ_BATCH))
            admitted = self._watch.admit(after, batch)
            for notification in admitted:
                self.tree.append(notification_leaf(notification))
                self.positions.append(notification.id)
            if self._watch.damage is not None:
                self._found(self._watch.damage)
            if len(admitted) < READ_BATCH:
                return

    def _store_leaves(self) -> None:
        if self._stored_leaves == len(self.tree):
            return
        with _transaction(self.recorder, lock=True) as run:
            # Leaves are stored in index order from 0, so the last index says how many there
            # are: one look down the primary key, where COUNT(*) read every leaf every round.
            rows = run("SELECT COALESCE(MAX(leaf_index) + 1, 0) AS n FROM ledger_merkle_leaves")
            stored = int(rows[0]["n"])
            postgres = isinstance(self.recorder, PostgresApplicationRecorder)
            for start in range(stored, len(self.tree), READ_BATCH):
                end = min(start + READ_BATCH, len(self.tree))
                indexes = range(start, end)
                hashes = [self.tree.leaf(i).hex() for i in indexes]
                if postgres:
                    # One statement text whatever the count, each column one array: psycopg
                    # parses it once (it caches no statement of more than 50 parameters) and
                    # the server plans three parameters, not three thousand.
                    run(_INSERT_LEAVES_PG, [list(indexes), self.positions[start:end].tolist(),
                                            hashes])
                    continue
                values = ", ".join(["(%s, %s, %s)"] * (end - start))
                params: list[Any] = []
                for i, leaf in zip(indexes, hashes, strict=True):
                    params += [i, self.positions[i], leaf]
                # only placeholders are joined in: the values travel as parameters
                run("INSERT INTO ledger_merkle_leaves (leaf_index, position, hash)"  # noqa: S608
                    f" VALUES {values}", params)
        self._stored_leaves = len(self.tree)

    def _check_tail(self) -> None:
        n = len(self.tree)
        if n == 0:
            return
        first = max(0, n - TAIL_WINDOW)
        after = self.positions[first - 1] if first else 0
        events = {e.id: e for e in read_log(self.recorder, after, TAIL_WINDOW + 1,
                                            upto=self.positions[n - 1])}
        for i in range(first, n):
            event = events.get(self.positions[i])
            if event is None:
                self._found(Damage(self.positions[i], "missing"))
                return
            if notification_leaf(event) != self.tree.leaf(i):
                self._found(Damage(self.positions[i], "content"))
                return
        unknown = sorted(set(events) - set(self.positions[first:n]))
        if unknown:
            self._found(Damage(unknown[0], "unsealed"))

    def _check_checkpoints(self) -> None:
        for stored in stored_checkpoints(self.recorder, self._checked_size):
            if stored.tree_size > len(self.tree):
                return  # not yet grown that far: checked in a later round
            problem = checkpoint_problem(self.verifier, self.tree, stored.note)
            if problem is not None:
                position = self.positions[stored.tree_size - 1]
                self._found(Damage(position, "checkpoint"), problem)
                return
            self._checked_size = stored.tree_size

    def _checkpoint(self) -> str | None:
        size = len(self.tree)
        if size == 0 or size <= self._checked_size:
            return None
        root = self.tree.root(size)
        note = self.signer.sign(Checkpoint(self.origin, size, root).body())
        with _transaction(self.recorder, lock=True) as run:
            taken = run("SELECT 1 AS taken FROM ledger_checkpoints WHERE tree_size >= %s",
                        (size,))
            if not taken:
                run("INSERT INTO ledger_checkpoints (tree_size, root, note, made_at)"
                    " VALUES (%s, %s, %s, %s)",
                    (size, root.hex(), note, datetime.now(UTC).isoformat()))
        self._last_made_s = time.monotonic()
        if taken:
            return None
        self.checkpoints_made += 1
        self._checked_size = size
        if self.checkpoint_file is not None:
            append_checkpoint(self.checkpoint_file, note)
        return note

    def _found(self, damage: Damage, detail: str | None = None) -> None:
        if self.damage != damage:
            self.damage_found += 1
            log.error("history damaged at %s%s", damage.describe(),
                      f" ({detail})" if detail else "")
        self.damage = damage

    # -- proofs ----------------------------------------------------------------------------------

    def inclusion(self, position: int, tree_size: int) -> dict[str, Any]:
        with self._lock:
            index = self.leaf_index_of(position)
            if index is None:
                raise LookupError(f"position {position} is not a leaf of the tree yet")
            path = self.tree.inclusion(index, tree_size)
            leaf = self.tree.leaf(index)
        return {"leaf_index": index, "tree_size": tree_size, "leaf_hash": b64(leaf),
                "path": [b64(p) for p in path]}

    def consistency(self, old: int, new: int) -> dict[str, Any]:
        with self._lock:
            path = self.tree.consistency(old, new)
        return {"from": old, "to": new, "path": [b64(p) for p in path]}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def checkpoint_problem(verifier: Verifier | None, tree: Tree, note: str) -> str | None:
    """What is wrong with a checkpoint note against the tree; None when it holds. Without a
    verifier key (``ledger verify`` where the signing key is not), the root is still checked
    but not the signature."""
    try:
        body = split_note(note)[0] if verifier is None else verifier.verify(note)
        checkpoint = Checkpoint.parse(body)
    except NoteError as error:
        return str(error)
    if checkpoint.tree_size > len(tree):
        return f"the checkpoint of {checkpoint.tree_size} events is beyond the log's {len(tree)}"
    if tree.root(checkpoint.tree_size) != checkpoint.root:
        return (f"the signed root of the first {checkpoint.tree_size} events does not match "
                "the log (events before it were rewritten)")
    return None


__all__ = [
    "Notary",
    "StoredCheckpoint",
    "checkpoint_problem",
    "guard_notary",
    "latest_checkpoint",
    "notification_leaf",
    "stored_checkpoints",
    "stored_leaves",
]


def sealed_tree(recorder: Recorder) -> tuple[Tree, list[int]]:
    """The tree of every event the chain holds a link for, and their positions (what the
    notary's tree holds when the history is whole)."""
    from projections.chain import Chain, all_notifications

    tree, positions = Tree(), []
    links = iter(Chain(recorder).links())
    pending = next(links, None)
    for event in all_notifications(recorder):
        while pending is not None and pending.position < event.id:
            pending = next(links, None)
        if pending is not None and pending.position == event.id:
            tree.append(notification_leaf(event))
            positions.append(event.id)
    return tree, positions


def checkpoint_damage(
    recorder: Recorder, verifier: Verifier | None, notes: Sequence[str] = ()
) -> tuple[list[tuple[Damage, str]], int]:
    """Every stored checkpoint and every note given (from files kept outside the database)
    against the log: signature (when there is a verifier key), root of its size, and each
    stored leaf hash against its event. A checkpoint that does not hold is named at the last
    position it covers (or, beyond the log, at the log's end). Answers what does not hold, and
    how many checkpoints were checked."""
    tree, positions = sealed_tree(recorder)
    found: list[tuple[Damage, str]] = []
    for index, position, stored in stored_leaves(recorder):
        if index >= len(tree) or positions[index] != position or tree.leaf(index) != stored:
            found.append((Damage(position, "leaf"), f"stored leaf {index} differs"))
    all_notes = [c.note for c in stored_checkpoints(recorder)] + list(notes)
    for note in all_notes:
        problem = checkpoint_problem(verifier, tree, note)
        if problem is None:
            continue
        try:
            size = Checkpoint.parse(split_note(note)[0]).tree_size
        except NoteError:
            size = 0
        at = positions[min(size, len(positions)) - 1] if positions and size else 0
        found.append((Damage(at, "checkpoint"), problem))
    return found, len(all_notes)
