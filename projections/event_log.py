"""The global log, kept to one stream, one kind of event, or a time range.

``/v1/events`` pages the log straight from the event store (``ReadModels.events``). A filtered
page reads it the same way, a page of ``SCAN_PAGE`` events at a time, and keeps the events
that match, until it has ``limit`` of them or has read ``MAX_SCANNED`` events: a filter that
matches rarely answers a short (even empty) page whose ``next`` says where to read on, rather
than reading the whole log in one request. Events are named as history and the journal name
them (``purchase_paid``), beside their topic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from projections.events import snake
from projections.paging import MAX_PAGE, Page

SCAN_PAGE = MAX_PAGE
MAX_SCANNED = 10 * SCAN_PAGE


@functools.lru_cache(maxsize=256)  # a few dozen topics, named for every event of every page
def event_name(topic: str) -> str:
    """``ledger:Account.PurchasePaid`` → ``purchase_paid`` (the name history and the journal
    use)."""
    return snake(topic.rsplit(".", 1)[-1].rsplit(":", 1)[-1])


@functools.lru_cache(maxsize=256)
def aggregate_name(topic: str) -> str:
    """``ledger:Account.PurchasePaid`` → ``account``; ``ledger:RefundRequest.…`` →
    ``refund_request``."""
    head = topic.split(":", 1)[-1]
    return snake(head.split(".", 1)[0])


def named(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "name": event_name(item["type"]), "aggregate": aggregate_name(item["type"])}


@dataclass(frozen=True)
class LogFilter:
    stream: str | None = None  # an aggregate's id, as text
    name: str | None = None  # purchase_paid, or a topic
    since: str | None = None  # RFC 3339 text as the log answers it, included
    until: str | None = None  # excluded

    def keeps(self, item: dict[str, Any]) -> bool:
        if self.stream is not None and item["stream"] != self.stream:
            return False
        if self.name is not None and self.name not in (item["type"], event_name(item["type"])):
            return False
        if self.since is not None and item["at"] < self.since:
            return False
        return not (self.until is not None and item["at"] >= self.until)


def filtered(
    events: Callable[..., Any], log_filter: LogFilter, *, limit: int, after: str | None
) -> Page:
    """A page of the events ``log_filter`` keeps, read with ``events(limit=, after=)`` (the
    read side's unfiltered pages) at most ``MAX_SCANNED`` events deep."""
    kept: list[dict[str, Any]] = []
    cursor, scanned = after, 0
    while scanned < MAX_SCANNED:
        page = events(limit=SCAN_PAGE, after=cursor)
        for item in page.items:
            scanned += 1
            cursor = str(item["position"])
            if log_filter.keeps(item):
                kept.append(named(item))
                if len(kept) == limit:
                    # more may follow, unless this was the log's last event
                    last = item is page.items[-1] and page.next is None
                    return Page(kept, None if last else cursor)
        if page.next is None:
            return Page(kept, None)
    return Page(kept, cursor)
