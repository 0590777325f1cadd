"""Reading domain events the way read models need them: their own fields, as plain data."""

from __future__ import annotations

from typing import Any

# Fields every event has; the rest are the event's own.
_ENVELOPE = frozenset(
    {
        "originator_id",
        "originator_version",
        "timestamp",
        "originator_topic",
        "actor",
        "correlation_id",
    }
)


def own_fields(event: Any) -> dict[str, Any]:
    """The event's own fields (``reference``, ``order_no``, ``request_id``, ``reason`` …)."""
    return {k: v for k, v in vars(event).items() if k not in _ENVELOPE}


def snake(name: str) -> str:
    """``DepositReceived`` → ``deposit_received``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
