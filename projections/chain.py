"""Tamper evidence: every stored event bound into a hash chain, and digests kept elsewhere.

``link(previous, event)`` hashes the previous link with the event's position, aggregate id,
version, topic and stored bytes, so changing any stored byte, deleting, inserting or reordering
an event breaks every link from there on. The chain lives beside the events (``ledger_chain``,
append-only like them; ``projections.store`` creates and guards it) and is extended by whichever
process keeps the read models. A digest (a position and its link) exported and kept outside the
database catches a rewrite of events and chain together. ``first_broken_link`` re-derives the
chain from the events and names the first position where the events, the stored chain or a
digest disagree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from eventsourcing.persistence import Notification, Recorder

from projections.store import run_sql

GENESIS = "0" * 64
BATCH = 1000


def link(previous: str, notification: Notification) -> str:
    digest = hashlib.sha256()
    for part in (
        previous.encode(),
        str(notification.id).encode(),
        str(notification.originator_id).encode(),
        str(notification.originator_version).encode(),
        notification.topic.encode(),
        _raw(notification.state),
    ):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no ambiguous joins
        digest.update(part)
    return digest.hexdigest()


def _raw(state: object) -> bytes:
    # A column changed behind the service's back may come back as another type: hash what is
    # there rather than fail, so the verifier names the position.
    return state if isinstance(state, bytes) else str(state).encode()


@dataclass(frozen=True)
class Digest:
    position: int
    hash: str

    def to_json(self) -> str:
        return json.dumps({"position": self.position, "hash": self.hash})


def read_digests(path: Path) -> list[Digest]:
    digests = []
    for line in path.read_text().splitlines():
        if line.strip():
            data = json.loads(line)
            digests.append(Digest(int(data["position"]), str(data["hash"])))
    return digests


class Chain:
    """The stored chain of one event store."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def head(self) -> Digest:
        rows = run_sql(
            self.recorder,
            [("SELECT position, hash FROM ledger_chain ORDER BY position DESC LIMIT 1", {})],
            commit=False,
        )
        return Digest(0, GENESIS) if not rows else Digest(int(rows[0]["position"]), rows[0]["hash"])

    def extend(self, batch_size: int = BATCH) -> int:
        """Link the next batch of events; answers how many were linked."""
        head = self.head()
        notifications = self.recorder.select_notifications(  # type: ignore[attr-defined]
            head.position, batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0
        previous, statements = head.hash, []
        for notification in notifications:
            previous = link(previous, notification)
            statements.append(
                (
                    "INSERT INTO ledger_chain (position, hash) VALUES (%(p)s, %(h)s)",
                    {"p": notification.id, "h": previous},
                )
            )
        run_sql(self.recorder, statements, commit=True)
        return len(notifications)

    def links(self, batch_size: int = BATCH) -> Iterator[Digest]:
        after = 0
        while True:
            rows = run_sql(
                self.recorder,
                [
                    (
                        "SELECT position, hash FROM ledger_chain WHERE position > %(after)s"
                        " ORDER BY position LIMIT %(limit)s",
                        {"after": after, "limit": batch_size},
                    )
                ],
                commit=False,
            )
            for row in rows:
                yield Digest(int(row["position"]), row["hash"])
            if len(rows) < batch_size:
                return
            after = int(rows[-1]["position"])


def all_notifications(recorder: Recorder, batch_size: int = BATCH) -> Iterator[Notification]:
    """Every stored event in log order, read a batch at a time."""
    after = 0
    while True:
        batch = recorder.select_notifications(  # type: ignore[attr-defined]
            after, batch_size, inclusive_of_start=False
        )
        yield from batch
        if len(batch) < batch_size:
            return
        after = batch[-1].id


@dataclass(frozen=True)
class ChainCheck:
    events_checked: int
    first_bad_position: int | None
    unlinked_tail: int  # events after the chain's head, not linked yet

    @property
    def ok(self) -> bool:
        return self.first_bad_position is None


def first_broken_link(
    notifications: Iterable[Notification], links: Iterable[Digest], digests: Iterable[Digest] = ()
) -> ChainCheck:
    """Re-derive the chain from the events and compare it with the stored links and digests."""
    # The digest of an empty chain (position 0, the genesis link) holds for any log.
    expected = {d.position: d.hash for d in digests if (d.position, d.hash) != (0, GENESIS)}
    stored = iter(links)
    previous, checked, tail, bad = GENESIS, 0, 0, None
    pending = next(stored, None)
    for notification in notifications:
        previous = link(previous, notification)
        checked += 1
        if notification.id in expected and expected.pop(notification.id) != previous:
            bad = notification.id
            break
        if pending is None:
            tail += 1
            continue
        if pending.position != notification.id or pending.hash != previous:
            bad = min(pending.position, notification.id)
            break
        pending = next(stored, None)
    if bad is None and pending is not None:
        bad = pending.position  # linked events that are gone
    if bad is None and expected:
        bad = min(expected)  # a digest names a position no longer in the log
    return ChainCheck(checked, bad, tail)


__all__ = [
    "Chain",
    "ChainCheck",
    "Digest",
    "all_notifications",
    "first_broken_link",
    "link",
    "read_digests",
]
