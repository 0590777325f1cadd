"""The staff directory: who a token is, read from the staff's events (``ledger.staff``).

Each server keeps its own directory in memory (token digest -> person, role, revoked) and reads
the staff events recorded since it last looked, at most every ``REFRESH_S``, so a person added,
rotated or revoked on any server (or by ``ledger staff``) is honoured everywhere within a second.
Only the staff's own topics are read, a page at a time.

Only events the service sealed are honoured: each one's seal is checked with the chain key
(``projections.seal``) before it counts, so a member of staff (or a token) INSERTed into the
events table by someone with the database's password but not the key lets no one in. Such an
event is skipped and named in an ERROR line; the notary and ``ledger verify`` name it too.

Nor does a staff event deleted with its seal go unseen. The events that remain keep their own
seals, so the directory also checks that the log is whole (``Chain.first_gap``) up to where it
reads: on a server started after a revocation was deleted, the revoked person would otherwise be
let in again. A gap fails closed: from then on no member of staff is let in by this server (the
role tokens of its configuration still are; ``people`` still lists them), ``damage`` names the
position for ``/ready``, and an ERROR line says why, until an operator restores the store and
restarts the service.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification

from ledger.staff import Staff
from projections.chain import Chain, Damage, Link
from projections.seal import ChainKey

REFRESH_S = 0.5
PAGE = 500
log = logging.getLogger(__name__)
TOPICS = (Staff.StaffAdded.TOPIC, Staff.TokenRotated.TOPIC, Staff.StaffRevoked.TOPIC)


@dataclass(frozen=True)
class Person:
    name: str
    role: str
    token_hash: str
    revoked: bool = False
    added_at: str = ""
    added_by: str = ""
    changed_at: str = ""
    changed_by: str = ""


class StaffDirectory:
    """The staff as their events left them; ``refresh`` reads what is new."""

    def __init__(self, app: Application[Any], refresh_s: float = REFRESH_S) -> None:
        self.app = app
        self.refresh_s = refresh_s
        self._people: dict[str, Person] = {}
        self._by_hash: dict[str, Person] = {}
        self._names: dict[UUID, str] = {}
        self._last = 0
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self._chain = Chain(app.recorder)
        self.damage: Damage | None = None  # a gap in the log: no member of staff is let in
        self._key: ChainKey = app.recorder.chain_key  # type: ignore[attr-defined]
        assert self._key is not None, "the staff directory checks seals: wire the recorder first"

    def refresh(self) -> None:
        with self._lock:
            # Up to the log's end as it stands now (writers commit in log order), which the
            # next look starts from: each look reads only what is new, however long the log.
            top = self.app.recorder.max_notification_id() or 0
            if self.damage is None and self._last < top:
                gap = self._chain.first_gap(self._last, top)
                if gap is not None:
                    self.damage = Damage(gap, "missing")
                    log.error("history damaged at position %s: a sealed event is gone (deleted "
                              "behind the service's back); no member of staff is let in until "
                              "the store is restored", gap)
            while self._last < top:
                found = self.app.recorder.select_notifications(
                    self._last + 1, PAGE, stop=top, topics=TOPICS
                )
                links = self._chain.links_at(n.id for n in found)
                for notification in found:
                    if self._sealed(notification, links.get(notification.id)):
                        self._apply(self.app.mapper.to_domain_event(notification))
                    self._last = notification.id
                if len(found) < PAGE:
                    self._last = top
            self._by_hash = {} if self.damage is not None else {
                p.token_hash: p for p in self._people.values() if not p.revoked}
            self._checked = time.monotonic()

    def _sealed(self, notification: Notification, link: Link | None) -> bool:
        if link is not None and self._key.holds(
            link.hash, link.previous, notification.id, notification.originator_id,
            notification.originator_version, notification.topic, notification.state,
        ):
            return True
        log.error("history damaged at position %s: a staff event without a valid seal "
                  "(written behind the service's back); no one is let in by it",
                  notification.id)
        return False

    def refresh_if_due(self) -> None:
        if time.monotonic() - self._checked >= self.refresh_s:
            self.refresh()

    def _apply(self, event: Any) -> None:
        at = event.timestamp.isoformat()
        if isinstance(event, Staff.StaffAdded):
            self._names[event.originator_id] = event.name
            self._people[event.name] = Person(event.name, event.role, event.token_hash,
                                              added_at=at, added_by=event.actor,
                                              changed_at=at, changed_by=event.actor)
            return
        before = self._people.get(self._names.get(event.originator_id, ""))
        if before is None:
            return
        changes: dict[str, Any] = {"changed_at": at, "changed_by": event.actor}
        if isinstance(event, Staff.TokenRotated):
            changes["token_hash"] = event.token_hash
        elif isinstance(event, Staff.StaffRevoked):
            changes["revoked"] = True
        self._people[before.name] = Person(**{**before.__dict__, **changes})

    def identify(self, digest: str) -> Person | None:
        """The active person whose token has this SHA-256 hex digest, or None."""
        return self._by_hash.get(digest)

    def people(self) -> list[Person]:
        return sorted(self._people.values(), key=lambda p: p.name)

