"""Idempotency keys: what a caller's ``Idempotency-Key`` already did.

A key is not history: its record lives in a table of its own (``projections.store``), written
in the same transaction as the events it guards, so a retry, a concurrent duplicate, or a retry
after a commit whose acknowledgement was lost takes effect once and answers the first response.
A refusal under a key writes its answer there and no event (a refusal that is itself
recorded, a case the policy refuses, writes its events and the refusal as the key's answer).
A key belongs to the caller (the person; a shared role token's person is its role), not to the
token it came with, so a retry sent with a rotated token is still the same request. A key is
honoured for ``KEY_LIFETIME`` on the shop's clock; after that the same key starts afresh, and
records older than that are pruned.

A record can be deleted behind the service's back (by someone with the database's password);
the log cannot. So each event recorded under a key carries the key's mark (``KEY_MARK``: the
record's id and time), sealed with the event, and its aggregate remembers the marks of its
events of the key's lifetime (``KeyMarked``). A command whose key has no record, yet whose
aggregate already holds the key's live mark, took effect before: it is refused, not carried out
again (``took_effect``). A command that creates an aggregate no account holds (a return case)
names it by its key (``created_ids``), so a retry's decision finds it, and its mark, there.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

KEY_LIFETIME = timedelta(hours=24)
# Keys forgotten by one prune, the oldest first: the committer prunes between batches, holding
# its writer, so a day of keys past their lifetime (a ledger down for a while, or a busy one)
# goes in bounded steps rather than in one statement that stalls the writes.
PRUNE_BATCH = 5_000
IDEMPOTENCY_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledger.import-express/idempotency")
# What a command under a key creates is named in a namespace of its own: no id of anything else
# (an account's, a refund request's, a key record's) is ever one of these.
CREATED_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledger.import-express/idempotency/created")
# A key's lifetimes are told apart by the window of KEY_LIFETIME a creation was decided in,
# counted from here on the shop's clock.
_WINDOWS_FROM = datetime(1970, 1, 1, tzinfo=UTC)
# How far a first try's time may lie from where a retry's decision looks for it: its mark is
# dated a moment after its decision, and two processes' clocks may disagree a little.
CLOCK_SLACK = timedelta(hours=1)


def record_id(caller: str, key: str) -> str:
    """The stored name of one caller's key (the key itself is the caller's business)."""
    return uuid5(IDEMPOTENCY_NAMESPACE, f"{caller}\n{key}").hex


def created_ids(record_id: str, now: datetime) -> tuple[UUID, ...]:
    """The ids of what a command under the key ``record_id`` may have created, as of ``now``: the
    first is the id of what a creation decided now creates; the others (one or two), those a
    first try still within the key's lifetime may have given it, decided in a window before
    (or, on a clock ahead by at most ``CLOCK_SLACK``, after). A key that starts afresh, its
    lifetime over, decides in a later window than its first use: it creates anew. Derived from
    the record's id, hence from the caller and the key: no one else can name them."""
    decided = _window(now)
    earliest = _window(now - KEY_LIFETIME - CLOCK_SLACK)
    latest = _window(now + CLOCK_SLACK)
    windows = [decided, *(w for w in range(latest, earliest - 1, -1) if w != decided)]
    return tuple(uuid5(CREATED_NAMESPACE, f"{record_id}\n{window}") for window in windows)


def _window(at: datetime) -> int:
    return (at - _WINDOWS_FROM) // KEY_LIFETIME


def fingerprint(command: str, params: dict[str, Any]) -> str:
    """What the request asked for, independent of how its JSON was spelled."""
    canonical = json.dumps([command, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """A key's first response. ``position`` is the log position it names (None for a
    refusal, which names none)."""

    id: str
    caller: str
    fingerprint: str
    outcome: str
    body: dict[str, Any]
    position: int | None
    recorded_at: datetime

    def is_live(self, now: datetime) -> bool:
        return now - self.recorded_at < KEY_LIFETIME


@dataclass(frozen=True)
class KeyWrite:
    """A key's record as the committer writes it, in the transaction of the command's events.

    With ``at_last_event``, the record's position is that of the command's last event, known
    once it is recorded: the committer sets ``event_index``, that event's 1-based index among
    the events of its whole batch. ``replaces`` is the ``recorded_at`` of the expired record
    this one takes over (a compare-and-set: it fails if another process renewed it first)."""

    record: KeyRecord
    at_last_event: bool = False
    replaces: datetime | None = None
    event_index: int = 0


class KeyBook(Protocol):
    """The keys' table, as the application reads it (the store writes it)."""

    def get(self, record_id: str) -> KeyRecord | None: ...

    def prune(self, up_to: datetime, limit: int = PRUNE_BATCH) -> int:
        """Forget the oldest keys recorded at or before ``up_to``, at most ``limit``; answers
        how many."""
        ...


# The attribute of an event recorded under a key: ``{"id": <the record's id>, "at": <its time>}``
# (not a field of the event's class: eventsourcing stores and restores every attribute).
KEY_MARK = "under_key"
# The attribute of an aggregate holding its events' live marks: record id -> record time, the
# latest last.
_MARKS = "_key_marks"


def mark_events(aggregates: tuple[Aggregate, ...], record: KeyRecord) -> None:
    """Mark the new events of ``aggregates`` as recorded under ``record``'s key (before they
    are stored, so the mark is sealed with each), and have each aggregate remember it."""
    mark = {"id": record.id, "at": record.recorded_at.isoformat()}
    for aggregate in aggregates:
        pending = aggregate.pending_events
        if pending:
            for event in pending:
                object.__setattr__(event, KEY_MARK, mark)
            _remember(aggregate, record.id, record.recorded_at)


def took_effect(aggregates: tuple[Aggregate, ...], record_id: str, now: datetime) -> bool:
    """Whether an event of one of ``aggregates`` was recorded under the key ``record_id``
    within the key's lifetime, as of ``now`` (the shop's clock, which dates the records)."""
    for aggregate in aggregates:
        at = aggregate.__dict__.get(_MARKS, {}).get(record_id)
        if at is not None and now - at < KEY_LIFETIME:
            return True
    return False


def _remember(aggregate: Any, record_id: str, at: datetime) -> None:
    marks: dict[str, datetime] = aggregate.__dict__.setdefault(_MARKS, {})
    marks.pop(record_id, None)
    marks[record_id] = at
    # Bounded: the marks a lifetime older than this one are forgotten, the oldest first (they
    # come in the order of their records' times), so an aggregate holds a day's at most.
    for _ in range(len(marks) - 1):
        oldest = next(iter(marks))
        if at - marks[oldest] < KEY_LIFETIME:
            break
        del marks[oldest]


class KeyMarked:
    """For an aggregate's events: applying one recorded under a key remembers its mark."""

    def mutate(self, aggregate: Any) -> Any:
        aggregate = super().mutate(aggregate)  # type: ignore[misc]
        mark = self.__dict__.get(KEY_MARK)
        if mark is not None and aggregate is not None:
            _remember(aggregate, mark["id"], datetime.fromisoformat(mark["at"]))
        return aggregate
