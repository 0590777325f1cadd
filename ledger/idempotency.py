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
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import NAMESPACE_URL, uuid5

KEY_LIFETIME = timedelta(hours=24)
# Keys forgotten by one prune, the oldest first: the committer prunes between batches, holding
# its writer, so a day of keys past their lifetime (a ledger down for a while, or a busy one)
# goes in bounded steps rather than in one statement that stalls the writes.
PRUNE_BATCH = 5_000
IDEMPOTENCY_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledger.import-express/idempotency")


def record_id(caller: str, key: str) -> str:
    """The stored name of one caller's key (the key itself is the caller's business)."""
    return uuid5(IDEMPOTENCY_NAMESPACE, f"{caller}\n{key}").hex


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
