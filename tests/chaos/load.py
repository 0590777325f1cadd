"""Driving the load: opening the accounts, then ``concurrency`` clients until the operations are
done, spread round robin over the live servers.

Two hostile habits of real clients are mixed in: an *impatient* client (a share of requests
with a timeout of a few milliseconds to a quarter second: it hangs up while the server works,
and the write's outcome is unknown), and a *twin* (a share of writes sent twice at once, same
``Idempotency-Key`` and body, to two different servers: a client that retried too early). Both
count as one operation.

Every loop is bounded: by the operation count, by the run's deadline, and each request by the
client timeout. A client with no live server to talk to waits (bounded) for one to come back.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass
from typing import Any

from tests.chaos.client import Client, Request
from tests.chaos.history import OK, UNKNOWN, WRITES
from tests.chaos.nemesis import Schedule
from tests.chaos.servers import Server, ServerPool
from tests.chaos.workload import CURRENCY, Planner

NO_SERVER_WAIT_S = 60.0
GATE_POLL_S = 0.01
SETUP_ATTEMPTS = 20
RETRY_PAUSE_S = 0.5


class NoLiveServer(RuntimeError):
    pass


class Picker:
    """Round robin over the servers that are live now."""

    def __init__(self, pool: ServerPool) -> None:
        self.pool = pool
        self._turn = itertools.count()

    def pick_two(self) -> tuple[Server, Server] | None:
        live = self.pool.live()
        if len(live) < 2:
            return None
        first = next(self._turn) % len(live)
        return live[first], live[(first + 1) % len(live)]

    async def pick(self) -> Server:
        deadline = time.monotonic() + NO_SERVER_WAIT_S
        while True:
            live = self.pool.live()
            if live:
                return live[next(self._turn) % len(live)]
            if time.monotonic() >= deadline:
                raise NoLiveServer(f"no server was live for {NO_SERVER_WAIT_S} s")
            await asyncio.sleep(0.05)


async def send_until_known(
    client: Client, picker: Picker, request: Request, *, phase: str, attempts: int,
    first_id: int | None = None,
) -> dict[str, Any]:
    """Send ``request`` until its outcome is known (ok or refused), at most ``attempts`` times.
    Every attempt after the first names the first as the op it resolves."""
    op: dict[str, Any] = {}
    for attempt in range(attempts):
        server = await picker.pick()
        op = await client.send(request, server.url, server=server.index, phase=phase,
                               resolves=first_id)
        if first_id is None:
            first_id, phase = op["id"], "resolve"
        if op["outcome"] != UNKNOWN:
            return op
        if attempt + 1 < attempts:
            await asyncio.sleep(RETRY_PAUSE_S)
    return op


async def open_accounts(client: Client, picker: Picker, names: list[str]) -> None:
    """Open every account before any fault (a failure to open one aborts the run)."""
    for name in names:
        request = Request(op="open_account", method="POST", path="/v1/accounts", role="system",
                          account=name, args={"username": name, "currency": CURRENCY},
                          key=f"key-open-{name}", tag=name)
        op = await send_until_known(client, picker, request, phase="setup",
                                    attempts=SETUP_ATTEMPTS)
        if op["outcome"] != OK:
            raise RuntimeError(f"could not open account {name}: {op['status']} {op['body']}")


@dataclass(frozen=True)
class Habits:
    """How hostile the clients are: shares of impatient requests and of twinned writes."""

    impatient_share: float = 0.03
    impatient_timeout_s: tuple[float, float] = (0.005, 0.25)
    twin_share: float = 0.03


async def send_one(client: Client, picker: Picker, request: Request, *, worker: int,
                   habits: Habits, rng: random.Random) -> dict[str, Any]:
    """One operation of the load; for a twin, the answer that says most (ok, else unknown)."""
    pair = picker.pick_two() if request.op in WRITES and rng.random() < habits.twin_share \
        else None
    if pair is not None:
        ops = await asyncio.gather(*(
            client.send(request, s.url, server=s.index, phase="load", worker=worker,
                        twin=n == 1) for n, s in enumerate(pair)))
        return next((op for o in (OK, UNKNOWN) for op in ops if op["outcome"] == o), ops[0])
    timeout_s = None
    if rng.random() < habits.impatient_share:
        timeout_s = round(rng.uniform(*habits.impatient_timeout_s), 3)
    server = await picker.pick()
    return await client.send(request, server.url, server=server.index, phase="load",
                             worker=worker, timeout_s=timeout_s)


async def run_load(
    client: Client, picker: Picker, planner: Planner, schedule: Schedule, *,
    concurrency: int, deadline: float, habits: Habits, rng: random.Random,
) -> bool:
    """Run the load; True when every operation was made before the deadline."""

    async def worker(n: int) -> None:
        while time.monotonic() < deadline:
            if not schedule.may_start():  # the next fault is due first
                await asyncio.sleep(GATE_POLL_S)
                continue
            if schedule.take() is None:
                return
            request = planner.next()
            op = await send_one(client, picker, request, worker=n, habits=habits, rng=rng)
            planner.observe(request, op)

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return schedule.started >= schedule.operations and time.monotonic() < deadline
