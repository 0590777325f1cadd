"""Full pages of the event log, kept as answered: history does not change once sealed.

Auditors page ``/v1/events`` from the start, again and again, and each page of 1,000 events
costs the process tens of milliseconds of decoding and encoding (the heavy lane's work, which
slows every other thread of the process). A page that is full (it has a ``next``) and whose
every event the notary has placed in its tree (``leaf_index`` set, or no notary at all) can
never change: the writer seals each event as it records it and the log only grows. Such a page
is kept as the bytes it was answered with and answered again without the store.
A page is looked up here when its request's turn in the heavy lane comes (the lane's line and
pace hold for it as for any page), and kept before the slot of the request that made it is
freed: requests in line behind that one find it kept, rather than each making it again.

Bounded by bytes (``MAX_BYTES``, least recently used first out: ``cachetools.LRUCache``).
Once the notary finds the history damaged, nothing is answered from here: the pages then come
from the store, read anew, and end before the first event whose seal does not hold
(``ReadModels.events``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from cachetools import LRUCache

from api.keys import EVENT_PAGES, NOTARY

MAX_BYTES = 32 * 1024 * 1024
Key = tuple[str | None, int]  # (after, limit)


class SealedPages:
    """Answers of unfiltered ``/v1/events`` pages that can no longer change, by (after,
    limit). Used from the event loop only."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        assert max_bytes > 0
        self._pages: LRUCache[Key, bytes] = LRUCache(maxsize=max_bytes, getsizeof=len)
        self.hits = 0

    def get(self, key: Key) -> bytes | None:
        body = self._pages.get(key)
        if body is not None:
            self.hits += 1
        return body

    def keep(self, key: Key, body: bytes) -> None:
        if len(body) <= self._pages.maxsize:
            self._pages[key] = body

    def clear(self) -> None:
        self._pages.clear()

    @property
    def size_bytes(self) -> int:
        return int(self._pages.currsize)

    def __len__(self) -> int:
        return len(self._pages)


def install(app: web.Application, max_bytes: int = MAX_BYTES) -> None:
    app[EVENT_PAGES] = SealedPages(max_bytes)


def _trusted(app: web.Application) -> bool:
    notary = app.get(NOTARY)
    return notary is None or notary.damage is None


def answer(app: web.Application, key: Key) -> bytes | None:
    """The page's kept answer, if it has one and the history is not known to be damaged."""
    pages = app[EVENT_PAGES]
    if not _trusted(app):
        pages.clear()
        return None
    return pages.get(key)


def sealed(app: web.Application, page: dict[str, Any]) -> bool:
    """Whether an answered page can never change: full, and each event in the notary's tree
    (or no notary keeps one)."""
    if page["next"] is None or not _trusted(app):
        return False
    return app.get(NOTARY) is None or all(i["leaf_index"] is not None for i in page["items"])


def remember(app: web.Application, key: Key, page: dict[str, Any], body: bytes) -> None:
    if sealed(app, page):
        app[EVENT_PAGES].keep(key, body)
