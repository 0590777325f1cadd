"""What the committers' tests give them to commit: aggregates that only name their events."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4


@dataclass
class Aggregate:
    """What a committer asks of an aggregate: its id and its new events."""

    id: UUID = field(default_factory=uuid4)
    pending: list[str] = field(default_factory=list)

    def collect_events(self) -> list[Any]:
        events = [SimpleNamespace(originator_id=self.id, name=n) for n in self.pending]
        self.pending = []
        return events


def deposit(name: str, aggregate: Aggregate | None = None) -> list[Aggregate]:
    """A command's aggregates: ``aggregate`` (a new one when None) with one new event, ``name``."""
    aggregate = aggregate or Aggregate()
    aggregate.pending.append(name)
    return [aggregate]
