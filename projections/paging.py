"""Pages of query results: a bounded size, an opaque cursor, and where the next page starts.

A cursor is the log position (or ``seq``) of the last row shown, as ASCII digits; a page holds
at most ``MAX_PAGE`` rows and says whether there is a next one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.errors import InvalidInput

MAX_PAGE = 1000
MAX_POSITION = 2**63 - 1
_CURSOR = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class Query:
    """A read model's SELECT (named ``%(x)s`` parameters) and what its rows answer: asked on
    the executor through a view (``on``), or in the event loop (``projections.current``)."""

    sql: str
    params: dict[str, Any]
    shape: Callable[[list[dict[str, Any]]], Any]
    # Its rows are a function of the log alone (rows that only events change, asked by
    # hashable parameters): a process may keep them, and answer them again while the log has
    # not moved (``projections.current``).
    keepable: bool = False

    def on(self, view: Any) -> Any:
        return self.shape(view.query(self.sql, self.params))


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    next: str | None


def page_size(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit is 1 to {MAX_PAGE}", field="limit")
    return limit


def cursor(after: str | None) -> int:
    """Cursors are the log position of the row's first event (opaque to clients)."""
    if after is None:
        return 0
    # ASCII digits only (str.isdigit also takes superscripts and other scripts' digits),
    # and at most 18 of them, so it fits a BIGINT.
    if not _CURSOR.fullmatch(after):
        raise InvalidInput("after is a cursor from a previous page's next", field="after")
    return int(after)


def paged(rows: list[dict[str, Any]], limit: int, *, key: str) -> Page:
    items = rows[:limit]
    more = len(rows) > limit
    next_cursor = str(items[-1][key]) if more and items else None
    if key == "seq":
        for item in items:
            item.pop("seq", None)
    return Page(items, next_cursor)
