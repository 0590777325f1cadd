"""Idempotency records: what a caller's ``Idempotency-Key`` already did.

A record's id derives from the caller and the key, and it is saved in the same transaction as
the events it guards, so a retry, a concurrent duplicate, or a retry after a commit whose
acknowledgement was lost takes effect once and answers the first response. A key is honoured
for ``KEY_LIFETIME``; after that the same key starts afresh (a new event on the same record).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

KEY_LIFETIME = timedelta(hours=24)
IDEMPOTENCY_NAMESPACE = uuid5(NAMESPACE_URL, "https://ledger.import-express/idempotency")


def record_id(caller: str, key: str) -> UUID:
    return uuid5(IDEMPOTENCY_NAMESPACE, f"{caller}\n{key}")


def fingerprint(command: str, params: dict[str, Any]) -> str:
    """What the request asked for, independent of how its JSON was spelled."""
    canonical = json.dumps([command, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyRecord(Aggregate):
    TOPIC = "ledger:IdempotencyRecord"

    class Event(Aggregate.Event):
        TOPIC = "ledger:IdempotencyRecord.Event"

    class Created(Event, Aggregate.Created):
        TOPIC = "ledger:IdempotencyRecord.Created"

    class Recorded(Created):
        TOPIC = "ledger:IdempotencyRecord.Recorded"
        caller: str
        fingerprint: str
        outcome: str
        body: dict[str, Any]

    class Renewed(Event):
        """The key came back after its lifetime with a new request."""

        TOPIC = "ledger:IdempotencyRecord.Renewed"
        fingerprint: str
        outcome: str
        body: dict[str, Any]

    @event(Recorded)
    def __init__(self, caller: str, fingerprint: str, outcome: str, body: dict[str, Any]) -> None:
        self.caller = caller
        self._remember(fingerprint, outcome, body)

    @classmethod
    def record(
        cls, *, id: UUID, caller: str, fingerprint: str, outcome: str, body: dict[str, Any]
    ) -> IdempotencyRecord:
        return cls._create(
            cls.Recorded, id=id, caller=caller, fingerprint=fingerprint, outcome=outcome, body=body
        )

    def renew(self, fingerprint: str, outcome: str, body: dict[str, Any]) -> None:
        self._renew(fingerprint, outcome, body)

    @event(Renewed)
    def _renew(self, fingerprint: str, outcome: str, body: dict[str, Any]) -> None:
        self._remember(fingerprint, outcome, body)

    def _remember(self, fingerprint: str, outcome: str, body: dict[str, Any]) -> None:
        self.fingerprint = fingerprint
        self.outcome = outcome
        self.body = body
        self.recorded_at = self.modified_on

    def is_live(self, now: datetime) -> bool:
        return now - self.recorded_at < KEY_LIFETIME
