"""Figures read from PostgreSQL itself: commits per request and the read models' lag.

Commits: ``xact_commit`` of ``pg_stat_database`` for one database, read through a connection to
another database (``postgres``), so reading it adds nothing to it. A backend publishes its
counts only when it goes idle, and at most once a second; one that last published less than a
second before going idle publishes 10 s later (PostgreSQL 15's ``PGSTAT_IDLE_INTERVAL``). So a
run's closing reading is taken ``SETTLE_S`` after it ended: lazily, just before the same
database's next run, so the wait overlaps the other service's run. The ledger also commits
when idle (its keeper's supervisor): that idle rate, measured first, is taken off for the
time between two readings, and so are the lag probe's own queries (one commit each, counted).
Requests in flight when wrk stops are committed but not answered in its count: at most one
per connection, so the figure leans high by up to connections / answers (1-3 % here).

Lag: the last position of the event log minus the lowest position any read model has
tracked, read from the tables (``ledger_events`` and each projection's ``*_tracking``).

CPU: what a run cost in processor time (user and system, from ``/proc``), of the service's own
process and of every PostgreSQL process on the machine, per 2xx answer. Unlike a rate, this
does not move much with what else the machine is doing: it says where a shortfall comes from
(the Python process, or the database's work per request). For the ledger's writes it is read
once the read models have caught up, so the projection each write causes is counted. And the
whole machine's busy time (``/proc/stat``: every core, the load generator's included): where it
keeps every core busy, a service's rate can be no more than the cores over its machine time
per answer, whichever process spends it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from projections.readmodels import APP_NAME, PROJECTIONS

SETTLE_S = 11.5
CATCH_UP_LIMIT_S = 120.0
POLL_S = 0.02


@dataclass(frozen=True)
class _Pending:
    ended: float  # when the run ended
    requests: int  # its 2xx answers
    own_queries: int  # the bench's own queries on the database since the opening reading
    done: Callable[[float], None]  # given the commits per request


class Commits:
    """``xact_commit`` of one database; commits per request of runs between readings."""

    def __init__(self, pg: str, dbname: str) -> None:
        self.dbname = dbname
        self.connection = psycopg.connect(f"{pg}/postgres", autocommit=True, connect_timeout=10)
        self.idle_per_s = 0.0
        self.last: tuple[int, float] | None = None
        self.pending: _Pending | None = None

    def close(self) -> None:
        self.connection.close()

    def read(self) -> tuple[int, float]:
        row = self.connection.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self.dbname,)
        ).fetchone()
        if row is None:
            raise RuntimeError(f"no database {self.dbname} in pg_stat_database")
        return int(row[0]), time.monotonic()

    def measure_idle(self, started: tuple[int, float]) -> float:
        """The idle rate since ``started`` (a reading taken ``SETTLE_S`` after any work)."""
        self.last = self.read()
        self.idle_per_s = (self.last[0] - started[0]) / (self.last[1] - started[1])
        return self.idle_per_s

    def before_run(self) -> None:
        """Close the previous run's count (waiting out ``SETTLE_S`` if need be)."""
        assert self.last is not None, "no opening reading: measure_idle first"
        if self.pending is None:
            return
        time.sleep(max(0.0, self.pending.ended + SETTLE_S - time.monotonic()))
        (before, started), (after, now) = self.last, self.read()
        net = after - before - self.pending.own_queries - self.idle_per_s * (now - started)
        self.pending.done(net / max(self.pending.requests, 1))
        self.last, self.pending = (after, now), None

    def after_run(self, requests: int, own_queries: int, done: Callable[[float], None]) -> None:
        self.pending = _Pending(time.monotonic(), requests, own_queries, done)


@dataclass(frozen=True)
class CatchUp:
    lag_events: int  # right after the load ended
    seconds: float  # until the lag was 0
    caught_up: bool  # False: still behind after CATCH_UP_LIMIT_S


class Lag:
    """The read models' lag, straight from the tables; every query counted (one commit)."""

    def __init__(self, database_url: str) -> None:
        self.connection = psycopg.connect(database_url, autocommit=True, connect_timeout=10)
        self.queries = 0
        events = f"{APP_NAME.lower()}_events"
        tracked = ", ".join(
            f"coalesce((SELECT max(notification_id) FROM {p.name}_tracking"
            f" WHERE application_name = '{APP_NAME}'), 0)"
            for p in PROJECTIONS
        )
        # Names from the ledger's own classes, never from input.
        self.sql = (f"SELECT coalesce((SELECT max(notification_id) FROM {events}), 0),"
                    f" least({tracked})")

    def close(self) -> None:
        self.connection.close()

    def positions(self) -> tuple[int, int]:
        """The log's last position, and the lowest any read model has reached."""
        self.queries += 1
        row = self.connection.execute(self.sql).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def lag(self) -> int:
        log, tracked = self.positions()
        return log - tracked

    def catch_up(self) -> CatchUp:
        started = time.monotonic()
        first = lag = self.lag()
        while lag > 0 and time.monotonic() - started < CATCH_UP_LIMIT_S:
            time.sleep(POLL_S)
            lag = self.lag()
        return CatchUp(first, time.monotonic() - started, lag <= 0)


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User plus system time of one process so far, in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime


def _machine_busy_s() -> float:
    """Every core's busy time so far, in seconds: the first line of /proc/stat, all but idle
    and iowait (and guest time, which user time counts already)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    assert fields[0] == "cpu", "the first line of /proc/stat sums every core"
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS_PER_S


def _postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() == "postgres":
                        pids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return pids


@dataclass(frozen=True)
class CpuReading:
    service: dict[int, float]  # by process: the service's and its children (the keeper's)
    postgres: dict[int, float]  # by PostgreSQL process (backends come and go)
    at_s: float = 0.0  # when it was read (time.monotonic)
    machine_s: float = 0.0  # every core's busy time (``_machine_busy_s``)

    @property
    def service_s(self) -> float:
        return sum(self.service.values())


@dataclass(frozen=True)
class CpuPerAnswer:
    service_us: float  # the service's process and its children
    postgres_us: float
    # The service's own process alone (its event loop's, its threads'), and its children's
    # (the ledger's read-model keeper): service_us = main_us + children_us.
    main_us: float = 0.0
    children_us: float = 0.0
    # The service's own process's processor time over the wall time between the readings:
    # near 1.0 while one thread holding the GIL (the event loop) is what limits it.
    main_cores: float = 0.0
    # The whole machine's busy time per answer (the load generator's and every other process's
    # included), and the cores it kept busy: near all of them, the machine is what limits the
    # rate, and a service's rate goes as the inverse of its machine time per answer.
    machine_us: float = 0.0
    machine_cores: float = 0.0


class Cpu:
    """Processor time of one service (its process and the processes it started: the ledger's
    read-model keeper works in one) and of PostgreSQL's, between two readings."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def read(self) -> CpuReading:
        return CpuReading({pid: _cpu_s(pid) for pid in _tree(self.pid)},
                          {pid: _cpu_s(pid) for pid in _postgres_pids()}, time.monotonic(),
                          _machine_busy_s())

    def per_answer(self, before: CpuReading, answers: int) -> CpuPerAnswer:
        after = self.read()
        n = max(answers, 1)
        service_s = _spent(before.service, after.service)
        main_s = after.service.get(self.pid, 0.0) - before.service.get(self.pid, 0.0)
        wall_s = after.at_s - before.at_s
        machine_s = after.machine_s - before.machine_s
        return CpuPerAnswer(
            service_s / n * 1e6, _spent(before.postgres, after.postgres) / n * 1e6,
            main_us=main_s / n * 1e6, children_us=(service_s - main_s) / n * 1e6,
            main_cores=main_s / wall_s if wall_s > 0 else 0.0,
            machine_us=machine_s / n * 1e6,
            machine_cores=machine_s / wall_s if wall_s > 0 else 0.0,
        )


def resident_mb(pid: int) -> float:
    """The resident memory of a process and its descendants (the ledger's keeper), in MiB
    (Linux: VmRSS of /proc/PID/status; 0 for a process that is gone)."""
    total_kib = 0
    for member in _tree(pid):
        try:
            with open(f"/proc/{member}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total_kib += int(line.split()[1])
                        break
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total_kib / 1024


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """Time spent between two readings by the processes of the second (a process started
    between them counts from its start)."""
    return sum(s - before.get(pid, 0.0) for pid, s in after.items())


def _tree(pid: int, *, depth: int = 3) -> list[int]:
    """A process and its descendants, ``depth`` generations down (Linux:
    /proc/PID/task/*/children)."""
    found, generation = [pid], [pid]
    for _ in range(depth):
        children = []
        for parent in generation:
            for task in _listdir(f"/proc/{parent}/task"):
                try:
                    with open(f"/proc/{parent}/task/{task}/children") as listed:
                        children += [int(child) for child in listed.read().split()]
                except (FileNotFoundError, ProcessLookupError):
                    continue
        found += children
        generation = children
    return found


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, ProcessLookupError):
        return []
