"""The staff directory: who a token is, read from the staff's events (``ledger.staff``).

Each server keeps its own directory in memory (token digest -> person, role, revoked) and reads
the events recorded since it last looked, at most every ``REFRESH_S``, so a person added,
rotated or revoked on any server (or by ``ledger staff``) is honoured everywhere within a second.

A member of staff is let in only on a view of the staff's events that is whole. Someone with the
database's password but not the chain key can change, delete, insert or move any row, and a
staff event made to read as any other (its topic or its stream changed), or deleted with its
seal, leaves nothing that a look at the staff's own topics or streams would show. So the
directory reads every event, whatever its topic, and checks each one's seal and that it follows
the one before (``projections.chain.seal_damage``, as the read models' watch does), and that no
position is missing. Damage anywhere (an event unsealed, changed, moved or deleted: any of
them could be a staff event, or hide one) fails closed: from then on no member of staff is let
in by this server (the role tokens of its configuration still are; ``people`` still lists the
staff from the events whose seals hold), ``damage`` names the first damaged position for
``/ready``, and an ERROR line says why, until an operator restores the store and restarts the
service. Events at position 0 or below are no part of the log, and no staff's: ``ledger
verify`` and the notary name them.

A directory that has not been refreshed for ``STALE_S`` (the store does not answer, or an
event cannot be read: each refresh fails) lets no member of staff in either, until a refresh
holds again: a person revoked meanwhile would otherwise keep their way in for as long as the
refreshes fail, with nothing but a WARNING a line (the role tokens of the configuration still
work, as above).

An event this process's writer sealed, read back exactly as written with the links written,
needs no second HMAC: the writer's memory of it (``projections.seal.WrittenHere``, kept for the
notary of ``ledger serve``) vouches for its seal, as it does for the notary; any other event,
or one changed since, is checked in full.

Reading the whole log at every start would cost a long log dearly (a row and an HMAC, some
5-10 µs, an event). So the directory leaves marks beside the log (``ledger_staff_marks``): a
mark says "up to position P, whose link is L, every event's seal held and followed the one
before, and the staff's events stood at these positions", sealed with a key derived from the
chain key, so that no one without the key can make one. A directory starting takes the newest
mark whose seal holds, checks the link at P and the seal of each staff event the mark names (an
HMAC each), and reads on from P as above. A start then costs the staff's events and the events
after the last mark, which any directory renews as it reads (after a staff event, and every
``MARK_EVERY`` events): not the log. A mark deleted costs a longer read at the next start, an
older one put back the same; a mark beyond the log's end, or whose link the chain no longer
holds, is damage (the log was cut or rewritten). A log cut at its end together with every mark
is what no one can see in the database alone: the signed checkpoints kept outside it
(``ledger verify --checkpoint``) do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification, PersistenceError

from ledger.staff import Staff
from projections.chain import BATCH, Chain, Damage, Link, as_written, events_at, seal_damage
from projections.seal import GENESIS, ChainKey, WrittenHere, same_seal, seal_text
from projections.store import read_log, run_sql

REFRESH_S = 0.5
STALE_S = 30.0  # not refreshed for this long: no member of staff is let in (fails closed)
PAGE = 1000
MARK_EVERY = 10_000  # events read past the newest mark before a directory leaves another
MARKS_READ = 8  # the newest marks looked at, at a start, for one whose seal holds
log = logging.getLogger(__name__)
TOPICS = (Staff.StaffAdded.TOPIC, Staff.TokenRotated.TOPIC, Staff.StaffRevoked.TOPIC)
MARKS_TABLE = "ledger_staff_marks"
# Made with the notary's tables (``projections.checkpoints.guard_notary``). Not guarded: a mark
# is sealed, and a mark deleted or put back costs only a longer read at a start.
MARKS_DDL = (
    "CREATE TABLE IF NOT EXISTS ledger_staff_marks ("
    " position BIGINT PRIMARY KEY, link TEXT NOT NULL, staff TEXT NOT NULL, seal TEXT NOT NULL)"
)


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


@dataclass(frozen=True)
class Mark:
    """Up to ``position`` (whose link is ``link``) the log was whole, and the staff's events
    stood at ``staff``."""

    position: int
    link: str
    staff: tuple[int, ...]


class StaffDirectory:
    """The staff as their events left them; ``refresh`` reads what is new."""

    def __init__(self, app: Application[Any], refresh_s: float = REFRESH_S, *,
                 mark_every: int = MARK_EVERY, stale_s: float = STALE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        assert mark_every > 0
        assert stale_s > refresh_s, "a directory refreshed on time is never stale"
        self.app = app
        self.refresh_s = refresh_s
        self.stale_s = stale_s
        self._clock = clock
        self.mark_every = mark_every
        self._people: dict[str, Person] = {}
        self._by_hash: dict[str, Person] = {}
        self._revoked: frozenset[str] = frozenset()  # the names of the people revoked
        self._names: dict[UUID, str] = {}
        self._staff: list[int] = []  # the positions of the staff's events read, in order
        self._at: tuple[int, str] | None = None  # the last position read, and its link
        self._marked = 0  # the newest mark this directory knows of
        self._marks_kept = True  # False once the store refused a mark: each start reads all
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self._chain = Chain(app.recorder)
        self.damage: Damage | None = None  # the first damage read: no member of staff is let in
        self._key: ChainKey = app.recorder.chain_key  # type: ignore[attr-defined]
        assert self._key is not None, "the staff directory checks seals: wire the recorder first"
        self._mark_secret = hmac.new(self._key.secret, b"ledger staff directory marks",
                                     hashlib.sha256).digest()

    def refresh(self) -> None:
        with self._lock:
            # Up to the log's end as it stands now (writers commit in log order), which the
            # next look starts from: each look reads only what is new, however long the log.
            top = self.app.recorder.max_notification_id() or 0
            if self._at is None:
                self._at = self._resume(top)
            elif top < self._at[0]:  # the log never shrinks: its end was cut
                self._damaged(Damage(top + 1, "missing"))
            self._read(top)
            self._mark()
            self._by_hash = {} if self.damage is not None else {
                p.token_hash: p for p in self._people.values() if not p.revoked}
            self._revoked = frozenset(p.name for p in self._people.values() if p.revoked)
            self._checked = self._clock()

    def refresh_if_due(self) -> None:
        if self._clock() - self._checked >= self.refresh_s:
            self.refresh()

    def identify(self, digest: str) -> Person | None:
        """The active person whose token has this SHA-256 hex digest, or None (also when the
        directory has not been refreshed for ``stale_s``: it may no longer know who is
        revoked)."""
        if self.stale:
            return None
        return self._by_hash.get(digest)

    def is_revoked(self, name: str) -> bool:
        """Whether ``name`` (as ``staff_name`` spells it: lower case) is a person revoked: no
        credential naming them lets them in, a token of the identity provider's neither. A
        stale directory (``stale_s``) counts everyone on the staff as revoked."""
        if self.stale:
            return name in self._people
        return name in self._revoked

    @property
    def stale(self) -> bool:
        """Not refreshed for longer than ``stale_s``: it may no longer know who is revoked."""
        return self._clock() - self._checked > self.stale_s

    def knows(self, name: str) -> bool:
        """Whether ``name`` (lower case) is on the staff, active or revoked."""
        return name in self._people

    def people(self) -> list[Person]:
        return sorted(self._people.values(), key=lambda p: p.name)

    # -- reading the log -------------------------------------------------------------------------

    def _read(self, top: int) -> None:
        """Every event after the last one read, up to ``top``, a page at a time: a full page
        moves on by ``PAGE`` positions at least, so the pages are bounded."""
        assert self._at is not None
        for _ in range((top - self._at[0]) // PAGE + 1):
            after = self._at[0]
            if after >= top:
                return
            events = list(read_log(self.app.recorder, after, PAGE, upto=top))
            end = events[-1].id if len(events) == PAGE else top
            self._read_page(events, self._chain.links(after, end, batch_size=PAGE + 1), end)
        assert self._at[0] >= top, "reading up to the log's end did not end"

    def _read_page(self, events: list[Notification], links: Iterable[Link], end: int) -> None:
        """The events after the last one read, up to ``end``, and the stored links of the same
        positions: each event's seal must hold and follow the one before, and no position be
        missing (the writer leaves none). After damage the events go on being read, each from
        its own stored link, so that one damage does not hide the staff after it from
        ``people``."""
        assert self._at is not None
        after, previous = self._at
        stored: dict[int, Link] = {link.position: link for link in links}
        expected = after + 1
        # What this process's writer sealed, where it keeps that memory for its notary
        # (PostgreSQL's, in ``ledger serve``): an event read back exactly as written, with the
        # links written, holds its seal without a second HMAC (``as_written``). Looked at, never
        # started or taken from here.
        written: WrittenHere | None = getattr(self.app.recorder, "written", None)
        for notification in events:
            if notification.id != expected:
                self._damaged(Damage(expected, "missing"))  # deleted, with its seal or not
            link = stored.pop(notification.id, None)
            what = None if written is not None and as_written(
                written.look(notification.id), previous, notification, link,
            ) else seal_damage(self._key, previous, notification, link)
            if what is not None:
                self._damaged(Damage(notification.id, what))
            # An event out of order still carries its own seal: the staff it shows are listed
            # (no one is let in past damage anyway).
            if what in (None, "order") and notification.topic in TOPICS:
                self._take(notification)
            previous = previous if link is None else link.hash
            expected = notification.id + 1
        if stored:  # a link whose event is gone
            self._damaged(Damage(min(stored), "missing"))
        if expected <= end:
            self._damaged(Damage(expected, "missing"))
        self._at = (end, previous)

    def _take(self, notification: Notification) -> None:
        self._apply(self.app.mapper.to_domain_event(notification))
        self._staff.append(notification.id)

    def _damaged(self, damage: Damage) -> None:
        if self.damage is None:
            self.damage = damage
            log.error("history damaged at %s; no member of staff is let in until the store is "
                      "restored (a staff event could be changed or hidden there)",
                      damage.describe())

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

    # -- marks -----------------------------------------------------------------------------------

    def _resume(self, top: int) -> tuple[int, str]:
        """Where the first refresh reads on from: the newest mark whose seal holds, once the
        staff's events it names are read back and their seals checked; the log's start when
        there is none, or the log no longer holds the mark's end as it was."""
        mark = self._newest_mark()
        if mark is None:
            return 0, GENESIS
        self._marked = mark.position
        if mark.position > top:
            self._damaged(Damage(top + 1, "missing"))  # events read before are gone
            return 0, GENESIS
        try:
            link: str | None = self._chain.link_at(mark.position)
        except KeyError:
            link = None
        if link != mark.link:
            self._damaged(Damage(mark.position, "missing" if link is None else "content"))
            return 0, GENESIS
        for start in range(0, len(mark.staff), BATCH):
            self._read_again(mark.staff[start:start + BATCH])
        return mark.position, mark.link

    def _read_again(self, positions: tuple[int, ...]) -> None:
        """Staff events a mark names: each must still be there, with its seal (which covers
        its position, stream, version, topic and bytes, after the link before it)."""
        events = events_at(self.app.recorder, positions)
        links = self._chain.links_at(positions)
        for position in positions:
            notification, link = events.get(position), links.get(position)
            if notification is None:
                self._damaged(Damage(position, "missing"))
                continue
            previous = GENESIS if link is None else link.previous
            what = seal_damage(self._key, previous, notification, link)
            if what is not None or notification.topic not in TOPICS:
                self._damaged(Damage(position, what or "content"))
                continue
            self._take(notification)

    def _newest_mark(self) -> Mark | None:
        try:
            rows = run_sql(self.app.recorder, [(
                "SELECT position, link, staff, seal FROM ledger_staff_marks"
                " ORDER BY position DESC LIMIT %(n)s", {"n": MARKS_READ})], commit=False)
        except PersistenceError as error:
            self._keep_no_marks(error)
            return None
        for row in rows:
            mark = self._sealed_mark(row)
            if mark is not None:
                return mark
            log.error("the staff directory's mark at position %s has no valid seal (written "
                      "behind the service's back): it is not used", row["position"])
        return None

    def _sealed_mark(self, row: dict[str, Any]) -> Mark | None:
        try:
            position, staff = int(row["position"]), json.loads(row["staff"])
        except (TypeError, ValueError):
            return None
        if not (isinstance(staff, list) and all(type(p) is int for p in staff)):
            return None
        expected = self._mark_seal(position, str(row["link"]), staff)
        if not same_seal(expected, str(row["seal"])):
            return None
        return Mark(position, str(row["link"]), tuple(staff))

    def _mark_seal(self, position: int, link: str, staff: list[int]) -> str:
        text = seal_text([position, link, staff])
        return hmac.new(self._mark_secret, text.encode(), hashlib.sha256).hexdigest()

    def _mark(self) -> None:
        """Leave a mark where this directory has read to, when the log it read is whole and it
        read a staff event, or ``mark_every`` events, past the newest mark; the older ones go
        (a mark deleted costs a longer read at a start, nothing else)."""
        assert self._at is not None
        position, link = self._at
        if self.damage is not None or not self._marks_kept or position <= self._marked:
            return
        if position - self._marked < self.mark_every and (
                not self._staff or self._staff[-1] <= self._marked):
            return
        staff = list(self._staff)
        mark = {"position": position, "link": link, "staff": json.dumps(staff),
                "seal": self._mark_seal(position, link, staff)}
        try:
            run_sql(self.app.recorder, [
                ("DELETE FROM ledger_staff_marks", {}),
                ("INSERT INTO ledger_staff_marks (position, link, staff, seal)"
                 " VALUES (%(position)s, %(link)s, %(staff)s, %(seal)s)"
                 " ON CONFLICT (position) DO NOTHING", mark),
            ], commit=True)
        except PersistenceError as error:
            self._keep_no_marks(error)
            return
        self._marked = position

    def _keep_no_marks(self, error: Exception) -> None:
        self._marks_kept = False
        log.warning("the staff directory keeps no marks on this store (%s): each start reads "
                    "the whole log (ledger migrate makes the table)", error)


__all__ = ["MARKS_DDL", "MARKS_TABLE", "Person", "StaffDirectory"]
