"""The kept pages of the event log: gzipped, bounded by bytes, and still useful to auditors who
read a log longer than the cache from its start, round and round."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import make_mocked_request

from api import parsing
from api.sealed_pages import SealedPages, pack, unpack


def page(n: int) -> bytes:
    return json.dumps({"items": [{"position": n * 10 + i, "type": "DepositReceived"}
                                 for i in range(10)], "next": str(n * 10 + 9)}).encode()


def test_a_page_is_kept_gzipped_and_comes_back_as_it_was() -> None:
    body = json.dumps({"items": [{"position": i, "type": "DepositReceived"}
                                 for i in range(1000)], "next": "999"}).encode()
    packed = pack(body)
    assert packed[:2] == b"\x1f\x8b"  # the gzip format, as sent with Content-Encoding: gzip
    assert len(packed) < len(body) / 3
    assert unpack(packed) == body


def test_a_log_longer_than_the_cache_read_in_a_circle_still_finds_most_pages_kept() -> None:
    pages = {n: pack(page(n)) for n in range(15)}
    biggest = max(len(p) for p in pages.values())
    kept = SealedPages(max_bytes=10 * biggest)  # room for ten of the fifteen pages at least
    for _round in range(2):  # the first rounds make what they do not find
        for n, packed in pages.items():
            if kept.get((str(n), 10)) is None:
                kept.keep((str(n), 10), packed)
    before = kept.hits
    for n, packed in pages.items():
        if kept.get((str(n), 10)) is None:
            kept.keep((str(n), 10), packed)
    assert kept.hits - before >= 9  # a least-recently-used cache would find none
    assert kept.size_bytes <= 10 * biggest


def test_a_page_bigger_than_the_whole_cache_is_not_kept() -> None:
    kept = SealedPages(max_bytes=10)
    kept.keep(("0", 10), pack(page(0)))
    assert len(kept) == 0 and kept.get(("0", 10)) is None


@pytest.mark.parametrize(("header", "takes"), [
    (None, False),
    ("gzip", True),
    ("deflate, gzip;q=0.5", True),
    ("GZIP", True),
    ("x-gzip", True),
    ("*", True),
    ("gzip;q=0", False),
    ("gzip;q=0, *", False),
    ("*;q=0", False),
    ("identity", False),
    ("br, deflate", False),
    ("gzip;q=nonsense", False),
    ("", False),
])
def test_gzip_is_sent_only_to_a_client_that_lists_it(header: str | None, takes: bool) -> None:
    headers = {} if header is None else {"Accept-Encoding": header}
    assert parsing.accepts_gzip(make_mocked_request("GET", "/v1/events", headers=headers)) is takes
