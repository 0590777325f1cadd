"""The notary: the log's Merkle tree (``projections.merkle``) and its signed checkpoints
(``projections.notes``), kept beside the event store.

Every ``ledger serve`` process runs one, in a thread of its own. Each round it:

1. reads the events after the last leaf it holds, admits only those whose writer's seal holds
   and follows the one before (``projections.chain.SealWatch``: a forged, edited, removed or
   reordered event never becomes a leaf), and appends their leaf hashes to its tree in memory
   and to ``ledger_merkle_leaves`` (leaf index, position, leaf hash; INSERT and SELECT only);
2. re-reads the last ``TAIL_WINDOW`` leaves' events and checks them against its tree (an event
   edited or deleted after it became a leaf), and ``sweep_window`` leaves before them from where
   the last round left off, going round the whole tree: an event edited or deleted anywhere in
   the log is found within one turn (a million events in about 35 minutes at the defaults),
   not only by ``ledger verify`` or a restarted notary;
3. checks every checkpoint others stored since the last round: its signature with the
   service's verifier key, the row's tree size and root against its signed note's, and its root
   against the tree of its size (so each is consistent with every earlier one); and that no
   event is stored at position 0 or below (one index look: the writer never places one there,
   no reader of the log sees it, and it breaks the aggregate it names); and the largest
   checkpoint this key signed at the end of ``LEDGER_CHECKPOINT_FILE`` (read at the first round:
   the file is outside the database, so a rollback of the log's tail with its seals, leaves and
   checkpoint rows, or a restore of an older backup, leaves it there) against the tree: a log
   shorter than it, or whose first events are not the ones it signed, is damage to the log;
4. when ``interval_s`` has passed since the last checkpoint (or the round is forced: ``ledger
   checkpoint``, and the last round of a ``ledger serve`` that stops) and the tree grew past
   every checkpoint whose signed note it checked, signs a checkpoint of the whole tree, stores
   it in ``ledger_checkpoints`` and appends it to ``LEDGER_CHECKPOINT_FILE``.

Damage found (``Notary.damage``) is logged as an ERROR naming the position, counted, and makes
``/ready`` fail, until an operator repairs the store and restarts the service. Damage to the
log stops the signing of checkpoints; a checkpoint row that is not what its signed note says
(a tree size or root of its own, a note that does not verify, more events than the log holds)
is damage to the checkpoints' table only, and signing goes on: such a row can neither pass for
a checkpoint already signed nor keep the notary from checking the rows after it. The proofs the
API answers come from the tree in memory: O(log n) hashes of memoized subtrees.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Notification, Recorder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from psycopg.sql import SQL, Identifier

from projections.chain import Damage, SealWatch, below_the_log
from projections.merkle import Tree, event_leaf_hash
from projections.notes import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    append_checkpoint,
    load_or_create_signer,
    signer_to_sign_with,
    split_note,
)
from projections.staff import MARKS_DDL
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
# Events written after the last checkpoint kept outside the database can be cut without a
# trace: a graceful stop signs a last one (``api.auditkit.NotaryThread``), so this bounds the
# window a crash leaves. A checkpoint is signed only when the log grew: an idle one signs none.
DEFAULT_INTERVAL_S = 10.0
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.05, 3600.0
READ_BATCH = 1000
MAX_BATCHES_PER_ROUND = 100  # a round reads at most this many batches, then checks the rest
TAIL_WINDOW = 256
# Leaves before the tail window a round re-checks, going round the tree (``Notary._sweep``).
SWEEP_WINDOW = 1000
# Stored checkpoints a round checks at most, and rows looked at when asking whether a checkpoint
# covering the tree is signed already, or which one is the latest.
CHECKPOINTS_PER_ROUND = 1000
ROWS_LOOKED_AT = 16
MAX_DAMAGE_NAMED = 1000  # distinct damage a notary logs and counts, at most
ALL_ROWS = 2**63 - 1  # the limit of a read of every row (``ledger verify``)
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
    and TRUNCATE of them (needs the tables' owner: ``ledger migrate``, or a first start); and
    the staff directory's marks' table (``projections.staff``: sealed, not guarded)."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=True) as cursor:
            for statement in (*NOTARY_DDL, MARKS_DDL):
                cursor.execute(statement)
            for table in (LEAVES_TABLE, CHECKPOINTS_TABLE):
                for guard in _SQLITE_GUARDS:
                    cursor.execute(guard.format(t=table, key=_SQLITE_KEYS[table]))
        return
    assert isinstance(recorder, PostgresApplicationRecorder)
    schema = Identifier(recorder.datastore.schema)
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (_NOTARY_LOCK_KEY,))
        for statement in (*NOTARY_DDL, MARKS_DDL):
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
    """A row of ``ledger_checkpoints``: the tree size and root it is filed under, and the signed
    note. Only the note is signed: the columns say what the note says only when the service
    wrote the row (``signed_checkpoint``)."""

    tree_size: int
    root: bytes
    note: str


def _as_read(recorder: Recorder, *columns: str) -> str:
    """The select list of these columns (fixed names, never input). SQLite keeps whatever is
    written into a column, bytes that are no UTF-8 among them, and fails the whole read of a
    TEXT value that does not decode: read as bytes there, so that such a row forged behind the
    service's back is named (``_text``) rather than stopping every check that reads it."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        return ", ".join(f"CAST({c} AS BLOB) AS {c}" if c in _TEXT_COLUMNS else c
                         for c in columns)
    return ", ".join(columns)


_TEXT_COLUMNS = frozenset({"root", "note", "hash"})


def _text(value: Any) -> Any:
    """A column read as bytes (``_as_read``) as text, what does not decode replaced."""
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return value


def _stored(row: dict[str, Any]) -> StoredCheckpoint:
    # A row written behind the service's back may hold anything its columns' types let it (on
    # SQLite, any type): what does not parse is kept as what no note says, and named as such.
    try:
        size = int(row["tree_size"])
    except (TypeError, ValueError):
        size = -1
    try:
        root = bytes.fromhex(_text(row["root"]))
    except (TypeError, ValueError):
        root = b""
    return StoredCheckpoint(size, root, str(_text(row["note"])))


def stored_checkpoints(recorder: Recorder, after_size: int = 0,
                       limit: int = ALL_ROWS) -> list[StoredCheckpoint]:
    """The stored checkpoints filed above ``after_size``, in size order (at most ``limit``)."""
    with _transaction(recorder, lock=False) as run:
        rows = run(f"SELECT {_as_read(recorder, 'tree_size', 'root', 'note')}"  # noqa: S608
                   " FROM ledger_checkpoints WHERE tree_size > %s"
                   " ORDER BY tree_size LIMIT %s", (after_size, limit))
    return [_stored(r) for r in rows]


def latest_checkpoint(recorder: Recorder,
                      verifier: Verifier | None = None) -> StoredCheckpoint | None:
    """The stored checkpoint of the largest tree whose row says what its note says and, given
    the service's ``verifier``, whose signature holds; other rows (filed under another size or
    root than their note's, or INSERTed with a signature no one with the signing key made) are
    passed over: the service serves only what it signed (at most ``ROWS_LOOKED_AT`` rows are
    looked at). Without a verifier the signature is the reader's to check."""
    with _transaction(recorder, lock=False) as run:
        newest = _newest(recorder, run)
    return next((stored for stored in newest
                 if signed_checkpoint(verifier, stored)[1] is None), None)


def _newest(recorder: Recorder, run: Any) -> list[StoredCheckpoint]:
    """The stored checkpoints of the largest trees (``ROWS_LOOKED_AT``), largest first."""
    rows = run(f"SELECT {_as_read(recorder, 'tree_size', 'root', 'note')}"  # noqa: S608
               " FROM ledger_checkpoints ORDER BY tree_size DESC LIMIT %s", (ROWS_LOOKED_AT,))
    return [_stored(row) for row in rows]


def adopt_signer(recorder: Recorder, path: Path, origin: str, *, may_create: bool) -> Signer:
    """The signing key at ``path``, when it is the key the store's checkpoints are signed
    with, under ``origin``: one of them verifies with it, or the newest (``ROWS_LOOKED_AT``)
    name no other key.

    A store with no checkpoint takes any key, made when missing and ``may_create``. One with
    checkpoints never gets a new key (a second host started without the key file, or from
    another folder): with it the history would read as damaged here, and the checkpoints this
    process signed would make every other server's read so too. NoteError says which key the
    store wants."""
    with _transaction(recorder, lock=False) as run:
        named = _keys_named(_newest(recorder, run))
        if not named:
            return load_or_create_signer(path, origin, may_create=may_create)
        wanted = (f"this store's checkpoints are signed with the key {' or '.join(sorted(named))}"
                  " (`ledger keys public` prints a key's; LEDGER_ORIGIN names it)")
        if not path.exists():
            raise NoteError(f"no signing key at {path} (LEDGER_SIGNING_KEY_FILE), and {wanted}: "
                            "put that key there; a new one would read the whole history as "
                            "damaged")
        signer = signer_to_sign_with(path, origin)
        if _others_only(recorder, run, named, signer.verifier):
            raise NoteError(f"the signing key at {path} (LEDGER_SIGNING_KEY_FILE) is "
                            f"{signer.verifier.text()}, and {wanted}")
    return signer


def _keys_named(stored: list[StoredCheckpoint]) -> set[str]:
    """The keys the rows' signatures name (``origin+keyhash``), a row that cannot be read
    naming none."""
    return {_signed_by(row.note) for row in stored} - {""}


def _others_only(recorder: Recorder, run: Any, named: set[str], verifier: Verifier) -> bool:
    """Whether the store's checkpoints are another key's and none ``verifier``'s: ``named``
    (the newest rows' keys) names another, and no row verifies with it. Rows that name only
    this key are its own, or forged in its name (the notary names those)."""
    own = f"{verifier.name}+{verifier.hash.hex()}"
    return bool(named - {own}) and not _signed_a_row(recorder, run, verifier)


def _signed_a_row(recorder: Recorder, run: Any, verifier: Verifier) -> bool:
    """Whether a stored checkpoint verifies with ``verifier`` (read with ``run``, a
    transaction's): looked for from the newest, a bounded page at a time (forged rows on top
    hide none below them)."""
    below = ALL_ROWS
    while below > 0:
        rows = run(f"SELECT {_as_read(recorder, 'tree_size', 'root', 'note')}"  # noqa: S608
                   " FROM ledger_checkpoints WHERE tree_size < %s"
                   " ORDER BY tree_size DESC LIMIT %s", (below, CHECKPOINTS_PER_ROUND))
        stored = [_stored(row) for row in rows]
        if any(signed_checkpoint(verifier, each)[1] is None for each in stored):
            return True
        if len(rows) < CHECKPOINTS_PER_ROUND:
            return False
        below = min(each.tree_size for each in stored)
    return False


def _signed_by(note: str) -> str:
    """Who signed a stored note, as ``origin+keyhash`` (what ``Verifier.text`` begins with);
    empty when the note cannot be read."""
    try:
        _, signatures = split_note(note)
    except NoteError:
        return ""
    return ", ".join(f"{name}+{signature[:4].hex()}" for name, signature in signatures)


def _covers(stored: StoredCheckpoint) -> int:
    """How many events a stored row's note says it covers (its body parsed, its signature not
    checked), or the row's own tree size when the note does not parse."""
    try:
        return read_note(None, stored.note).tree_size
    except NoteError:
        return stored.tree_size


def read_note(verifier: Verifier | None, note: str) -> Checkpoint:
    """The checkpoint a note carries, its signature checked with ``verifier`` (when there is
    one: without, the body is only parsed); NoteError when it does not hold."""
    return Checkpoint.parse(split_note(note)[0] if verifier is None else verifier.verify(note))


def signed_checkpoint(
    verifier: Verifier | None, stored: StoredCheckpoint
) -> tuple[Checkpoint | None, str | None]:
    """The checkpoint a stored row's note carries, when its signature holds (unchecked without
    a verifier) and the row is filed under the note's own tree size and root; else None and
    what is wrong with the row."""
    try:
        signed = read_note(verifier, stored.note)
    except NoteError as error:
        return None, str(error)
    problem = filed_otherwise(stored, signed)
    return (None, problem) if problem is not None else (signed, None)


def filed_otherwise(stored: StoredCheckpoint, signed: Checkpoint) -> str | None:
    """How a stored row differs from the checkpoint its note carries; None when it does not."""
    if (stored.tree_size, stored.root) == (signed.tree_size, signed.root):
        return None
    return (f"the row is filed under {stored.tree_size} events and root "
            f"{stored.root.hex()[:16] or '(none)'}, its signed note says {signed.tree_size} "
            f"events and root {signed.root.hex()[:16]}: the row was written behind the "
            "service's back")


def stored_leaves(recorder: Recorder, after_index: int = -1) -> Iterator[tuple[int, int, bytes]]:
    """(leaf index, position, leaf hash) from the leaves' table, in order. A row written behind
    the service's back may hold anything its columns' types let it (the CHECK counts characters,
    not hex digits; on SQLite any type): what does not parse is answered as no hash (``b""``,
    which matches no leaf) or index and position -1, to be named, not to crash the reader."""
    while True:
        with _transaction(recorder, lock=False) as run:
            rows = run(f"SELECT {_as_read(recorder, 'leaf_index', 'position', 'hash')}"  # noqa: S608
                       " FROM ledger_merkle_leaves WHERE leaf_index > %s"
                       " ORDER BY leaf_index LIMIT %s",
                       (after_index, READ_BATCH))
        for row in rows:
            yield _int_or(row["leaf_index"]), _int_or(row["position"]), _hash_or_none(row["hash"])
        if len(rows) < READ_BATCH:
            return
        after_index = _int_or(rows[-1]["leaf_index"])
        if after_index < 0:
            return  # a forged index that is no number: the order past it is the store's own


def _int_or(value: Any, default: int = -1) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _hash_or_none(value: Any) -> bytes:
    try:
        raw = bytes.fromhex(_text(value))
    except (TypeError, ValueError):
        return b""
    return raw if len(raw) == 32 else b""


def notification_leaf(notification: Notification) -> bytes:
    return event_leaf_hash(notification.id, notification.originator_id,
                           notification.originator_version, notification.topic,
                           notification.state)


class Notary:
    """The tree, the checkpoints and the watch over them, for one process."""

    def __init__(self, recorder: Recorder, signer: Signer, checkpoint_file: Path | None, *,
                 interval_s: float = DEFAULT_INTERVAL_S, origin: str | None = None,
                 sweep_window: int = SWEEP_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
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
        assert sweep_window > 0
        self.sweep_window = sweep_window
        self._swept = 0  # the next leaf the sweep re-checks
        self.tree = Tree()
        self.positions = array("q")  # leaf index → log position
        self.damage: Damage | None = None
        self.damage_found = 0  # how many times damage was found (a counter for /metrics)
        self._named: set[tuple[Damage, str | None]] = set()  # what was logged (bounded)
        self._signing_stopped: Damage | None = None  # the log's damage: no checkpoint of it
        self.checkpoints_made = 0
        self._signs_here = False  # once a stored checkpoint is this key's (_another_key_signs)
        self._said_not_signing = False
        # Events this process writes from now on come back as written: the writer's memory of
        # them vouches for their seals (``WrittenHere``; PostgreSQL's writer keeps one).
        keep_written = getattr(recorder, "keep_written", None)
        self._watch = SealWatch(recorder, key,
                                written=keep_written() if keep_written is not None else None)
        self._checked_size = 0  # the largest stored checkpoint checked: its note and its root
        # ``clock``: seconds, only ever compared (a monotonic clock counts from the host's boot).
        # None made yet: the first round's is due at once, however short a time the host is up.
        self._clock = clock
        self._last_made_s = -math.inf
        self._stored_leaves = 0
        # The largest checkpoint of this key kept in the checkpoint file (outside the database),
        # read at the first round and checked against the tree until it holds (``_check_kept``).
        self._kept: Checkpoint | None = None
        self._kept_read = False
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
        return latest_checkpoint(self.recorder, self.verifier)

    # -- one round -------------------------------------------------------------------------------

    def round(self, *, force_checkpoint: bool = False) -> str | None:
        """Catch up, check, and sign a checkpoint when due; the new note, if one was made."""
        with self._lock:
            self._grow()
            self._store_leaves()
            self._check_tail()
            self._sweep()
            self._check_below_the_log()
            self._check_checkpoints()
            self._check_kept()
            due = self._clock() - self._last_made_s >= self.interval_s
            if (due or force_checkpoint) and self._signing_stopped is None:
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
        if n:
            self._check_leaves(max(0, n - TAIL_WINDOW), n)

    def _sweep(self) -> None:
        """Re-check the next ``sweep_window`` leaves before the tail window, from where the last
        round left off, and from the first leaf again once past the last."""
        before_tail = len(self.tree) - TAIL_WINDOW
        if before_tail <= 0:
            return
        if self._swept >= before_tail:
            self._swept = 0
        end = min(self._swept + self.sweep_window, before_tail)
        self._check_leaves(self._swept, end)
        self._swept = end

    def _check_leaves(self, first: int, end: int) -> None:
        """The events of leaves ``first`` to ``end`` (not included), read again and checked
        against the tree: each still there and unchanged, and no other event between them."""
        assert 0 <= first < end <= len(self.tree)
        after = self.positions[first - 1] if first else 0
        events = {e.id: e for e in read_log(self.recorder, after, end - first + 1,
                                            upto=self.positions[end - 1])}
        for i in range(first, end):
            event = events.get(self.positions[i])
            if event is None:
                self._found(Damage(self.positions[i], "missing"))
                return
            if notification_leaf(event) != self.tree.leaf(i):
                self._found(Damage(self.positions[i], "content"))
                return
        unknown = sorted(set(events) - set(self.positions[first:end]))
        if unknown:
            self._found(Damage(unknown[0], "unsealed"))

    def _check_below_the_log(self) -> None:
        # One look down the positions' index: the events' own seals cannot tell of a row no
        # reader of the log reaches.
        for event in below_the_log(self.recorder, 1):
            self._found(Damage(event.id, "unsealed"),
                        "an event at a position the writer never gives (0 or below)")

    def _check_checkpoints(self) -> None:
        """The stored checkpoints filed above the last one checked, in size order. A row that
        is not what its signed note says is named and passed over (signing goes on, and it is
        looked at again each round until a checkpoint of this notary's passes it); one of a tree
        the log has not grown to here is checked in a later round, unless the log holds fewer
        events than it: then the log was cut."""
        for stored in stored_checkpoints(self.recorder, self._checked_size,
                                         limit=CHECKPOINTS_PER_ROUND):
            signed, forged = signed_checkpoint(self.verifier, stored)
            if signed is None:
                self._found(Damage(self._last_covered(_covers(stored)), "checkpoint"), forged,
                            stops_signing=False)
                continue
            if signed.tree_size > len(self.tree):
                end = self.recorder.max_notification_id() or 0  # type: ignore[attr-defined]
                if signed.tree_size > end:
                    self._found(Damage(end, "checkpoint"), f"the checkpoint of "
                                f"{signed.tree_size} events is beyond the log's {end}")
                return  # not yet grown that far: checked in a later round
            if self.tree.root(signed.tree_size) != signed.root:
                self._found(Damage(self._last_covered(signed.tree_size), "checkpoint"),
                            f"the signed root of the first {signed.tree_size} events does not "
                            "match the log (events before it were rewritten)")
                return
            self._checked_size = signed.tree_size

    def _check_kept(self) -> None:
        """The largest checkpoint this key signed that the checkpoint file keeps (outside the
        database: a rollback of the log's tail, with its seals, leaves and checkpoint rows,
        leaves it there), against the tree: its root, once the tree has grown to it; a log that
        holds fewer events than it was cut (or replaced by another) under the service. Either
        is damage to the log: nothing is signed over it."""
        if not self._kept_read:
            self._kept_read = True
            self._kept = kept_checkpoint(self.checkpoint_file, self.verifier, self.origin)
        kept = self._kept
        if kept is None:
            return
        where = f"the checkpoint file {self.checkpoint_file} keeps a checkpoint of " \
                f"{kept.tree_size} events signed by this key"
        if kept.tree_size > len(self.tree):
            end = self.recorder.max_notification_id() or 0  # type: ignore[attr-defined]
            if kept.tree_size > end:
                self._found(Damage(end, "checkpoint"), f"{where}, beyond the log's {end}: events"
                            " were cut off (or the store is not the one it signed)")
            return  # else not yet grown that far: checked in a later round
        if self.tree.root(kept.tree_size) != kept.root:
            self._found(Damage(self._last_covered(kept.tree_size), "checkpoint"),
                        f"{where}, whose root does not match the log's first {kept.tree_size}"
                        " events (they were rewritten, or the store is not the one it signed)")
            return
        self._kept = None  # holds: the tree only grows from here, and the tail is watched

    def _last_covered(self, size: int) -> int:
        """The position of the last event a checkpoint of ``size`` covers, where the tree
        reaches it; beyond (or for a size that is none), the size itself, which stays put."""
        return self.positions[size - 1] if 0 < size <= len(self.positions) else size

    def _checkpoint(self) -> str | None:
        size = len(self.tree)
        if size == 0 or size <= self._checked_size:
            return None  # a checkpoint whose note was checked covers it
        root = self.tree.root(size)
        note = self.signer.sign(Checkpoint(self.origin, size, root).body())
        with _transaction(self.recorder, lock=True) as run:
            if self._another_key_signs(run):
                return None
            # Signed already by another process, as far as the signed notes of the rows say
            # (a row's own columns are not signed: a forged one frees no one from signing).
            rows = run(f"SELECT {_as_read(self.recorder, 'tree_size', 'root', 'note')}"  # noqa: S608
                       " FROM ledger_checkpoints WHERE tree_size >= %s ORDER BY tree_size LIMIT %s",
                       (size, ROWS_LOOKED_AT))
            taken = any(signed_checkpoint(self.verifier, _stored(row))[0] is not None
                        for row in rows)
            if not taken:
                # A forged row filed under this very size keeps the note out of the table (it is
                # named): the note is kept in the checkpoint file all the same.
                run("INSERT INTO ledger_checkpoints (tree_size, root, note, made_at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (tree_size) DO NOTHING",
                    (size, root.hex(), note, datetime.now(UTC).isoformat()))
        self._last_made_s = self._clock()
        if taken:
            return None
        self.checkpoints_made += 1
        self._checked_size = size
        if self.checkpoint_file is not None:
            append_checkpoint(self.checkpoint_file, note)
        return note

    def _another_key_signs(self, run: Any) -> bool:
        """Whether the store's checkpoints are another key's and none this one's: two hosts
        started at once on a store with no checkpoint, each with a key of its own, both passed
        ``adopt_signer``; the first to sign (under the notary's lock) keeps the store, the
        other signs nothing and says why (its own checks name the first's rows as not its own).
        Rows forged in another key's name stop signing only until this key signed one."""
        if self._signs_here:
            return False
        named = _keys_named(_newest(self.recorder, run))
        if not _others_only(self.recorder, run, named, self.verifier):
            self._signs_here = True
            return False
        if not self._said_not_signing:
            self._said_not_signing = True
            log.error("the store's checkpoints are signed with the key %s, not this process's "
                      "(%s): it signs none; restart it with the store's LEDGER_SIGNING_KEY_FILE",
                      " or ".join(sorted(named)), self.verifier.text())
        return True

    def _found(self, damage: Damage, detail: str | None = None, *,
               stops_signing: bool = True) -> None:
        """Damage found: logged and counted once (each distinct damage, up to
        ``MAX_DAMAGE_NAMED``); ``stops_signing`` when it is the log's, not a checkpoint row's."""
        if (damage, detail) not in self._named and len(self._named) < MAX_DAMAGE_NAMED:
            self._named.add((damage, detail))
            self.damage_found += 1
            log.error("history damaged at %s%s", damage.describe(),
                      f" ({detail})" if detail else "")
        if stops_signing:
            self._signing_stopped = damage
        self.damage = self._signing_stopped or damage  # the log's damage is the one said first

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


KEPT_TAIL_BYTES = 64 * 1024  # how much of the checkpoint file's end is read: ~400 notes
_KEPT_NOTE = re.compile(r"^([^\n]+)\n([0-9]+)\n([A-Za-z0-9+/=]+)\n\n((?:\u2014 [^\n]+\n)+)",
                        re.MULTILINE)


def kept_notes(path: Path | None, verifier: Verifier, origin: str) -> list[str]:
    """The notes at the end of the checkpoint file (its last ``KEPT_TAIL_BYTES``: the file only
    grows, and the service appends each note it signs) whose origin is ``origin`` and whose
    signature by ``verifier`` holds; none when there is no file. A note another key signed (a
    key since replaced) is passed over: the file is the service's, kept outside the database,
    and no one without the key can add one that verifies."""
    if path is None:
        return []
    try:
        with path.open("rb") as file:
            file.seek(0, 2)
            file.seek(max(0, file.tell() - KEPT_TAIL_BYTES))
            text = file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as error:
        log.warning("cannot read the checkpoint file %s: %s", path, error.strerror)
        return []
    notes = []
    for match in _KEPT_NOTE.finditer(text):
        try:
            checkpoint = read_note(verifier, match.group(0))
        except NoteError:
            continue
        if checkpoint.origin == origin:
            notes.append(match.group(0))
    return notes


def kept_checkpoint(path: Path | None, verifier: Verifier, origin: str) -> Checkpoint | None:
    """The checkpoint of the largest tree among ``kept_notes``; None when there is none."""
    kept = [read_note(verifier, note) for note in kept_notes(path, verifier, origin)]
    return max(kept, key=lambda c: c.tree_size, default=None)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def checkpoint_problem(verifier: Verifier | None, tree: Tree, note: str) -> str | None:
    """What is wrong with a checkpoint note against the tree; None when it holds. Without a
    verifier key (``ledger verify`` where the signing key is not), the root is still checked
    but not the signature."""
    try:
        checkpoint = read_note(verifier, note)
    except NoteError as error:
        return str(error)
    if checkpoint.tree_size > len(tree):
        return f"the checkpoint of {checkpoint.tree_size} events is beyond the log's {len(tree)}"
    if tree.root(checkpoint.tree_size) != checkpoint.root:
        return (f"the signed root of the first {checkpoint.tree_size} events does not match "
                "the log (events before it were rewritten)")
    return None


__all__ = [
    "KEPT_TAIL_BYTES",
    "Notary",
    "StoredCheckpoint",
    "checkpoint_damage",
    "checkpoint_problem",
    "guard_notary",
    "kept_checkpoint",
    "kept_notes",
    "latest_checkpoint",
    "notification_leaf",
    "read_note",
    "signed_checkpoint",
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
    against the log: signature (when there is a verifier key), root of its size, each stored
    one's tree size and root columns against its note's, and each stored leaf hash against its
    event. A checkpoint that does not hold is named at the last position it covers (or, beyond
    the log, at the log's end). Answers what does not hold, and how many checkpoints were
    checked."""
    tree, positions = sealed_tree(recorder)

    def last_covered(size: int) -> int:
        return positions[min(size, len(positions)) - 1] if positions and size > 0 else 0

    found: list[tuple[Damage, str]] = []
    for index, position, stored in stored_leaves(recorder):
        if (not 0 <= index < len(tree) or positions[index] != position
                or tree.leaf(index) != stored):
            found.append((Damage(position, "leaf"), f"stored leaf {index} differs"))
    rows = stored_checkpoints(recorder)
    for row in rows:
        try:
            signed = read_note(verifier, row.note)
        except NoteError:
            continue  # named with the notes, below
        filed = filed_otherwise(row, signed)
        if filed is not None:
            found.append((Damage(last_covered(signed.tree_size), "checkpoint"), filed))
    all_notes = [row.note for row in rows] + list(notes)
    for note in all_notes:
        problem = checkpoint_problem(verifier, tree, note)
        if problem is None:
            continue
        try:
            size = Checkpoint.parse(split_note(note)[0]).tree_size
        except NoteError:
            size = 0
        found.append((Damage(last_covered(size), "checkpoint"), problem))
    return found, len(all_notes)
