"""``api.context.SharedLook``: one look at the store shared by the probes that ask meanwhile."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from api.context import SharedLook


async def test_a_look_that_fails_after_every_waiter_gave_up_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a look at a store that is down, whose only waiter gives up (its deadline)
    release = asyncio.Event()

    async def down() -> dict[str, int]:
        await release.wait()
        raise ConnectionError("the store does not answer")

    look: SharedLook[dict[str, int]] = SharedLook()
    waiter = asyncio.ensure_future(look.get(down))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    # When the look fails, heard by no one
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        release.set()
        for _ in range(10):  # bounded: the look's task ends within a few turns
            await asyncio.sleep(0)
        gc.collect()

    # Then asyncio logs no "Task exception was never retrieved" (once a second while down)
    assert "never retrieved" not in caplog.text


async def test_waiters_of_one_look_hear_its_one_answer_or_failure() -> None:
    calls = 0
    release = asyncio.Event()

    async def make() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        if calls == 2:
            raise ConnectionError("down")
        return calls

    look: SharedLook[int] = SharedLook()
    first = [asyncio.ensure_future(look.get(make)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*first) == [1] * 5
    release.clear()
    second = [asyncio.ensure_future(look.get(make)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*second, return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError] * 3 and calls == 2
