"""Full pages of the event log, kept as answered: history does not change once sealed.

Auditors page ``/v1/events`` from the start, again and again, and each page of 1,000 events
costs about 45 ms of decoding and encoding (``api.log_pages``: a child process's on
PostgreSQL, the heavy lane's thread's on SQLite). A page that is full (it has a ``next``) and
whose every event the notary has placed in its tree (``leaf_index`` set, or no notary at all)
can never change: the writer seals each event as it records it and the log only grows. Such a
page is kept (the bytes it was answered with, gzipped) and answered again without the store.
A page is looked up here when its request's turn in the heavy lane comes (the lane's line and
pace hold for it as for any page), and kept before the slot of the request that made it is
freed: requests in line behind that one find it kept, rather than each making it again.

Kept gzipped (level 1, by the worker that made the page: about a third of its size, in a few
milliseconds): a client that accepts gzip is sent those bytes as they are, any other the page
unzipped (about a millisecond). Bounded by bytes (``MAX_BYTES``), the least often answered
page first out (``cachetools.LFUCache``): auditors read the log from its start, round and
round, and a history longer than the cache, read in a circle, would find nothing kept in a
cache that drops the least recently used page first (each page is dropped just before it is
asked for again); here the pages read most stay, and the rest are made as before.
Once the notary finds the history damaged, nothing is answered from here: the pages then come
from the store, read anew, and end before the first event whose seal does not hold
(``ReadModels.events``).
"""

from __future__ import annotations

import zlib

from aiohttp import web
from cachetools import LFUCache

from api.keys import EVENT_PAGES, NOTARY

MAX_BYTES = 32 * 1024 * 1024
LEVEL = 1  # zlib's fastest: most of the size saved, a fifth of the default's time
GZIP = 31  # zlib's window bits for the gzip format (RFC 1952)
Key = tuple[str | None, int]  # (after, limit)


class SealedPages:
    """Answers of unfiltered ``/v1/events`` pages that can no longer change, gzipped, by
    (after, limit). Used from the event loop only."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        assert max_bytes > 0
        self._pages: LFUCache[Key, bytes] = LFUCache(maxsize=max_bytes, getsizeof=len)
        self.hits = 0

    def get(self, key: Key) -> bytes | None:
        packed = self._pages.get(key)
        if packed is not None:
            self.hits += 1
        return packed

    def keep(self, key: Key, packed: bytes) -> None:
        if len(packed) <= self._pages.maxsize:
            self._pages[key] = packed

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
    """The page's kept answer (gzipped), if it has one and the history is not known to be
    damaged."""
    pages = app[EVENT_PAGES]
    if not _trusted(app):
        pages.clear()
        return None
    return pages.get(key)


def pack(body: bytes) -> bytes:
    return zlib.compress(body, LEVEL, wbits=GZIP)


def unpack(packed: bytes) -> bytes:
    return zlib.decompress(packed, wbits=GZIP)


def remember(app: web.Application, key: Key, packed: bytes) -> None:
    """Keep a page that can never change (``api.log_pages.made``), as ``pack`` made it."""
    if _trusted(app):
        app[EVENT_PAGES].keep(key, packed)
