"""The faults of a chaos run, injected while the load runs, spread evenly over it.

Kinds: ``kill`` (SIGKILL one ``ledger serve``, a short pause, restart it on the same port),
``pg_restart`` (``pg_ctlcluster … restart -m immediate``: a crash of PostgreSQL and recovery
from its WAL), ``terminate`` (``pg_terminate_backend`` on every session of the service's
database). They are interleaved (kill, restart, terminate, kill, …) and fire one at a time.

The :class:`Schedule` ties faults to the load's progress: fault *i* fires once the load has
started ``threshold(i)`` operations, and the load may not start operations past
``threshold(i + 1)`` until fault *i* is over. So every fault happens under load, and the run
cannot finish before its last fault has.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from tests.chaos.cluster import Cluster, ClusterError
from tests.chaos.history import History
from tests.chaos.servers import ServerError, ServerPool

KILL_PAUSE_S = (0.2, 1.5)
POLL_S = 0.02


def interleave(kills: int, pg_restarts: int, terminations: int) -> list[str]:
    """The faults in firing order: round robin over the kinds while each has some left."""
    left = {"kill": kills, "pg_restart": pg_restarts, "terminate": terminations}
    order: list[str] = []
    while any(left.values()):
        for kind in ("kill", "pg_restart", "terminate"):
            if left[kind] > 0:
                order.append(kind)
                left[kind] -= 1
    return order


@dataclass
class Schedule:
    operations: int
    faults: list[str]
    started: int = 0  # operations the load has started
    done: int = 0  # faults that are over

    def threshold(self, i: int) -> int:
        """The operation count at which fault ``i`` (0-based) fires; past the last: the end."""
        if i >= len(self.faults):
            return self.operations
        return (i + 1) * self.operations // (len(self.faults) + 1)

    def may_start(self) -> bool:
        """False while the next fault is due before another operation may start."""
        return self.started >= self.operations or self.started < self.threshold(self.done + 1)

    def take(self) -> int | None:
        """The next operation's number, or None when the load is done."""
        if self.started >= self.operations:
            return None
        self.started += 1
        return self.started - 1


class Nemesis:
    def __init__(
        self, schedule: Schedule, pool: ServerPool, cluster: Cluster, dbname: str,
        history: History, rng: random.Random,
    ) -> None:
        self.schedule = schedule
        self.pool = pool
        self.cluster = cluster
        self.dbname = dbname
        self.history = history
        self.rng = rng
        self._kills = 0

    async def run(self, stopping: asyncio.Event) -> None:
        for i, kind in enumerate(self.schedule.faults):
            while self.schedule.started < self.schedule.threshold(i):
                if stopping.is_set():
                    return
                await asyncio.sleep(POLL_S)
            await self.inject(kind)
            self.schedule.done += 1

    async def inject(self, kind: str) -> None:
        fault: dict[str, Any] = {"kind": kind, "start": self.history.now(), "ok": False}
        self.history.faults.append(fault)
        try:
            fault.update(await getattr(self, f"_{kind}")())
            fault["ok"] = True
        except (ClusterError, ServerError, OSError) as error:
            fault["detail"] = f"{type(error).__name__}: {error}"
        fault["end"] = self.history.now()

    async def _kill(self) -> dict[str, Any]:
        server = self.pool.servers[self._kills % len(self.pool.servers)]
        self._kills += 1
        await asyncio.to_thread(server.kill)
        killed_at = self.history.now()
        exit_code = None if server.process is None else server.process.returncode
        await asyncio.sleep(self.rng.uniform(*KILL_PAUSE_S))
        await asyncio.to_thread(server.start)
        return {"target": server.index, "detail": {
            "port": server.port, "killed_at": killed_at, "exit_code": exit_code,
            "live_again_at": self.history.now(), "starts": server.starts}}

    async def _pg_restart(self) -> dict[str, Any]:
        seconds = await asyncio.to_thread(self.cluster.restart_immediate)
        return {"target": f"{self.cluster.version}/{self.cluster.name}",
                "detail": {"seconds_until_accepting": round(seconds, 3)}}

    async def _terminate(self) -> dict[str, Any]:
        ended = await asyncio.to_thread(self.cluster.terminate_backends, self.dbname)
        if ended == 0:
            raise ClusterError(f"no session on {self.dbname} to terminate")
        return {"target": self.dbname, "detail": {"sessions_ended": ended}}
