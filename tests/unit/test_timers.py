"""Many timers of one delay on one timer of the loop (``ledger.timers.FixedDelayTimers``): each
fires once, no sooner than its delay, in the order set, unless cancelled; a callback may set
another or fail without stopping the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ledger.timers import FixedDelayTimers

DELAY_S = 0.05
BOUND_S = 10.0  # a timer that never fires fails the test rather than hanging it


def _run(scenario: Coroutine[object, object, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, BOUND_S))


class Fired:
    """What fired, when (the loop's time), in order; ``wait(n)`` until n have."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.times: dict[str, float] = {}
        self._changed = asyncio.Event()

    def __call__(self, key: str) -> None:
        self.keys.append(key)
        self.times[key] = asyncio.get_running_loop().time()
        self._changed.set()

    async def wait(self, count: int) -> None:
        while len(self.keys) < count:
            self._changed.clear()
            await self._changed.wait()


def test_each_timer_fires_once_no_sooner_than_its_delay_in_the_order_set_and_after() -> None:
    async def scenario() -> None:
        timers: FixedDelayTimers[str] = FixedDelayTimers(DELAY_S)
        fired, set_at = Fired(), {}
        for key in ("a", "b", "c"):
            set_at[key] = asyncio.get_running_loop().time()
            timers.set(key, fired)
        await fired.wait(3)
        assert fired.keys == ["a", "b", "c"]
        assert all(fired.times[key] >= set_at[key] + DELAY_S for key in set_at)
        assert len(timers) == 0
        timers.set("once all had fired", fired)  # the loop's timer is set again
        await fired.wait(4)
        assert len(timers) == 0

    _run(scenario())


def test_a_cancelled_timer_never_fires_and_one_set_later_still_does() -> None:
    async def scenario() -> None:
        timers: FixedDelayTimers[str] = FixedDelayTimers(DELAY_S)
        fired = Fired()
        timers.set("cancelled", fired)
        timers.cancel("cancelled")
        # Half a delay later, this one is not yet due when the loop's timer set for the first
        # goes off: it is set again for it. (It fires at its time whatever the machine's pace;
        # the pause only makes sure of the case.)
        await asyncio.sleep(DELAY_S / 2)
        set_at = asyncio.get_running_loop().time()
        timers.set("later", fired)
        await fired.wait(1)
        assert fired.keys == ["later"]
        assert fired.times["later"] >= set_at + DELAY_S
        assert len(timers) == 0

    _run(scenario())


def test_a_callback_may_set_another_timer_which_fires_a_delay_later() -> None:
    async def scenario() -> None:
        timers: FixedDelayTimers[str] = FixedDelayTimers(DELAY_S)
        fired = Fired()

        def again(key: str) -> None:
            fired(key)
            if key == "first":
                timers.set("second", fired)

        timers.set("first", again)
        await fired.wait(2)
        assert fired.keys == ["first", "second"]
        assert fired.times["second"] >= fired.times["first"] + DELAY_S

    _run(scenario())


def test_a_failing_callback_stops_no_other_timer() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: errors.append(context))
        timers: FixedDelayTimers[str] = FixedDelayTimers(DELAY_S)
        fired = Fired()

        def fail(key: str) -> None:
            raise RuntimeError(f"{key} failed")

        timers.set("failing", fail)
        timers.set("after", fired)
        await fired.wait(1)
        assert fired.keys == ["after"]
        assert [str(context["exception"]) for context in errors] == ["failing failed"]

    _run(scenario())
