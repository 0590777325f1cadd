"""The event store as this service runs it: durable, append-only, sealed, and wired to the
application.

- SQLite connections run with ``synchronous=FULL`` (WAL mode, as eventsourcing sets it).
- PostgreSQL refuses to start on a server with ``fsync`` or ``synchronous_commit`` off.
- The writer seals every event it records (``projections.seal``): eventsourcing's recorders,
  subclassed, write each event's link into ``ledger_chain`` in the very transaction, and the
  idempotency keys of the commands into ``ledger_keys``. On PostgreSQL the writer gives each
  event its position (the log's last plus one) and records a batch in one statement when it
  knows the log's last position and link from its own last commit, else under the writers'
  lock (``SealingPostgresRecorder``); SQLite writes one at a time anyway. Loading an aggregate
  checks each event's seal: an event without a valid one is ``HistoryDamaged``.
- Reading the log from SQLite, which keeps whatever is written into a column, an event whose
  TEXT columns hold bytes that are no UTF-8 (written behind the service's back) is answered,
  not a failed read of its whole batch: its text with what does not decode replaced, marked
  (``UndecodedNotification``) for the seal check to name it (``projections.chain``).
- A PostgreSQL commit whose acknowledgement is lost (its connection failed after it was sent)
  is never recorded again blindly: the writer first asks whether the store holds the batch as
  it was sent (its events at their versions, with the very state sent; its keys), and answers
  their positions if so, recording nothing again. Bounded: when the store answers neither the
  commit nor the look, ``ledger.pipeline.CommitUnconfirmed``.
- The database itself refuses UPDATE, DELETE and TRUNCATE of stored events and of the chain
  (triggers).
- ``StorePositions`` answers where a stored event stands in the global log.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
    Recorder,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
)
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier, Literal
from psycopg_pool import PoolTimeout

from ledger.application import LedgerApplication
from ledger.errors import HistoryDamaged, NotReady
from ledger.idempotency import PRUNE_BATCH, KeyRecord, KeyWrite
from ledger.pipeline import CommitUnconfirmed, WritersLockBusy
from ledger.settings import StoreSettings
from projections.paging import MAX_POSITION
from projections.pgarrays import array
from projections.pgpool import StoreRefusesConnections, connect, pipelined_transaction
from projections.seal import (
    GENESIS,
    ChainKey,
    ChainKeyError,
    WrittenHere,
    create_key,
    read_key,
    same_seal,
    seal_text,
)

log = logging.getLogger(__name__)


class StoreNotDurable(RuntimeError):
    """The database would acknowledge commits it could lose: the ledger will not run on it."""


class _DurableSQLitePool(SQLiteConnectionPool):
    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        raw: sqlite3.Connection = connection._sqlite_conn
        raw.execute("PRAGMA synchronous=FULL")
        return connection


class _DurableSQLiteDatastore(SQLiteDatastore):
    def __init__(self, db_name: str, **kwargs: Any) -> None:
        super().__init__(db_name, **kwargs)
        self.pool = _DurableSQLitePool(db_name=db_name, lock_timeout=kwargs.get("lock_timeout"))


class DurableSQLiteFactory(SQLiteFactory):
    """eventsourcing's SQLite factory, every connection with ``synchronous=FULL``."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        old = self.datastore
        self.datastore = _DurableSQLiteDatastore(
            db_name=old.pool.db_name,
            lock_timeout=old.pool.lock_timeout,
            single_row_tracking=old.single_row_tracking,
            originator_id_type=old.originator_id_type,
        )
        old.close()


# -- the sealing recorders -----------------------------------------------------------------------

CHAIN_TABLE = "ledger_chain"
CHAIN_KEY_TABLE = "ledger_chain_key"
STORE_DDL = (
    "CREATE TABLE IF NOT EXISTS ledger_chain ("
    " position BIGINT PRIMARY KEY, previous TEXT NOT NULL, hash TEXT NOT NULL,"
    " CHECK (length(hash) = 64), CHECK (length(previous) = 64))",
    "CREATE TABLE IF NOT EXISTS ledger_chain_key ("
    " fingerprint TEXT PRIMARY KEY, adopted_at TEXT NOT NULL)",
    # ``seal``: the writer's seal of the record (``key_record_seal``); the column is added to
    # a store made before it by ``guard_events``, and the records it holds stay unsealed.
    "CREATE TABLE IF NOT EXISTS ledger_keys ("
    " id TEXT PRIMARY KEY, caller TEXT NOT NULL, fingerprint TEXT NOT NULL,"
    " outcome TEXT NOT NULL, body TEXT NOT NULL, position BIGINT, recorded_at TEXT NOT NULL,"
    " seal TEXT)",
    "CREATE INDEX IF NOT EXISTS ledger_keys_by_age ON ledger_keys (recorded_at)",
)
# The last link before a batch's first event (SQLite), not the highest row's, which may be no
# event's (a row INSERTed by SQL past the log) and would poison every link sealed after it.
_LINK_BEFORE = "SELECT hash FROM ledger_chain WHERE position < ? ORDER BY position DESC LIMIT 1"
# How many times a writer reads the head under the lock and finds its position taken by one
# that did not (another process recording after its own last commit) before it gives up.
MAX_PLACEMENTS = 8
# How many times a commit is tried while its connection fails, and the wait between tries
# (eventsourcing's own retry of ``insert_events``: about two seconds in all).
RECORD_ATTEMPTS = 10
RECORD_RETRY_WAIT_S = 0.2


T = TypeVar("T")


def _retried_while_connections_fail(read: Callable[..., T]) -> Callable[..., T]:
    """eventsourcing's ``retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)``
    of a read, which gives up at once when no connection was to be had because the store is
    known to refuse them (``projections.pgpool.StoreOutage``): ten tries of two seconds in all
    would each be refused the same way."""

    @functools.wraps(read)
    def retried(*args: Any, **kwargs: Any) -> T:
        for attempt in range(RECORD_ATTEMPTS):
            if attempt:
                time.sleep(RECORD_RETRY_WAIT_S * random.uniform(0.9, 1.1))  # noqa: S311
            try:
                return read(*args, **kwargs)
            except (InterfaceError, OperationalError) as error:
                if (isinstance(error.__cause__, StoreRefusesConnections)
                        or attempt == RECORD_ATTEMPTS - 1):
                    raise
        raise AssertionError("unreachable: the last try raises")

    return retried


class NoFreePosition(IntegrityError):
    """Other writers took every position a batch was given (``MAX_PLACEMENTS`` times): it
    wrote nothing, but unlike a version taken this says nothing of an earlier try of the same
    batch, which may still commit."""


class TornBatch(RuntimeError):
    """Part of a batch is stored as it was written and part is not: a transaction was not
    atomic, or the store was changed behind the service's back. Nothing is decided on it."""


_KEY_COLUMNS = ("id", "caller", "fingerprint", "outcome", "body", "position", "recorded_at")


def _key_record_text(row: Sequence[Any]) -> str:
    """What a key record's seal covers: its seven columns as stored, in order."""
    return seal_text(list(row))


_SELECT_KEY_RECORDS = f"SELECT {', '.join(_KEY_COLUMNS)}, seal FROM ledger_keys"  # noqa: S608


def _key_record_seal(key: ChainKey, row: dict[str, Any]) -> str:
    """The seal a key record read back (a row of ``_SELECT_KEY_RECORDS``) should carry."""
    return key.key_record_seal(_key_record_text([row[c] for c in _KEY_COLUMNS]))


def _key_record_sealed(key: ChainKey, row: dict[str, Any]) -> bool:
    seal = row["seal"]
    return seal is not None and same_seal(_key_record_seal(key, row), str(seal))


def _instant(at: datetime) -> str:
    """A key's time as stored: UTC, one spelling, so text order is time order."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


class _Sealer:
    """What both stores' recorders share: the key, the links, the keys' rows."""

    chain_key: ChainKey | None = None

    def _key(self) -> ChainKey:
        # Nothing writes or loads an event unsealed: open_application gives every writer the key.
        assert self.chain_key is not None, "the recorder was not given the chain key"
        return self.chain_key

    def _links(
        self, previous: str, ids: Sequence[int], stored_events: Sequence[StoredEvent]
    ) -> list[tuple[int, str, str]]:
        assert len(ids) == len(stored_events), "every inserted event has its position"
        key, links = self._key(), []
        for position, stored in sorted(zip(ids, stored_events, strict=True), key=lambda p: p[0]):
            link = key.link(
                previous, position, stored.originator_id, stored.originator_version,
                stored.topic, stored.state,
            )
            links.append((position, previous, link))
            previous = link
        return links

    def _check_seal(self, row: Any, position: int, originator_id: UUID | str) -> None:
        if not self._key().holds(
            row["hash"], row["previous"], position, originator_id,
            row["originator_version"], row["topic"], row["state"],
        ):
            raise HistoryDamaged(
                f"the stored event at position {position} has no valid seal: it was written "
                "behind the service's back, and the service will not use it",
                position=position,
            )

    def _key_rows(self, keys: Sequence[KeyWrite], ids: Sequence[int]) -> list[tuple[Any, ...]]:
        """The keys' rows, each with its seal (``key_record_seal``)."""
        key, rows = self._key(), []
        for write in keys:
            record = write.record
            position = record.position
            if write.at_last_event:
                position = ids[write.event_index - 1] if write.event_index else None
            row = (
                record.id, record.caller, record.fingerprint, record.outcome,
                json.dumps(record.body), position, _instant(record.recorded_at),
            )
            rows.append((*row, key.key_record_seal(_key_record_text(row))))
        return rows


def _lock_refused(error: BaseException) -> bool:
    """Whether a store error is PostgreSQL's refusal of a lock wait (``lock_timeout``),
    eventsourcing's wrapping of it included."""
    cause: BaseException | None = error
    for _ in range(4):  # the chain of causes is short: bounded all the same
        if cause is None:
            return False
        if isinstance(cause, psycopg.errors.LockNotAvailable):
            return True
        cause = cause.__cause__
    return False


class SealingPostgresRecorder(_Sealer, PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL recorder, sealing each event in the inserting transaction.

    The writer gives each event its position: the log's last position plus one. A link seals
    its event's position with the previous link, so the writer must know the log's last
    position and link before it sends the insert. It remembers them from its own last commit:
    while no other process has written since, a commit is one statement, the events, their
    links and the commands' keys together, in one round trip (``_record``). When another
    process has written since, the position is taken (a position is unique, in the events and
    in their links): the statement fails whole, and the writer records the batch again under
    the writers' lock, reading the last position and link first (``_record_under_lock``, two
    round trips). So no position is given twice, none is skipped by a commit, and an event is
    visible only after every event before it: its link was made from the link before it, which
    was committed. The column's sequence is not used.

    A commit whose connection fails may have been committed all the same (its acknowledgement
    lost). It is never recorded again blindly, which would find its own versions taken and
    have its commands decided again on a state that already holds them: the store is asked
    first whether it holds the batch as it was written, and answers its positions if so
    (``_record_settled``).
    """

    record_attempts = RECORD_ATTEMPTS
    record_retry_wait_s = RECORD_RETRY_WAIT_S

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(datastore.schema)
        table = Identifier(self.events_table_name)
        insert_keys = SQL(
            "INSERT INTO {}.ledger_keys"
            " (id, caller, fingerprint, outcome, body, position, recorded_at, seal)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
            " %s::bigint[], %s::text[], %s::text[])"
        ).format(schema)
        # Writers that read the log's head queue on an advisory lock rather than LOCK TABLE …
        # EXCLUSIVE: a login granted only SELECT and INSERT on the events may take it (issue 10:
        # least privilege). Each waits for it at most the store's lock timeout, as for
        # eventsourcing's own table lock: a writer stalled in its transaction in another process
        # (paused, cut off) holds this one up that long, not until its connection is found dead.
        self.lock_table_statements = [
            SQL("SET LOCAL lock_timeout = '{}s'").format(SQL(str(int(datastore.lock_timeout))))
            .as_string(None),
            SQL("SELECT pg_advisory_xact_lock({key})").format(key=Literal(_WRITER_LOCK_KEY))
            .as_string(None),
        ]
        # The indexes whose violation says a position was taken first (not a version or a key).
        self._positions_taken = {self.notification_id_index_name, "ledger_chain_pkey"}
        # This process's last commit: the log's last position and link, while no one else
        # writes (None when unknown: read under the lock).
        self._head: tuple[int, str] | None = None
        self._head_lock = threading.Lock()
        # What it sealed and committed, until this process's notary places it (``WrittenHere``):
        # kept only once a notary asks (``keep_written``), so a process without one keeps none.
        self.written: WrittenHere | None = None
        # Every statement of a commit is rendered here, once (``as_string``): psycopg renders a
        # Composed again at every execute. The rows go as one array per column, each of a
        # named element type (``_record_params``, ``projections.pgarrays``).
        self._read_head = SQL(
            # The last link at or before the log's last event: a chain row past it is no
            # event's (a row INSERTed by SQL), and nothing is sealed after it.
            "SELECT h.position, (SELECT c.hash FROM {schema}.ledger_chain c"
            " WHERE c.position <= h.position ORDER BY c.position DESC LIMIT 1) AS link"
            " FROM (SELECT max(notification_id) AS position FROM {schema}.{table}) h"
        ).format(schema=schema, table=table).as_string(None)
        record = SQL(
            "WITH events AS ("
            "INSERT INTO {schema}.{table}"
            " (notification_id, originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%s::bigint[], %s::{id_type}[], %s::bigint[], %s::text[],"
            " %s::bytea[])),"
            " links AS ("
            "INSERT INTO {schema}.ledger_chain (position, previous, hash)"
            " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[])){keys}"
            " SELECT pg_notify({channel}, '')"
        )
        self._record, self._record_without_keys = (
            record.format(
                schema=schema, table=table, id_type=Identifier(datastore.originator_id_type),
                keys=keys, channel=Literal(self.channel_name),
            ).as_string(None)
            # A batch under no key (the order system's deposits, most writes) sends no keys'
            # insert: the server then does not plan and run an insert of eight empty arrays.
            for keys in (SQL(", keys AS ({})").format(insert_keys), SQL(""))
        )
        self._delete_expired_key = SQL(
            "DELETE FROM {}.ledger_keys WHERE id = %s AND recorded_at = %s"
        ).format(schema).as_string(None)
        self._insert_keys = insert_keys.as_string(None)
        # A batch's events as stored (``_found_recorded``): each one's place in the batch (n),
        # its position and its state.
        self._select_batch = SQL(
            "SELECT b.n, e.notification_id, e.state"
            " FROM unnest(%s::{id_type}[], %s::bigint[]) WITH ORDINALITY AS b (id, version, n)"
            " JOIN {schema}.{table} e"
            " ON e.originator_id = b.id AND e.originator_version = b.version"
        ).format(schema=schema, table=table,
                 id_type=Identifier(datastore.originator_id_type)).as_string(None)
        self._select_keys = SQL(
            "SELECT id, fingerprint, recorded_at FROM {}.ledger_keys WHERE id = ANY(%s::text[])"
        ).format(schema).as_string(None)
        # Commits whose acknowledgement was lost, found committed and answered as recorded.
        self.found_recorded = 0
        self._select_sealed: Composed = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state, e.notification_id,"
            " c.previous, c.hash FROM {schema}.{table} e"
            " LEFT JOIN {schema}.ledger_chain c ON c.position = e.notification_id"
            " WHERE e.originator_id = %s"
        ).format(schema=schema, table=table)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Record the batch and its ``keys`` in one transaction; answers the events' positions.
        IntegrityError when a version or a key was taken first (by another writer: never by
        this batch's own earlier try), ``CommitUnconfirmed`` when whether it was committed
        cannot be found out (see ``_record_settled``)."""
        keys: Sequence[KeyWrite] = kwargs.get("keys", ())
        return self._record_settled(stored_events, keys, in_doubt=False)

    def insert_events_in_doubt(
        self, stored_events: Sequence[StoredEvent], keys: Sequence[KeyWrite],
    ) -> Sequence[int]:
        """``insert_events`` for a batch whose earlier try's outcome is unknown (its statement
        sent, then its connection failed: ``projections.loopwriter``): its positions as stored
        when that try was committed, else recorded now."""
        return self._record_settled(stored_events, keys, in_doubt=True)

    def _record_settled(
        self, stored_events: Sequence[StoredEvent], keys: Sequence[KeyWrite], *, in_doubt: bool,
    ) -> list[int]:
        """Record the batch, at most ``record_attempts`` times while connections fail. A try
        whose connection failed may have been committed all the same (its acknowledgement
        lost): before the batch is recorded again, the store is asked whether it holds it
        (``_found_recorded``), and answers its positions if so. Recording it again is safe
        even when a try still running commits after the look: versions are unique, so only
        one of them commits, and a version found taken is looked at again. Bounded: when no
        try and no look is answered, ``CommitUnconfirmed``, having decided nothing."""
        failure: Exception | None = None
        for attempt in range(self.record_attempts):
            if attempt:
                time.sleep(self.record_retry_wait_s * random.uniform(0.9, 1.1))  # noqa: S311
            try:
                return self._record_once_settled(stored_events, keys, in_doubt=in_doubt)
            except (InterfaceError, OperationalError) as error:
                if not in_doubt and _lock_refused(error):
                    # Refused before it wrote anything: nothing to find out, nor to wait for
                    # again now (another writer holds the lock, stalled).
                    raise WritersLockBusy(
                        "another writer held the log's lock for the store's whole lock timeout: "
                        "nothing was recorded; send it again") from error
                if not in_doubt and isinstance(error.__cause__, PoolTimeout):
                    # No connection (refused at once in an outage, or none within the pool's
                    # wait): nothing was sent, so nothing to find out, nor to wait for again.
                    raise
                if in_doubt and isinstance(error.__cause__, StoreRefusesConnections):
                    # The store is known to be gone: no look can be made for the earlier try
                    # until it is back, and the caller should hear so now, not after every
                    # remaining attempt was refused the same way.
                    raise CommitUnconfirmed(
                        f"the store cannot be asked whether a commit of {len(stored_events)} "
                        "events was made: it refuses connections") from error
                log.warning("a commit's connection failed (%s: %s): whether it was committed "
                            "is found out before it is recorded again", type(error).__name__,
                            error)
                failure, in_doubt = error, True
            except NoFreePosition as error:
                if not in_doubt:
                    raise
                failure = error  # the earlier try may still commit: look again, bounded
        raise CommitUnconfirmed(
            f"the store did not confirm a commit of {len(stored_events)} events, nor answer "
            f"whether it was made, in {self.record_attempts} attempts"
        ) from failure

    def _record_once_settled(
        self, stored_events: Sequence[StoredEvent], keys: Sequence[KeyWrite], *, in_doubt: bool,
    ) -> list[int]:
        if in_doubt and (found := self._found_recorded(stored_events, keys)) is not None:
            return found
        try:
            return list(self._record_once(stored_events, keys))
        except IntegrityError:
            # A version or a key taken by another writer, or by this batch's own earlier try,
            # committed after the look above (its statement was still running on the server).
            # Not found as this batch: another writer's, and the earlier try (which writes the
            # same versions and keys) can never commit.
            if in_doubt and (found := self._found_recorded(stored_events, keys)) is not None:
                return found
            raise

    def _found_recorded(
        self, stored_events: Sequence[StoredEvent], keys: Sequence[KeyWrite],
    ) -> list[int] | None:
        """Whether this very batch is stored: its events' positions (in order) when every
        event stands at its version with the very state sent (an event's state names its
        command: its time, its actor's request) and every key holds the record sent; None when
        none of it is. A transaction is atomic, so anything between is a broken store
        (``TornBatch``)."""
        if not stored_events and not keys:
            return []
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            positions: list[int] = []
            if stored_events:
                found = self._stored_positions(curs, stored_events)
                if found is None:
                    return None
                positions = found
            # Read after the events: what was committed with them is visible by now.
            ours = self._stored_keys(curs, keys)
        if not stored_events and ours == 0:
            return None  # the keys are not this batch's (another writer's, or none)
        if ours < len(keys):
            raise TornBatch(
                f"a batch of {len(stored_events)} events and {len(keys)} idempotency keys is "
                f"stored but {len(keys) - ours} of its keys are not as it wrote them"
            )
        self.found_recorded += 1
        log.warning("a commit whose acknowledgement was lost was found committed (%d events, "
                    "%d keys): answered as recorded, not recorded again", len(positions),
                    len(keys))
        return positions

    def _stored_positions(
        self, curs: Any, stored_events: Sequence[StoredEvent],
    ) -> list[int] | None:
        """The positions of ``stored_events`` when all are stored as sent; None when none is
        (another writer's event at one of their versions is not theirs)."""
        curs.execute(self._select_batch, (
            array([event.originator_id for event in stored_events]),
            array([event.originator_version for event in stored_events]),
        ))
        found = {int(row["n"]): row for row in curs.fetchall()}
        ours = {n: int(row["notification_id"]) for n, row in found.items()
                if bytes(row["state"]) == bytes(stored_events[n - 1].state)}
        if not ours:
            return None
        if len(ours) < len(stored_events):
            raise TornBatch(
                f"{len(ours)} of the {len(stored_events)} events of a batch are stored as it "
                f"wrote them, {len(found) - len(ours)} otherwise, the rest not at all"
            )
        return [ours[n] for n in range(1, len(stored_events) + 1)]

    def _stored_keys(self, curs: Any, keys: Sequence[KeyWrite]) -> int:
        """How many of ``keys`` hold the very record sent (its request's fingerprint, written
        at its time)."""
        if not keys:
            return 0
        curs.execute(self._select_keys, (array([write.record.id for write in keys]),))
        stored = {row["id"]: row for row in curs.fetchall()}
        ours = 0
        for write in keys:
            row = stored.get(write.record.id)
            if (row is not None and row["fingerprint"] == write.record.fingerprint
                    and row["recorded_at"] == _instant(write.record.recorded_at)):
                ours += 1
        return ours

    def _record_once(
        self, stored_events: Sequence[StoredEvent], keys: Sequence[KeyWrite],
    ) -> Sequence[int]:
        if not stored_events:  # a refusal under a key records its answer, and no event
            if keys:
                with self.datastore.get_connection() as conn, pipelined_transaction(conn), \
                        conn.cursor() as curs:
                    self._write_keys(curs, keys, ())
            return []
        with self._head_lock:
            head, self._head = self._head, None  # unknown until this commit is answered
            if head is not None and not any(write.replaces for write in keys):
                try:
                    ids, link = self._record_after(head, stored_events, keys)
                except IntegrityError as error:
                    if not self._position_taken(error.__cause__):
                        # A version or a key taken (a retry's key, most often): the committer
                        # decides again. The statement wrote nothing, so the head is as it was,
                        # and the next commit need not read it under the lock.
                        self._head = head
                        raise
                else:
                    self._head = (ids[-1], link)
                    return ids
            for _ in range(MAX_PLACEMENTS):
                try:
                    ids, link = self._record_under_lock(stored_events, keys)
                except IntegrityError as error:
                    if not self._position_taken(error.__cause__):
                        raise
                    continue  # a writer that did not read under the lock took it first
                self._head = (ids[-1], link)
                return ids
        raise NoFreePosition(f"no free position after {MAX_PLACEMENTS} attempts")

    async def record_on(
        self, connection: psycopg.AsyncConnection[Any], stored_events: Sequence[StoredEvent],
        keys: Sequence[KeyWrite],
    ) -> list[int] | None:
        """``insert_events`` on an async connection (``projections.loopwriter``) when it is one
        statement: the batch after the head this process remembers from its own last commit.
        None, having written nothing, when it is not: the head unknown (or taken meanwhile by
        another process), a key renewing an expired one, no events, or another thread of this
        process recording; ``insert_events`` then records the batch under the writers' lock.
        IntegrityError when a version or a key was taken first."""
        if not stored_events or any(write.replaces for write in keys):
            return None
        if not self._head_lock.acquire(blocking=False):
            return None
        try:
            head, self._head = self._head, None  # unknown until this commit is answered
            if head is None:
                return None
            ids, params, links = self._record_params(head, stored_events, keys)
            try:
                await connection.execute(self._record if keys else self._record_without_keys,
                                         params, prepare=True)
            except psycopg.IntegrityError as error:
                if self._position_taken(error):
                    return None  # another process wrote since
                self._head = head  # the statement wrote nothing
                raise IntegrityError(str(error)) from error
            self._remember(links, stored_events)
            self._head = (ids[-1], links[-1][2])
            return ids
        finally:
            self._head_lock.release()

    def _record_after(
        self, head: tuple[int, str], stored_events: Sequence[StoredEvent],
        keys: Sequence[KeyWrite],
    ) -> tuple[list[int], str]:
        """The batch after ``head`` in one statement (an implicit transaction)."""
        ids, params, links = self._record_params(head, stored_events, keys)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._record if keys else self._record_without_keys, params,
                         prepare=True)
        self._remember(links, stored_events)
        return ids, links[-1][2]

    def _record_under_lock(
        self, stored_events: Sequence[StoredEvent], keys: Sequence[KeyWrite],
    ) -> tuple[list[int], str]:
        """The batch after the log's head as read under the writers' lock: BEGIN goes with
        the lock and the read, the record (and any expired key it renews) with COMMIT."""
        with self.datastore.get_connection() as conn, pipelined_transaction(conn) as pipeline, \
                conn.cursor() as curs:
            self._lock_table(curs)
            curs.execute(self._read_head, prepare=True)
            pipeline.sync()
            row = curs.fetchone()
            assert row is not None
            head = (int(row["position"] or 0), row["link"] or GENESIS)
            ids, params, links = self._record_params(head, stored_events, keys)
            self._delete_expired_keys(curs, keys)
            curs.execute(self._record if keys else self._record_without_keys, params,
                         prepare=True)
        self._remember(links, stored_events)  # committed as the block ended
        return ids, links[-1][2]

    def keep_written(self) -> WrittenHere:
        """From now on, remember what this process seals and commits, for its notary to
        place without a second HMAC (``WrittenHere``); the notary's reading of it."""
        if self.written is None:
            self.written = WrittenHere()
        return self.written

    def _remember(self, links: list[tuple[int, str, str]],
                  stored_events: Sequence[StoredEvent]) -> None:
        if self.written is not None:
            self.written.remember(links, stored_events)

    def _record_params(
        self, head: tuple[int, str], stored_events: Sequence[StoredEvent],
        keys: Sequence[KeyWrite],
    ) -> tuple[list[int], tuple[Any, ...], list[tuple[int, str, str]]]:
        """The positions after ``head``, the statement's parameters, and each event's
        (position, previous link, link), in the order of ``stored_events``."""
        last, previous = head
        ids = list(range(last + 1, last + 1 + len(stored_events)))
        links = self._links(previous, ids, stored_events)
        # Each column an array of its values' type, which psycopg dumps without a look at
        # every item (``projections.pgarrays``).
        positions = array(ids)  # the events' and the links' alike
        params = (
            positions,
            array([event.originator_id for event in stored_events]),
            array([event.originator_version for event in stored_events]),
            array([event.topic for event in stored_events]),
            array([event.state for event in stored_events]),
            positions, array([p for _, p, _ in links]), array([h for _, _, h in links]),
            *(self._key_columns(keys, ids) if keys else ()),
        )
        return ids, params, links

    def _position_taken(self, error: BaseException | None) -> bool:
        """Whether psycopg's ``error`` says a position was taken first (not a version or a
        key)."""
        return (isinstance(error, psycopg.errors.UniqueViolation)
                and error.diag.constraint_name in self._positions_taken)

    def _delete_expired_keys(self, curs: Any, keys: Sequence[KeyWrite]) -> None:
        for write in keys:
            if write.replaces is not None:  # gone already if another process renewed it first
                curs.execute(self._delete_expired_key, (write.record.id, _instant(write.replaces)))

    def _key_columns(self, keys: Sequence[KeyWrite], ids: Sequence[int]) -> list[list[Any]]:
        """The keys' rows as the eight arrays the keys' insert takes (empty ones for none)."""
        columns = [array(column) for column in zip(*self._key_rows(keys, ids), strict=True)]
        return columns or [[] for _ in range(8)]

    def _write_keys(self, curs: Any, keys: Sequence[KeyWrite], ids: Sequence[int]) -> None:
        self._delete_expired_keys(curs, keys)
        curs.execute(self._insert_keys, self._key_columns(keys, ids))

    @_retried_while_connections_fail
    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        statement = self._select_sealed
        params: list[Any] = [originator_id]
        if gt is not None:
            statement += SQL(" AND e.originator_version > %s")
            params.append(gt)
        if lte is not None:
            statement += SQL(" AND e.originator_version <= %s")
            params.append(lte)
        statement += SQL(" ORDER BY e.originator_version DESC" if desc else
                         " ORDER BY e.originator_version ASC")
        if limit is not None:
            statement += SQL(" LIMIT %s")
            params.append(limit)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            rows = curs.fetchall()
        events = []
        for row in rows:
            row["state"] = bytes(row["state"])
            self._check_seal(row, int(row["notification_id"]), row["originator_id"])
            events.append(StoredEvent(
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=row["state"],
            ))
        return events


class SealingSQLiteRecorder(_Sealer, SQLiteApplicationRecorder):
    """eventsourcing's SQLite recorder, sealing each event in the inserting transaction."""

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs) or []
        if stored_events:
            c.execute(_LINK_BEFORE, (ids[0],))
            head = c.fetchone()
            links = self._links(GENESIS if head is None else head[0], ids, stored_events)
            c.executemany(
                "INSERT INTO ledger_chain (position, previous, hash) VALUES (?, ?, ?)", links
            )
        keys: Sequence[KeyWrite] = kwargs.get("keys", ())
        for write in keys:
            if write.replaces is not None:
                c.execute(
                    "DELETE FROM ledger_keys WHERE id = ? AND recorded_at = ?",
                    (write.record.id, _instant(write.replaces)),
                )
        if keys:
            c.executemany(
                "INSERT INTO ledger_keys (id, caller, fingerprint, outcome, body, position,"
                " recorded_at, seal) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                self._key_rows(keys, ids),
            )
        return ids

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        # Text read as bytes (``text_of``): bytes that are no UTF-8 then fail the seal check,
        # naming the row, where sqlite3 failed the whole read.
        statement = (
            "SELECT e.rowid AS position, e.originator_id, e.originator_version,"  # noqa: S608
            " CAST(e.topic AS BLOB) AS topic, e.state, CAST(c.previous AS BLOB) AS previous,"
            f" CAST(c.hash AS BLOB) AS hash FROM {self.events_table_name} e"
            " LEFT JOIN ledger_chain c ON c.position = e.rowid WHERE e.originator_id = ? "
        )
        params: list[Any] = [
            originator_id.hex if isinstance(originator_id, UUID) else originator_id
        ]
        if gt is not None:
            statement += "AND e.originator_version > ? "
            params.append(gt)
        if lte is not None:
            statement += "AND e.originator_version <= ? "
            params.append(lte)
        statement += "ORDER BY e.originator_version " + ("DESC " if desc else "ASC ")
        if limit is not None:
            statement += "LIMIT ? "
            params.append(limit)
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            rows = c.fetchall()
        events = []
        for stored in rows:
            row = {**stored, **{c: text_of(stored[c])[0] for c in ("topic", "previous", "hash")}}
            self._check_seal(row, int(row["position"]), row["originator_id"])
            events.append(StoredEvent(
                originator_id=self.convert_originator_id(row["originator_id"]),
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=row["state"],
            ))
        return events


    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """eventsourcing's, each event's text read as bytes (``sqlite_notification``)."""
        where: list[str] = []
        params: list[Any] = []
        if start is not None:
            where.append("rowid >= ?" if inclusive_of_start else "rowid > ?")
            params.append(start)
        if stop is not None:
            where.append("rowid <= ?")
            params.append(stop)
        if topics:
            where.append(f"topic IN ({', '.join('?' * len(topics))})")
            params += list(topics)
        statement = (f"SELECT {SQLITE_EVENT_COLUMNS} FROM {self.events_table_name}"  # noqa: S608
                     + (f" WHERE {' AND '.join(where)}" if where else "")
                     + " ORDER BY rowid LIMIT ?")
        params.append(limit)
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            return [sqlite_notification(self, row) for row in c.fetchall()]


# -- text that is no UTF-8 (SQLite) --------------------------------------------------------------

# SQLite keeps whatever is written into a column, bytes that are no UTF-8 among them, and
# Python's sqlite3 fails the whole read of a TEXT value that does not decode: the readers of
# history read its TEXT columns as bytes, and decode them here.
SQLITE_EVENT_COLUMNS = ("rowid AS position, CAST(originator_id AS BLOB) AS originator_id,"
                        " originator_version, CAST(topic AS BLOB) AS topic, state")


@dataclass(frozen=True)
class UndecodedNotification(Notification):
    """A stored event whose ``undecoded`` columns hold bytes that are no UTF-8: the writer never
    writes such bytes, so the row was written behind the service's back. Its text is what
    decodes, the rest replaced (U+FFFD), so that every reader goes on and the seal check names
    the row (``projections.chain.seal_damage``)."""

    undecoded: tuple[str, ...] = ()


def text_of(value: Any) -> tuple[Any, bool]:
    """A TEXT column read as bytes as text, and whether its bytes are UTF-8 (what does not
    decode replaced); any other value (NULL) as it is."""
    if not isinstance(value, bytes):
        return value, True
    try:
        return value.decode("utf-8"), True
    except UnicodeDecodeError:
        return value.decode("utf-8", errors="replace"), False


def sqlite_notification(recorder: SQLiteApplicationRecorder, row: Any) -> Notification:
    """A row of ``SQLITE_EVENT_COLUMNS`` as its notification; an ``UndecodedNotification`` when
    its text is no UTF-8, or its stream is not spelled as the writer writes it (32 lower-case
    hex digits: the same id in capitals or with hyphens hides the event from its aggregate,
    whose events are found by that spelling, while reading as the same UUID)."""
    stream, stream_decodes = text_of(row["originator_id"])
    stream_decodes = stream_decodes and _written_spelling(stream)
    topic, topic_decodes = text_of(row["topic"])
    state = row["state"]
    # The writer writes a state as a BLOB: one retyped as TEXT (whose bytes would still hold
    # their seal) is no state of its, and no reader may take it for one.
    state_is_blob = isinstance(state, bytes | memoryview)
    fields: dict[str, Any] = {
        "id": int(row["position"]),
        "originator_id": recorder.convert_originator_id(stream) if stream_decodes else stream,
        "originator_version": row["originator_version"],
        "topic": topic,
        "state": state if state_is_blob else _raw_state(state),
    }
    if stream_decodes and topic_decodes and state_is_blob:
        return Notification(**fields)
    undecoded = tuple(column for column, decodes in (("originator_id", stream_decodes),
                                                     ("topic", topic_decodes),
                                                     ("state", state_is_blob)) if not decodes)
    return UndecodedNotification(**fields, undecoded=undecoded)


def _raw_state(state: object) -> bytes:
    """A state column that is no BLOB, as bytes (for a damaged row's report)."""
    return state.encode(errors="replace") if isinstance(state, str) else str(state).encode()


def _written_spelling(stream: str) -> bool:
    """Whether an SQLite row's stream id is spelled as the writer writes it (``UUID.hex``)."""
    try:
        return UUID(stream).hex == stream
    except ValueError:
        return False


SQLITE_RECORDER_TOPIC = "projections.store:SealingSQLiteRecorder"
POSTGRES_RECORDER_TOPIC = "projections.store:SealingPostgresRecorder"


# -- positions ---------------------------------------------------------------------------------


class StorePositions:
    """``position_of(id, version)``: the notification id of one stored event."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def position_of(self, originator_id: UUID, version: int) -> int:
        recorder = self.recorder
        if isinstance(recorder, SQLiteApplicationRecorder):
            with recorder.datastore.transaction(commit=False) as cursor:
                cursor.execute(
                    f"SELECT rowid FROM {recorder.events_table_name} "  # noqa: S608
                    "WHERE originator_id=? AND originator_version=?",
                    (originator_id.hex, version),
                )
                row = cursor.fetchone()
            found = None if row is None else int(row[0])
        else:
            assert isinstance(recorder, PostgresApplicationRecorder)
            statement = SQL(
                "SELECT notification_id FROM {} WHERE originator_id=%s AND originator_version=%s"
            ).format(qualified_events_table(recorder))
            with recorder.datastore.get_connection() as connection, connection.cursor() as curs:
                curs.execute(statement, (originator_id, version))  # one statement: no BEGIN
                pg_row = curs.fetchone()
            found = None if pg_row is None else int(pg_row["notification_id"])
        # The caller only asks about events it has just read back: absence is a broken store.
        assert found is not None, f"no stored event {originator_id} v{version}"
        return found


# -- reading the whole log ---------------------------------------------------------------------

def read_log(
    recorder: Recorder, after: int, limit: int, *, upto: int | None = None
) -> Sequence[Notification]:
    """The stored events after a position (up to ``upto``), at most ``limit``, in log order: what
    ``select_notifications`` answers. On PostgreSQL the same rows are read with less work for
    each (rows as tuples, not dicts): a replay reads the whole log."""
    if not isinstance(recorder, PostgresApplicationRecorder):
        return recorder.select_notifications(  # type: ignore[attr-defined,no-any-return]
            after, limit, stop=upto, inclusive_of_start=False
        )
    statement = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
        " WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id"
        " LIMIT %s"
    ).format(qualified_events_table(recorder))
    params = (after, MAX_POSITION if upto is None else upto, limit)
    with recorder.datastore.get_connection() as connection:
        with connection.cursor(row_factory=tuple_row) as curs:
            curs.execute(statement, params, prepare=True)
            rows = curs.fetchall()
    return [
        Notification(
            id=position, originator_id=stream, originator_version=version, topic=topic, state=state
        )
        for position, stream, version, topic, state in rows
    ]


# -- plain SQL beside the event store ----------------------------------------------------------


def run_sql(
    recorder: Recorder,
    statements: list[tuple[str, dict[str, Any]]],
    *,
    commit: bool,
) -> list[dict[str, Any]]:
    """Run statements (named ``%(x)s`` parameters) in one transaction of the event store's
    database; answer the rows of the last one."""
    rows: list[dict[str, Any]] = []
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=commit) as cursor:
            for sql, params in statements:
                cursor.execute(_NAMED.sub(r":\1", sql), params)
            if statements and cursor.sqlite_cursor.description:
                rows = [dict(row) for row in cursor.fetchall()]
        return rows
    assert isinstance(recorder, PostgresApplicationRecorder)
    if len(statements) == 1 and (commit or _reads_only(statements[0][0])):
        # One statement is a transaction of its own on the pool's autocommit connection, with
        # the same outcome: one round trip, not BEGIN, the statement and COMMIT or ROLLBACK.
        with recorder.datastore.get_connection() as connection, connection.cursor() as curs:
            curs.execute(*statements[0])
            return [dict(row) for row in curs.fetchall()] if curs.description else []
    with recorder.datastore.transaction(commit=commit) as curs:
        for sql, params in statements:
            curs.execute(sql, params)
        if statements and curs.description:
            rows = [dict(row) for row in curs.fetchall()]
    return rows


def events_and_position(recorder: Recorder) -> tuple[str, str]:
    """The events table's name in SQL, and its column of log positions, on either store."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        return recorder.events_table_name, "rowid"
    assert isinstance(recorder, PostgresApplicationRecorder)
    return qualified_events_table(recorder).as_string(None), "notification_id"


def count_events(recorder: Recorder, after: int, upto: int) -> int:
    """How many stored events stand at the positions after ``after`` up to ``upto``
    (``upto - after`` when none is missing)."""
    events, position = events_and_position(recorder)
    rows = run_sql(recorder, [(
        f"SELECT COUNT(*) AS n FROM {events}"  # noqa: S608
        f" WHERE {position} > %(after)s AND {position} <= %(upto)s",
        {"after": after, "upto": upto},
    )], commit=False)
    return int(rows[0]["n"])


def _reads_only(sql: str) -> bool:
    return sql.lstrip().upper().startswith("SELECT ")


def events_table(recorder: Recorder) -> str:
    assert isinstance(recorder, (SQLiteApplicationRecorder, PostgresApplicationRecorder))
    return recorder.events_table_name


def qualified_events_table(recorder: PostgresApplicationRecorder) -> Composed:
    """The events table, schema and all (PostgreSQL)."""
    return SQL("{}.{}").format(Identifier(recorder.datastore.schema),
                               Identifier(recorder.events_table_name))


_NAMED = re.compile(r"%\((\w+)\)s")


# -- guards ---------------------------------------------------------------------------------------


_SQLITE_GUARDS = [
    "CREATE TRIGGER IF NOT EXISTS {t}_refuse_update BEFORE UPDATE ON {t} "
    "BEGIN SELECT RAISE(ABORT, 'stored events are immutable: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS {t}_refuse_delete BEFORE DELETE ON {t} "
    "BEGIN SELECT RAISE(ABORT, 'stored events are immutable: DELETE refused'); END",
    # INSERT OR REPLACE deletes the row it replaces without firing DELETE triggers: refuse an
    # insert whose key is taken. (A plain conflicting insert fails as a constraint either way,
    # which is how an optimistic-concurrency conflict still surfaces.)
    "CREATE TRIGGER IF NOT EXISTS {t}_refuse_replace BEFORE INSERT ON {t} "
    "WHEN EXISTS (SELECT 1 FROM {t} WHERE {key}) "
    "BEGIN SELECT RAISE(ABORT, 'stored events are immutable: REPLACE refused'); END",
]
# How a new row names the row it would replace, per guarded table.
_SQLITE_KEYS = {
    "stored_events": "originator_id = NEW.originator_id "
    "AND originator_version = NEW.originator_version",
    "ledger_chain": "position = NEW.position",
    "ledger_chain_key": "fingerprint = NEW.fingerprint",
}

_PG_GUARD_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.ledger_refuse_event_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stored events are immutable: % refused on %', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$
"""
_PG_GUARDS = [
    "CREATE OR REPLACE TRIGGER {trigger_rows} BEFORE UPDATE OR DELETE ON {schema}.{table} "
    "FOR EACH ROW EXECUTE FUNCTION {schema}.ledger_refuse_event_change()",
    "CREATE OR REPLACE TRIGGER {trigger_truncate} BEFORE TRUNCATE ON {schema}.{table} "
    "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.ledger_refuse_event_change()",
]
# Any constants shared by every process: they serialise concurrent start-ups' DDL.
_GUARD_LOCK_KEY = 0x1ED6E4
_WRITER_LOCK_KEY = 0x1ED6E6
_SCHEMA_LOCK_KEY = 0x1ED6E3


def guard_events(recorder: Recorder) -> None:
    """Create the chain, chain-key and keys tables, and make the database refuse UPDATE,
    DELETE and TRUNCATE of stored events, of the chain that seals them, and of the chain key's
    fingerprint. (The keys' table is not history: it is pruned.)

    A keys' table without its seal column gets it back, and the records it holds are left
    unsealed: nothing here can tell the service's own from rows an intruder inserted after
    dropping the column, so none is trusted (``StoreKeyBook.get`` refuses them until they are
    pruned, 24 h after they were written)."""
    tables = [events_table(recorder), CHAIN_TABLE, CHAIN_KEY_TABLE]
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=True) as cursor:
            for statement in STORE_DDL:
                cursor.execute(statement)
            cursor.execute("SELECT name FROM pragma_table_info('ledger_keys')")
            if "seal" not in {row[0] for row in cursor.fetchall()}:
                cursor.execute("ALTER TABLE ledger_keys ADD COLUMN seal TEXT")
                _warn_unsealed_key_records()
            for table in tables:
                for statement in _SQLITE_GUARDS:
                    cursor.execute(statement.format(t=table, key=_SQLITE_KEYS[table]))
        return
    assert isinstance(recorder, PostgresApplicationRecorder)
    datastore: PostgresDatastore = recorder.datastore
    with datastore.transaction(commit=True) as curs:
        curs.execute("SELECT pg_advisory_xact_lock(%s)", (_GUARD_LOCK_KEY,))
        for statement in STORE_DDL:
            curs.execute(statement)
        curs.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = %s"
                     " AND table_name = 'ledger_keys' AND column_name = 'seal'",
                     (datastore.schema,))
        if curs.fetchone() is None:
            curs.execute("ALTER TABLE ledger_keys ADD COLUMN seal TEXT")
            _warn_unsealed_key_records()
        replace_guard_function(curs, Identifier(datastore.schema))
        for table in tables:
            names = {
                "schema": Identifier(datastore.schema),
                "table": Identifier(table),
                "trigger_rows": Identifier(f"{table}_refuse_change"),
                "trigger_truncate": Identifier(f"{table}_refuse_truncate"),
            }
            for statement in _PG_GUARDS:
                curs.execute(SQL(statement).format(**names))


def _warn_unsealed_key_records() -> None:
    log.warning("the idempotency keys' table had no seal column (a store made before key "
                "records were sealed, or the column was dropped behind the service's back): "
                "added, and the records it held are left unsealed; a request with one of their "
                "keys is refused (503) until they are pruned, 24 h after they were written")


def replace_guard_function(curs: Any, schema: Identifier) -> None:
    """(Re)make the trigger function every guard of history calls (the events' and the
    notary's), in the caller's transaction, under the guards' lock: two CREATE OR REPLACE
    FUNCTION at once fail one of them ("tuple concurrently updated")."""
    curs.execute("SELECT pg_advisory_xact_lock(%s)", (_GUARD_LOCK_KEY,))  # held: taken again
    curs.execute(SQL(_PG_GUARD_FUNCTION).format(schema=schema))


# How many of the log's first sealed events a start tests the chain key against. A key that
# holds the seal of any of them is the key that sealed the store (no one else can make such a
# seal), so one forged or damaged link at the log's start does not make the right key read as
# another; bounded, so a start costs the same on any log.
KEY_TEST_EVENTS = 8


def adopt_chain_key(recorder: Recorder, path: Path, *, may_create: bool) -> ChainKey:
    """The key that seals this store's events, checked against the store.

    An empty store with no fingerprint takes the key at ``path`` (made there first when
    ``may_create``); an empty store with one takes only the key it names. A store that holds
    events is checked against its history: the key must hold the seal of one of its first
    sealed events (``KEY_TEST_EVENTS``), and the store's record of the fingerprint must name
    that key and no other. Either failing is refused, each named as what it is: a key file
    that is not this store's key, or a record changed or removed by SQL (which the service
    never rewrites: a store with events never gets a fingerprint written)."""
    if not _chain_is_keyed(recorder):
        raise ChainKeyError(
            "the store's chain was made by an earlier version, whose links are plain SHA-256 "
            "(ledger_chain has no 'previous' column): anyone who could write to the database "
            "could have recomputed them, so this ledger cannot vouch for its history. Check it "
            "with the version that made it (its ledger verify), and start this one on an "
            "empty store")
    rows = run_sql(recorder, [("SELECT fingerprint FROM ledger_chain_key", {})], commit=False)
    fingerprints = {str(row["fingerprint"]) for row in rows}
    events = recorder.max_notification_id() or 0  # type: ignore[attr-defined]
    if not events:
        return _adopt_on_empty_store(recorder, path, fingerprints, may_create=may_create)
    sealed = _first_sealed_events(recorder)
    if not sealed:
        # No event carries a seal (an earlier version's store, or every link removed): only
        # the record can be checked, as on an empty store; the missing seals are damage, named
        # where the events are read (loading, ``verify``).
        if not fingerprints:
            raise ChainKeyError(
                f"the store holds {events} events but no chain key's fingerprint and no "
                "event's seal: it was written by an earlier version that did not seal events; "
                "start with an empty store")
        return _key_the_record_names(path, fingerprints)
    if not path.exists():
        raise ChainKeyError(_no_key_file(path, fingerprints, events))
    key = read_key(path)
    holds = next((row for row in sealed if key.holds(
        row["hash"], row["previous"], int(row["position"]), row["originator_id"],
        int(row["originator_version"]), row["topic"], row["state"],
    )), None)
    if holds is None:
        raise ChainKeyError(_not_the_key(key, path, fingerprints, sealed))
    if fingerprints != {key.fingerprint}:
        recorded = ", ".join(sorted(fingerprints)) or "no fingerprint"
        raise ChainKeyError(
            "the store's record of its chain key's fingerprint was changed or removed behind "
            f"the service's back (the key does seal its history): the key at {path} holds the "
            f"seal of the event at position {int(holds['position'])}, and the record names "
            f"{recorded} where that key's fingerprint is {key.fingerprint}; restore the store, "
            "or that one row of ledger_chain_key, before starting"
        )
    return key


def _adopt_on_empty_store(
    recorder: Recorder, path: Path, fingerprints: set[str], *, may_create: bool,
) -> ChainKey:
    if fingerprints:
        return _key_the_record_names(path, fingerprints)
    key = create_key(path) if may_create and not path.exists() else read_key(path)
    run_sql(
        recorder,
        [(
            "INSERT INTO ledger_chain_key (fingerprint, adopted_at) VALUES (%(f)s, %(at)s)",
            {"f": key.fingerprint, "at": _instant(datetime.now(UTC))},
        )],
        commit=True,
    )
    return key


def _key_the_record_names(path: Path, fingerprints: set[str]) -> ChainKey:
    """The key at ``path``, when the store's record of its fingerprint (``fingerprints``, not
    empty) names it: the check of a store with no seal to test the key against."""
    assert fingerprints
    if not path.exists():
        raise ChainKeyError(_no_key_for_record(path, fingerprints))
    key = read_key(path)
    if key.fingerprint not in fingerprints:
        raise ChainKeyError(
            f"the chain key at {path} (fingerprint {key.fingerprint}) is not the key this store "
            f"is sealed with ({sorted(fingerprints)[0]}): point LEDGER_CHAIN_KEY_FILE at that key"
        )
    return key


def _chain_is_keyed(recorder: Recorder) -> bool:
    """Whether the store's chain table is this ledger's (each link beside the one before it),
    not an earlier version's plain SHA-256 chain (which ``CREATE TABLE IF NOT EXISTS`` keeps)."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        sql = "SELECT 1 AS found FROM pragma_table_info('ledger_chain') WHERE name = 'previous'"
    else:
        sql = ("SELECT 1 AS found FROM information_schema.columns WHERE table_schema ="
               " current_schema() AND table_name = 'ledger_chain' AND column_name = 'previous'")
    return bool(run_sql(recorder, [(sql, {})], commit=False))


def _first_sealed_events(recorder: Recorder) -> list[dict[str, Any]]:
    """The log's first events (from position 1: the writer gives no other) that have a stored
    link, at most ``KEY_TEST_EVENTS``, each with its link (``hash``) and the one before it."""
    events, position = events_and_position(recorder)
    return run_sql(recorder, [(
        f"SELECT e.{position} AS position, e.originator_id, e.originator_version, e.topic,"  # noqa: S608
        f" e.state, c.previous, c.hash FROM {events} e"
        f" JOIN ledger_chain c ON c.position = e.{position}"
        f" WHERE e.{position} >= 1 ORDER BY e.{position} LIMIT %(limit)s",
        {"limit": KEY_TEST_EVENTS},
    )], commit=False)


def _no_key_for_record(path: Path, fingerprints: set[str]) -> str:
    return (f"this store is sealed with chain key {sorted(fingerprints)[0]}, and there is no "
            f"key at {path}: point LEDGER_CHAIN_KEY_FILE at that key")


def _no_key_file(path: Path, fingerprints: set[str], events: int) -> str:
    if fingerprints:
        return _no_key_for_record(path, fingerprints)
    return (f"this store holds {events} sealed events, and there is no chain key at {path}: "
            "point LEDGER_CHAIN_KEY_FILE at the key that sealed them (the store's record of "
            "that key's fingerprint is missing too: it was removed behind the service's back)")


def _not_the_key(
    key: ChainKey, path: Path, fingerprints: set[str], sealed: list[dict[str, Any]],
) -> str:
    """The refusal of a key that holds the seal of none of ``sealed``."""
    first, last = int(sealed[0]["position"]), int(sealed[-1]["position"])
    said = (f"the chain key at {path} (fingerprint {key.fingerprint}) is not this store's key: "
            f"it holds the seal of none of the store's first sealed events (positions {first} "
            f"to {last})")
    if key.fingerprint in fingerprints:
        return (f"{said}; the store's record of its key's fingerprint names this key all the "
                "same: that record was changed behind the service's back; point "
                "LEDGER_CHAIN_KEY_FILE at the key that sealed the store, and restore the record")
    if fingerprints:
        return (f"{said}, and is not the key this store is sealed with "
                f"({sorted(fingerprints)[0]}): point LEDGER_CHAIN_KEY_FILE at that key")
    return (f"{said}; the store's record of its key's fingerprint is missing too (removed "
            "behind the service's back): point LEDGER_CHAIN_KEY_FILE at the key that sealed "
            "the store")


class StoreKeyBook:
    """The idempotency keys' table (``ledger.idempotency.KeyBook``)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def get(self, record_id: str) -> KeyRecord | None:
        """The key's record. One whose seal does not hold (inserted or changed behind the
        service's back), or that has none (left unsealed when ``guard_events`` added the seal
        column back), is named in an ERROR line and refused (``NotReady``): its request is
        neither answered with it nor carried out again, which a command with no natural key of
        its own (a partial failure credit) would take as a second effect. Such a record is
        pruned as any other, 24 h after it was written."""
        rows = run_sql(
            self.recorder,
            [(f"{_SELECT_KEY_RECORDS} WHERE id = %(id)s", {"id": record_id})],
            commit=False,
        )
        if not rows:
            return None
        row = rows[0]
        if not _key_record_sealed(self.recorder.chain_key, row):  # type: ignore[attr-defined]
            log.error("the record of idempotency key %s has no valid seal (written behind the "
                      "service's back, or left unsealed when the seal column was added): its "
                      "requests are refused until it is pruned", record_id)
            raise NotReady(
                "the record of this Idempotency-Key was not written by the service (it was "
                "inserted or changed behind its back): the request is not carried out until "
                "an operator restores the store"
            )
        return KeyRecord(
            id=row["id"],
            caller=row["caller"],
            fingerprint=row["fingerprint"],
            outcome=row["outcome"],
            body=json.loads(row["body"]),
            position=None if row["position"] is None else int(row["position"]),
            recorded_at=datetime.fromisoformat(row["recorded_at"]),
        )

    def prune(self, up_to: datetime, limit: int = PRUNE_BATCH) -> int:
        assert limit > 0
        rows = run_sql(
            self.recorder,
            [(
                "DELETE FROM ledger_keys WHERE id IN (SELECT id FROM ledger_keys"
                " WHERE recorded_at <= %(up_to)s ORDER BY recorded_at LIMIT %(limit)s)"
                " RETURNING id",
                {"up_to": _instant(up_to), "limit": limit},
            )],
            commit=True,
        )
        return len(rows)


def check_durable(recorder: Recorder) -> None:
    """Refuse a PostgreSQL that acknowledges commits before they are on disk."""
    if not isinstance(recorder, PostgresApplicationRecorder):
        return
    with recorder.datastore.transaction(commit=False) as curs:
        for setting in ("fsync", "synchronous_commit"):
            curs.execute(SQL("SHOW {}").format(Identifier(setting)))
            row = curs.fetchone()
            assert row is not None
            value = str(next(iter(row.values())))
            if value.lower() in ("off", "false", "0"):
                raise StoreNotDurable(f"PostgreSQL has {setting}={value}: commits could be lost")


@contextmanager
def schema_lock(settings: StoreSettings) -> Iterator[None]:
    """One process at a time creates tables (PostgreSQL; SQLite serialises DDL itself)."""
    if settings.kind != "postgres":
        yield
        return
    with connect(settings) as connection:
        connection.execute("SET lock_timeout = '30s'")
        connection.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK_KEY,))
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK_KEY,))


def application_env(settings: StoreSettings, *, makes_tables: bool) -> dict[str, str]:
    """The application's settings. A least-privileged login (``makes_tables`` False:
    ``privileges.may_make_tables``) makes no table (issue 10: `ledger migrate` made them); any
    other makes them, under ``schema_lock``, as it is made."""
    env = settings.app_env()
    if not makes_tables:
        env["CREATE_TABLE"] = "n"
    return env


def open_application(
    settings: StoreSettings, *, may_create_key: bool = True, **options: Any
) -> LedgerApplication:
    """The ledger application on the configured store, checked, guarded and sealing."""
    if settings.sqlite_path is not None:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    from projections.privileges import may_make_tables  # issue 10: least privilege

    makes_tables = may_make_tables(settings)
    env = application_env(settings, makes_tables=makes_tables)
    with schema_lock(settings):
        app = LedgerApplication(env, **options)
        wire(app, settings, may_create_key=may_create_key, makes_tables=makes_tables)
    return app


def wire(app: LedgerApplication, settings: StoreSettings, *, may_create_key: bool = True,
         makes_tables: bool = True) -> None:
    """Check and guard the application's store, give its recorder the chain key, and wire the
    application to the store's positions and keys."""
    from projections.checkpoints import guard_notary  # it builds on this module

    check_durable(app.recorder)
    if makes_tables:
        guard_events(app.recorder)
        guard_notary(app.recorder)
    key = adopt_chain_key(app.recorder, settings.chain_key_file, may_create=may_create_key)
    assert isinstance(app.recorder, _Sealer), "the store's recorder seals what it records"
    app.recorder.chain_key = key
    app.positions = StorePositions(app.recorder)
    app.keys = StoreKeyBook(app.recorder)
