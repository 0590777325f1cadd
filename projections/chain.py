"""Tamper evidence: the chain of seals over every stored event, checked end to end, and digests
kept elsewhere.

The writer seals each event as it records it (``projections.seal``, ``projections.store``);
nothing else ever links an event. ``check_chain`` walks the events and the stored links side by
side and names every damaged position and what is wrong there:

- ``unsealed``: an event with no link (inserted behind the service's back);
- ``content``: an event whose link is not the key's seal of it (its bytes, its position or its
  link changed);
- ``order``: a link that does not follow the one before it (events removed or moved before it);
- ``missing``: a link whose event is gone (deleted behind the service's back);
- ``text``: an event or its link whose text is no UTF-8 (SQLite keeps whatever is written; the
  writer never writes such bytes);
- ``digest``: a digest kept outside the database that the chain no longer holds.

A digest (a position and its link) exported and kept outside the database still catches a
rewrite of events and chain together by someone who holds the key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventsourcing.persistence import Notification, Recorder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder

from projections.seal import GENESIS, ChainKey, Sealed, WrittenHere
from projections.store import (
    SQLITE_EVENT_COLUMNS,
    UndecodedNotification,
    count_events,
    events_table,
    qualified_events_table,
    run_sql,
    sqlite_notification,
    text_of,
)

BATCH = 1000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Digest:
    position: int
    hash: str

    def to_json(self) -> str:
        return json.dumps({"position": self.position, "hash": self.hash})


@dataclass(frozen=True)
class Link:
    position: int
    previous: str
    hash: str
    undecoded: tuple[str, ...] = ()  # its columns whose bytes are no UTF-8 (``_link``)


@dataclass(frozen=True)
class Damage:
    position: int
    what: str  # unsealed, content, order, missing, text, digest, checkpoint, leaf

    def describe(self) -> str:
        return f"position {self.position}: {_WHAT[self.what]}"


_WHAT = {
    "unsealed": "an event with no seal (written behind the service's back)",
    "content": "the seal does not match the event (the event or its seal was changed)",
    "order": "the seal does not follow the one before it (events removed or moved)",
    "missing": "a sealed event is gone",
    "text": "the row is not valid text (bytes that are no UTF-8, an id spelled or a state "
            "typed otherwise than the writer writes it: written behind the service's back)",
    "digest": "a digest kept outside the database does not match the chain",
    "checkpoint": "a signed checkpoint does not match the log up to here",
    "leaf": "the stored leaf hash does not match the event",
}


def read_digests(path: Path) -> list[Digest]:
    digests = []
    for line in path.read_text().splitlines():
        if line.strip():
            data = json.loads(line)
            digests.append(Digest(int(data["position"]), str(data["hash"])))
    return digests


def _max_position(recorder: Recorder) -> str:
    """A subquery: the log's last position."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        return f"SELECT max(rowid) FROM {events_table(recorder)}"  # noqa: S608
    assert isinstance(recorder, PostgresApplicationRecorder)
    return f"SELECT max(notification_id) FROM {qualified_events_table(recorder).as_string(None)}"  # noqa: S608


def _link_columns(recorder: Recorder) -> str:
    """The select list of a link's columns. On SQLite its text is read as bytes: a TEXT value
    that is no UTF-8 fails the whole read (``projections.store.SQLITE_EVENT_COLUMNS``)."""
    if isinstance(recorder, SQLiteApplicationRecorder):
        return "position, CAST(previous AS BLOB) AS previous, CAST(hash AS BLOB) AS hash"
    return "position, previous, hash"


def _link(row: dict[str, Any]) -> Link:
    previous, previous_decodes = text_of(row["previous"])
    link, link_decodes = text_of(row["hash"])
    undecoded = tuple(column for column, decodes in (("previous", previous_decodes),
                                                     ("hash", link_decodes)) if not decodes)
    return Link(int(row["position"]), previous, link, undecoded)


class Chain:
    """The stored chain of one event store."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._columns = _link_columns(recorder)

    def head(self) -> Digest:
        """The last link at or before the log's last event (a chain row past it is no event's:
        not served)."""
        rows = run_sql(
            self.recorder,
            [(f"SELECT {self._columns} FROM ledger_chain WHERE position <="  # noqa: S608
              f" ({_max_position(self.recorder)}) ORDER BY position DESC LIMIT 1", {})],
            commit=False,
        )
        return Digest(0, GENESIS) if not rows else Digest(int(rows[0]["position"]),
                                                          _link(rows[0]).hash)

    def links(
        self, after: int = 0, upto: int | None = None, batch_size: int = BATCH
    ) -> Iterator[Link]:
        """The stored links after position ``after`` (up to ``upto``), in position order."""
        while True:
            rows = run_sql(
                self.recorder,
                [(
                    f"SELECT {self._columns} FROM ledger_chain"  # noqa: S608
                    " WHERE position > %(after)s AND position <= %(upto)s"
                    " ORDER BY position LIMIT %(limit)s",
                    {"after": after, "upto": 2**63 - 1 if upto is None else upto,
                     "limit": batch_size},
                )],
                commit=False,
            )
            for row in rows:
                yield _link(row)
            if len(rows) < batch_size:
                return
            after = int(rows[-1]["position"])

    def links_at(self, positions: Iterable[int]) -> dict[int, Link]:
        """The stored links at these positions (at most ``BATCH`` of them), by position; a
        position with none is absent."""
        wanted = sorted(set(positions))
        assert len(wanted) <= BATCH, "links_at reads one batch"
        if not wanted:
            return {}
        marks = ", ".join(f"%(p{n})s" for n in range(len(wanted)))
        rows = run_sql(
            self.recorder,
            [(
                f"SELECT {self._columns} FROM ledger_chain WHERE position IN ({marks})",  # noqa: S608
                {f"p{n}": position for n, position in enumerate(wanted)},
            )],
            commit=False,
        )
        return {int(row["position"]): _link(row) for row in rows}

    def link_at(self, position: int) -> str:
        """The link at ``position`` (the genesis link at 0); KeyError if there is none."""
        if position == 0:
            return GENESIS
        rows = run_sql(
            self.recorder,
            [(f"SELECT {self._columns} FROM ledger_chain WHERE position = %(p)s",  # noqa: S608
              {"p": position})],
            commit=False,
        )
        if not rows:
            raise KeyError(position)
        return str(_link(rows[0]).hash)

    def first_gap(self, after: int, upto: int) -> int | None:
        """The first position after ``after``, up to ``upto``, with no stored event; None when
        none is missing. The writer leaves no gap (``projections.store``): one is an event
        deleted behind the service's back, and when its link went with it, no seal of the
        events that remain tells. Counted, not read: the whole log costs an index scan, and a
        gap is then found by halving the range."""
        assert 0 <= after <= upto
        if count_events(self.recorder, after, upto) == upto - after:
            return None
        low, high = after, upto  # none missing up to ``low``; one missing up to ``high``
        for _ in range(64):  # positions are below 2**63: halving ends well before
            if high - low == 1:
                return high
            middle = (low + high) // 2
            if count_events(self.recorder, low, middle) == middle - low:
                low = middle
            else:
                high = middle
        raise AssertionError("halving a range of positions did not end")


def events_at(recorder: Recorder, positions: Iterable[int]) -> dict[int, Notification]:
    """The stored events at these positions (at most ``BATCH`` of them), by position; a position
    with none is absent."""
    wanted = sorted(set(positions))
    assert len(wanted) <= BATCH, "events_at reads one batch"
    if not wanted:
        return {}
    marks = ", ".join(f"%(p{n})s" for n in range(len(wanted)))
    params = {f"p{n}": position for n, position in enumerate(wanted)}
    if isinstance(recorder, SQLiteApplicationRecorder):
        rows = run_sql(recorder, [(
            f"SELECT {SQLITE_EVENT_COLUMNS} FROM {events_table(recorder)}"  # noqa: S608
            f" WHERE rowid IN ({marks})", params,
        )], commit=False)
        return {int(row["position"]): sqlite_notification(recorder, row) for row in rows}
    assert isinstance(recorder, PostgresApplicationRecorder)
    rows = run_sql(recorder, [(
        "SELECT notification_id AS position, originator_id, originator_version, topic, state"  # noqa: S608
        f" FROM {qualified_events_table(recorder).as_string(None)}"
        f" WHERE notification_id IN ({marks})", params,
    )], commit=False)
    return {int(row["position"]): Notification(
        id=int(row["position"]), originator_id=row["originator_id"],
        originator_version=row["originator_version"], topic=row["topic"],
        state=bytes(row["state"]),
    ) for row in rows}


def below_the_log(recorder: Recorder, limit: int = BATCH) -> list[Notification]:
    """The stored events at position 0 or below (at most ``limit``), in position order. The
    writer places every event after position 0, so each of these was written behind the
    service's back, and no seal of the writer's covers it: every reader of the log starts after
    position 0 and never sees it, but loading its aggregate does (``HistoryDamaged``)."""
    return list(recorder.select_notifications(None, limit, stop=0))  # type: ignore[attr-defined]


def all_notifications(recorder: Recorder, batch_size: int = BATCH) -> Iterator[Notification]:
    """Every stored event in log order, read a batch at a time (the log: positions after 0;
    ``below_the_log`` reads the others)."""
    after = 0
    while True:
        batch = recorder.select_notifications(  # type: ignore[attr-defined]
            after, batch_size, inclusive_of_start=False
        )
        yield from batch
        if len(batch) < batch_size:
            return
        after = batch[-1].id


@dataclass
class ChainCheck:
    events_checked: int = 0
    damage: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damage

    @property
    def first_bad_position(self) -> int | None:
        return min((d.position for d in self.damage), default=None)


def seal_damage(
    key: ChainKey, previous: str, notification: Notification, link: Link | None
) -> str | None:
    """What is wrong with one event's seal, given the link before it; None when it holds."""
    if isinstance(notification, UndecodedNotification) or (link is not None and link.undecoded):
        return "text"  # first: no seal of the writer's covers bytes it never writes
    if link is None:
        return "unsealed"
    if not key.holds(
        link.hash, link.previous, notification.id, notification.originator_id,
        notification.originator_version, notification.topic, notification.state,
    ):
        return "content"
    if link.previous != previous:
        return "order"
    return None


def check_chain(
    key: ChainKey,
    notifications: Iterable[Notification],
    links: Iterable[Link],
    digests: Iterable[Digest] = (),
    *,
    max_damage: int = 1000,
) -> ChainCheck:
    """Walk the events and the stored links side by side; name every damaged position (at most
    ``max_damage`` of them: past that, the store is beyond a list)."""
    # The digest of an empty chain (position 0, the genesis link) holds for any log.
    expected = {d.position: d.hash for d in digests if (d.position, d.hash) != (0, GENESIS)}
    check = ChainCheck()
    stored = iter(links)
    pending = next(stored, None)
    previous = GENESIS

    def damaged(position: int, what: str) -> None:
        if len(check.damage) < max_damage:
            check.damage.append(Damage(position, what))

    def gone_until(position: int | None) -> None:
        # Links before ``position`` whose events are gone.
        nonlocal pending, previous
        while pending is not None and (position is None or pending.position < position):
            damaged(pending.position, "missing")
            _check_digest(pending)
            previous = pending.hash
            pending = next(stored, None)

    def _check_digest(link: Link) -> None:
        if link.position in expected and expected.pop(link.position) != link.hash:
            damaged(link.position, "digest")

    for notification in notifications:
        check.events_checked += 1
        gone_until(notification.id)
        link = pending if pending is not None and pending.position == notification.id else None
        what = seal_damage(key, previous, notification, link)
        if what is not None:
            damaged(notification.id, what)
        if link is not None:
            _check_digest(link)
            previous = link.hash  # go on from the stored link: one damage does not cascade
            pending = next(stored, None)
    gone_until(None)
    for position in sorted(expected):  # digests naming positions the chain no longer has
        damaged(position, "digest")
    check.damage.sort(key=lambda d: d.position)
    return check


def as_written(sealed: Sealed | None, previous: str, notification: Notification,
               link: Link | None) -> bool:
    """Whether the event and its stored link are exactly what this process sealed
    (``sealed``, from ``WrittenHere``), after ``previous``: then ``seal_damage`` would find
    nothing (the same key over the same bytes), and need not be asked. Any difference: False,
    and the full check names it."""
    return (sealed is not None and link is not None
            and sealed.previous == previous == link.previous
            and sealed.link == link.hash
            and sealed.version == notification.originator_version
            and sealed.topic == notification.topic
            and sealed.state == notification.state
            and sealed.originator_id == notification.originator_id)


class SealWatch:
    """Follows the log as a reader of it goes (the read-model keeper): admits events only while
    each one's seal holds and follows the one before, and stops at the first that does not.

    ``damage`` then names it, until an operator repairs the store; the reader applies nothing
    from there on, so no read model ever shows an event the writer did not seal."""

    def __init__(self, recorder: Recorder, key: ChainKey, *, quiet: bool = False,
                 written: WrittenHere | None = None) -> None:
        self.chain = Chain(recorder)
        self.key = key
        self.quiet = quiet  # no ERROR line: a request's watch (the keeper's already says it)
        # What this process's writer sealed (the notary's watch, in the writing process): an
        # event read back exactly as written, with the links written, needs no second HMAC.
        self.written = written
        self.damage: Damage | None = None
        self._at: tuple[int, str] | None = None  # the last admitted position and its link

    def admit(self, after: int, notifications: list[Notification]) -> list[Notification]:
        """The prefix of ``notifications`` (the events after position ``after``, in order) whose
        seals hold."""
        if not notifications:
            return []
        if self._at is None or self._at[0] != after:
            try:
                self._at = (after, self.chain.link_at(after))
            except KeyError:
                self._stop(Damage(after, "missing"))
                return []
        _, previous = self._at
        stored = iter(self.chain.links(after, notifications[-1].id))
        pending = next(stored, None)
        admitted: list[Notification] = []
        for notification in notifications:
            if pending is not None and pending.position < notification.id:
                self._stop(Damage(pending.position, "missing"))  # a sealed event is gone
                break
            link = pending if pending is not None and pending.position == notification.id else None
            if not self._as_written(previous, notification, link):
                what = seal_damage(self.key, previous, notification, link)
                if what is not None:
                    self._stop(Damage(notification.id, what))
                    break
            assert link is not None
            admitted.append(notification)
            previous = link.hash
            pending = next(stored, None)
        if admitted:
            self._at = (admitted[-1].id, previous)
        if len(admitted) == len(notifications):
            self.damage = None
        return admitted

    def _as_written(self, previous: str, notification: Notification, link: Link | None) -> bool:
        if self.written is None or link is None:
            return False
        return as_written(self.written.take(notification.id), previous, notification, link)

    def _stop(self, damage: Damage) -> None:
        if self.damage != damage and not self.quiet:
            log.error("history damaged at %s; read models stop before it", damage.describe())
        self.damage = damage


def look_after(
    recorder: Recorder, key: ChainKey, position: int, window: int = 64
) -> tuple[Damage | None, Notification | None]:
    """The first damaged position among the (at most ``window``) events after ``position``:
    what stops a reader of the log there, checked by any process; and the first event after
    ``position`` when its seal holds (None when there is none, or it is the damage): the oldest
    event a reader stopped there has not read, whose stored time can be trusted."""
    notifications = list(recorder.select_notifications(  # type: ignore[attr-defined]
        position, window, inclusive_of_start=False
    ))
    watch = SealWatch(recorder, key)
    admitted = watch.admit(position, notifications)
    if watch.damage is None and not notifications:
        # nothing after it: a link with no event (the last ones deleted) is damage too
        gone = next(iter(Chain(recorder).links(position, None, batch_size=1)), None)
        if gone is not None:
            return Damage(gone.position, "missing"), None
    return watch.damage, (admitted[0] if admitted else None)


__all__ = [
    "Chain",
    "ChainCheck",
    "Damage",
    "Digest",
    "Link",
    "SealWatch",
    "all_notifications",
    "below_the_log",
    "check_chain",
    "events_at",
    "look_after",
    "read_digests",
    "seal_damage",
]
