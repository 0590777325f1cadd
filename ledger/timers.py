"""Many timers of one fixed delay on one timer of the event loop.

A request's deadline, a commit's answer timeout: set on every request or command, almost
always cancelled long before they fire. ``loop.call_later`` (and ``asyncio.timeout``, made of
it) makes a ``TimerHandle`` each, pushes it on the loop's heap, and on cancelling leaves it
there until the loop sweeps its heap: about 3-4.5 µs of the loop each, on the loop that limits
the service's writes. With one delay for all of them, timers come due in the order they were
set: an insertion-ordered dict is their queue, and one handle, set for the first of them, fires
those due and sets itself for the next. Setting one and cancelling it cost a dict's insert and
delete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class FixedDelayTimers(Generic[K]):
    """``callback(key)`` ``delay_s`` after ``set(key, callback)``, unless ``cancel(key)``
    first; on the running event loop (one loop for the timers' life)."""

    def __init__(self, delay_s: float) -> None:
        assert delay_s > 0, "a timer lies ahead"
        self.delay_s = delay_s
        self._due: dict[K, tuple[float, Callable[[K], None]]] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._firing = False  # a callback setting a timer leaves the handle to _fire

    def set(self, key: K, callback: Callable[[K], None]) -> None:
        assert key not in self._due, "one timer at a time per key"
        loop = asyncio.get_running_loop()
        when = loop.time() + self.delay_s
        self._due[key] = (when, callback)
        if self._handle is None and not self._firing:
            self._handle = loop.call_at(when, self._fire, loop)

    def cancel(self, key: K) -> None:
        """``key``'s timer will not fire (nothing, if it has fired or was never set)."""
        self._due.pop(key, None)

    def __len__(self) -> int:
        """Timers set, not yet fired nor cancelled."""
        return len(self._due)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle, self._firing = None, True
        try:
            now = loop.time()
            for _ in range(len(self._due)):  # each round fires one timer, or stops
                key = next(iter(self._due))
                when, callback = self._due[key]
                if when > now:
                    break
                del self._due[key]
                callback(key)
        finally:  # set for the first timer left, even when a callback raised
            self._firing = False
            if self._due:
                first, _ = self._due[next(iter(self._due))]
                self._handle = loop.call_at(first, self._fire, loop)
