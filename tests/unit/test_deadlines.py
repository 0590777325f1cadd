"""The requests' deadlines on one timer (``api.limits.Deadlines``): a request still running at
its deadline is cancelled then, and only then; one that ended leaves nothing behind; the
middleware answers the deadline's cancellation and lets anyone else's through."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from api.keys import DEADLINES
from api.limits import Deadlines, deadline_middleware
from api.problems import DeadlineExceeded

DELAY_S = 0.05
BOUND_S = 10.0  # a deadline never passed fails the test rather than hanging it


def _run(scenario: Coroutine[object, object, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, BOUND_S))


async def _until_cancelled() -> float:
    """Waits for ever; when cancelled, the loop's time then (as the result)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        return asyncio.get_running_loop().time()
    raise AssertionError("an event no one sets was set")


async def _watched(deadlines: Deadlines) -> tuple[float, float, bool]:
    """A task under a deadline that waits until cancelled: (its start, its cancellation,
    whether ``end`` said the deadline had passed)."""
    task = asyncio.current_task()
    assert task is not None
    began = asyncio.get_running_loop().time()
    deadlines.start(task)
    cancelled_at = await _until_cancelled()
    return began, cancelled_at, deadlines.end(task)


def test_a_request_still_running_at_its_deadline_is_cancelled_then_and_not_before() -> None:
    async def scenario() -> None:
        deadlines = Deadlines(DELAY_S)
        began, cancelled_at, passed = await asyncio.create_task(_watched(deadlines))
        assert cancelled_at >= began + DELAY_S
        assert passed
        assert deadlines.pending() == 0

    _run(scenario())


def test_requests_that_end_in_time_leave_nothing_and_later_ones_still_meet_theirs() -> None:
    async def quick(deadlines: Deadlines) -> bool:
        task = asyncio.current_task()
        assert task is not None
        deadlines.start(task)
        await asyncio.sleep(0)
        return deadlines.end(task)

    async def scenario() -> None:
        deadlines = Deadlines(DELAY_S)
        for _ in range(3):
            assert not await asyncio.create_task(quick(deadlines))  # never cancelled
        assert deadlines.pending() == 0
        # Begun half a delay later, this one's deadline is not yet due when the timer set for
        # the first of them goes off: the timer is set again for it. (Whatever the machine's
        # pace, it is cancelled at its deadline; the pause only makes sure of the case.)
        await asyncio.sleep(DELAY_S / 2)
        began, cancelled_at, passed = await asyncio.create_task(_watched(deadlines))
        assert cancelled_at >= began + DELAY_S and passed

    _run(scenario())


def test_deadlines_pass_in_the_order_the_requests_began_and_each_is_told_once() -> None:
    async def scenario() -> None:
        deadlines = Deadlines(DELAY_S)
        tasks = [asyncio.create_task(_watched(deadlines)) for _ in range(5)]
        done = await asyncio.gather(*tasks)
        for began, cancelled_at, passed in done:
            assert cancelled_at >= began + DELAY_S and passed
        assert [d[1] for d in done] == sorted(d[1] for d in done)
        assert deadlines.pending() == 0
        assert not any(deadlines.end(task) for task in tasks)  # told once only

    _run(scenario())


def _request(deadlines: Deadlines) -> web.Request:
    app = web.Application()
    app[DEADLINES] = deadlines
    return make_mocked_request("POST", "/v1/accounts/ann/deposits", app=app)


def test_the_middleware_answers_a_deadline_passed_as_deadline_exceeded() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        await _until_cancelled()
        raise asyncio.CancelledError  # as a handler cut short at its await would

    async def scenario() -> None:
        deadlines = Deadlines(DELAY_S)
        task = asyncio.create_task(deadline_middleware(_request(deadlines), handler))
        with pytest.raises(DeadlineExceeded, match=r"no answer within 0\.05 s"):
            await task
        assert task.cancelling() == 0  # the deadline's cancellation taken back
        assert deadlines.pending() == 0

    _run(scenario())


def test_a_cancellation_that_is_not_the_deadlines_goes_through() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("an event no one sets was set")

    started = asyncio.Event()

    async def scenario() -> None:
        deadlines = Deadlines(60.0)
        task = asyncio.create_task(deadline_middleware(_request(deadlines), handler))
        await started.wait()
        task.cancel()  # the server's shutdown, say
        with pytest.raises(asyncio.CancelledError):
            await task
        assert deadlines.pending() == 0

    _run(scenario())


def test_a_handler_that_answers_despite_the_deadline_is_answered_and_the_task_uncancelled(
) -> None:
    answer = web.Response(status=201)

    async def handler(request: web.Request) -> web.StreamResponse:
        await _until_cancelled()  # swallows the cancellation
        return answer

    async def scenario() -> None:
        deadlines = Deadlines(DELAY_S)
        task = asyncio.create_task(deadline_middleware(_request(deadlines), handler))
        assert await task is answer
        assert task.cancelling() == 0

    _run(scenario())
