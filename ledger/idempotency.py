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
        """``position`` is the log position the first response named when it wrote nothing
        (a natural duplicate); None when the response's position is this event's own."""

        TOPIC = "ledger:IdempotencyRecord.Recorded"
        caller: str
        fingerprint: str
        outcome: str
        body: dict[str, Any]
        position: int | None = None  # absent in records stored before it existed
        recorded_at: str | None = None  # the shop's clock; absent: the event's own time

    class Renewed(Event):
        """The key came back after its lifetime with a new request."""

        TOPIC = "ledger:IdempotencyRecord.Renewed"
        fingerprint: str
        outcome: str
        body: dict[str, Any]
        position: int | None = None  # absent in records stored before it existed
        recorded_at: str | None = None  # the shop's clock; absent: the event's own time

    @event(Recorded)
    def __init__(
        self,
        caller: str,
        fingerprint: str,
        outcome: str,
        body: dict[str, Any],
        position: int | None,
        recorded_at: str | None,
    ) -> None:
        self.caller = caller
        self._remember(fingerprint, outcome, body, position, recorded_at)

    @classmethod
    def record(
        cls,
        *,
        id: UUID,
        caller: str,
        fingerprint: str,
        outcome: str,
        body: dict[str, Any],
        position: int | None = None,
        recorded_at: datetime | None = None,
    ) -> IdempotencyRecord:
        return cls._create(
            cls.Recorded,
            id=id,
            caller=caller,
            fingerprint=fingerprint,
            outcome=outcome,
            body=body,
            position=position,
            recorded_at=None if recorded_at is None else recorded_at.isoformat(),
        )

    def renew(
        self,
        fingerprint: str,
        outcome: str,
        body: dict[str, Any],
        position: int | None = None,
        recorded_at: datetime | None = None,
    ) -> None:
        at = None if recorded_at is None else recorded_at.isoformat()
        self._renew(fingerprint, outcome, body, position, at)

    @event(Renewed)
    def _renew(
        self,
        fingerprint: str,
        outcome: str,
        body: dict[str, Any],
        position: int | None,
        recorded_at: str | None,
    ) -> None:
        self._remember(fingerprint, outcome, body, position, recorded_at)

    def _remember(
        self,
        fingerprint: str,
        outcome: str,
        body: dict[str, Any],
        position: int | None,
        recorded_at: str | None,
    ) -> None:
        self.fingerprint = fingerprint
        self.outcome = outcome
        self.body = body
        self.position = position
        self._recorded_at = None if recorded_at is None else datetime.fromisoformat(recorded_at)

    @property
    def recorded_at(self) -> datetime:
        """When the key was last used for a new request, on the shop's clock (the one the
        application compares it with); records that did not carry it use their last event's
        time, read here once applied (inside an @event body the aggregate still carries the
        previous event's time)."""
        return self._recorded_at if self._recorded_at is not None else self.modified_on

    def is_live(self, now: datetime) -> bool:
        return now - self.recorded_at < KEY_LIFETIME
