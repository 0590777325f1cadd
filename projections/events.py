"""Reading domain events the way read models need them: their own fields, as plain data, and
the texts of their names, times and data as the read models store them.

The projections call these once or more for every event they apply, so each is cheap: names
and times are remembered, and the JSON encoder is made once.
"""

from __future__ import annotations

import functools
import json
import json.encoder
from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.clock import rfc3339
from ledger.idempotency import KEY_MARK

# Fields every event has; the rest are the event's own.
_ENVELOPE = frozenset(
    {
        "originator_id",
        "originator_version",
        "timestamp",
        "originator_topic",
        "actor",
        "correlation_id",
        KEY_MARK,  # the idempotency key it was recorded under (``ledger.idempotency``)
    }
)


def own_fields(event: Any) -> dict[str, Any]:
    """The event's own fields (``reference``, ``order_no``, ``request_id``, ``reason`` …)."""
    return {k: v for k, v in vars(event).items() if k not in _ENVELOPE}


@functools.cache
def snake(name: str) -> str:
    """``DepositReceived`` → ``deposit_received``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


@functools.lru_cache(maxsize=1024)  # the same event's time is asked for by several read models
def moment_text(moment: datetime) -> str:
    """``rfc3339``, remembered for the latest moments."""
    return rfc3339(moment)


@functools.lru_cache(maxsize=4096)  # an aggregate's id comes back with each of its events
def uuid_text(value: UUID) -> str:
    return str(value)


def json_text(data: Any) -> str:
    """Data as stored in read models: JSON with sorted keys, as json.dumps(data,
    sort_keys=True) writes it."""
    return _encode_json(data)


def json_encoder(*, sort_keys: bool, separators: tuple[str, str]) -> Callable[[Any], str]:
    """``json.JSONEncoder(sort_keys=..., separators=...).encode``, the same text at about half
    its cost: ``json.dumps`` makes a new encoder for every call, and ``JSONEncoder.encode`` a new
    C encoder; this makes one C encoder once (no circular check: what is encoded is a tree)."""
    item_separator, key_separator = separators
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # a Python without the C accelerator: the plain way
        return json.JSONEncoder(sort_keys=sort_keys, separators=separators).encode
    encoder = c_make_encoder(
        None, _unencodable, json.encoder.encode_basestring_ascii, None, key_separator,
        item_separator, sort_keys, False, True,
    )  # markers, default, encode string, indent, separators, sort_keys, skipkeys, allow_nan

    def encode(data: Any) -> str:
        return "".join(encoder(data, 0))

    return encode


def _unencodable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encode_json = json_encoder(sort_keys=True, separators=(", ", ": "))
