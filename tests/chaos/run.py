"""``python -m tests.chaos.run``: a chaos run of the ledger service, then its checkers.

Several ``ledger serve`` processes share one PostgreSQL database (a fresh one, in a cluster the
run owns: ``tests.chaos.cluster``). Bounded clients send a mix of money writes and reads, a hot
account taking half of them, and record every request and its outcome; meanwhile servers are
SIGKILLed and restarted, PostgreSQL is crash-restarted, and the service's sessions are
terminated (``tests.chaos.nemesis``). Then the unknown outcomes are resolved, the final state is
collected (``tests.chaos.finish``), the history is written as JSON (``tests.chaos.history``)
and judged (``tests.chaos.checkers``). Exit 0 when every checker passes, 1 when one fails, 2
when the run could not be made.

    python -m tests.chaos.run --operations 10000 --servers 3 --kills 3 --pg-restarts 2 \\
        --history var/chaos-history.json
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import click

from tests.chaos import checkers
from tests.chaos.client import Client
from tests.chaos.cluster import DEFAULT_CLUSTER, DEFAULT_PORT, Cluster, ClusterError
from tests.chaos.finish import collect, ledger_verify, resolve_unknowns, settle
from tests.chaos.history import History
from tests.chaos.load import Habits, Picker, open_accounts, run_load
from tests.chaos.nemesis import Nemesis, Schedule, interleave
from tests.chaos.servers import ServerError, ServerPool
from tests.chaos.workload import Planner

PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class Config:
    operations: int = 10_000
    servers: int = 3
    kills: int = 3
    pg_restarts: int = 2
    terminations: int = 2
    concurrency: int = 24
    accounts: int = 20
    hot_share: float = 0.5
    request_timeout_s: float = 10.0
    impatient_share: float = 0.03
    twin_share: float = 0.03
    max_seconds: float = 1800.0
    seed: int | None = None
    pg_cluster: str = DEFAULT_CLUSTER
    pg_port: int = DEFAULT_PORT
    allow_shared_cluster: bool = False
    history: str = "var/chaos-history.json"
    workdir: str = "var/chaos"
    keep_database: bool = False
    quiet: bool = False

    def check(self) -> None:
        if not 1 <= self.operations <= 1_000_000:
            raise ValueError("operations is 1..1,000,000")
        if not 1 <= self.servers <= 8 or not 1 <= self.concurrency <= 256:
            raise ValueError("servers is 1..8 and concurrency 1..256")
        if min(self.kills, self.pg_restarts, self.terminations) < 0:
            raise ValueError("fault counts are 0 or more")
        if not 2 <= self.accounts <= 1000:
            raise ValueError("accounts is 2..1000")
        if not all(0 <= s <= 1 for s in (self.hot_share, self.impatient_share,
                                            self.twin_share)):
            raise ValueError("shares are 0..1")
        if self.kills and self.servers < 2:
            raise ValueError("killing a server needs at least 2 servers")


@dataclass
class Report:
    history_path: Path
    verdicts: list[checkers.Verdict]
    figures: dict[str, Any]
    duration_s: float
    database_url: str
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def summary(self) -> str:
        f = self.figures
        lines = [
            f"chaos run: {f['operations']} operations ({f['writes']} writes, {f['reads']} reads)"
            f" in {self.duration_s:.1f} s; acknowledged {f['acknowledged']}, refused "
            f"{f['refused']}, unknown {f['unknown']} (unknown writes {f['unknown_writes']}: "
            f"{f['unknown_writes_resolved']}); faults injected {f['faults_total']} "
            f"{f['faults_injected']}; {f['events_in_log']} account and refund events in the log",
            f"statuses: {f['statuses']}",
            f"history: {self.history_path}; database: {self.database_url}",
            *self.notes,
            "checkers:",
            *checkers.verdict_lines(self.verdicts),
            "PASSED" if self.passed else "FAILED",
        ]
        return "\n".join(lines)


def run(config: Config) -> Report:
    """The whole run; raises ClusterError or ServerError when it could not be made."""
    config.check()
    return asyncio.run(_run(config))


async def _run(config: Config) -> Report:
    run_id = secrets.token_hex(4)
    rng = random.Random(config.seed if config.seed is not None else secrets.randbits(32))
    history = History(run_id)
    history.meta["config"] = asdict(config)
    cluster = Cluster(config.pg_cluster, config.pg_port, allow_shared=config.allow_shared_cluster)
    await asyncio.to_thread(cluster.ensure)
    cluster._refuse_if_shared("run chaos on")
    dbname = f"chaos_{run_id}"
    await asyncio.to_thread(cluster.create_database, dbname)
    history.meta["database"] = database_url = cluster.url(dbname)
    tokens = {role: f"chaos-{role}-{secrets.token_hex(12)}"
              for role in ("system", "cs", "finance", "auditor")}
    workdir = Path(config.workdir) / run_id
    pool = ServerPool.make(config.servers, database_url=database_url,
                           tokens=",".join(f"{r}:{t}" for r, t in tokens.items()),
                           workdir=workdir)
    history_path = Path(config.history)
    try:
        await asyncio.to_thread(pool.start_all)
        # Four eyes: a named finance person pays what the finance role token approved.
        tokens["payer"] = await asyncio.to_thread(pool.add_person, "payer", "finance")
        await _drive(config, history, pool, cluster, dbname, tokens, rng)
        history.final["verify"] = await asyncio.to_thread(ledger_verify, database_url,
                                                            workdir)
    finally:
        history.meta["servers"] = [
            {"index": s.index, "port": s.port, "starts": s.starts, "logs": [str(p) for p in s.logs]}
            for s in pool.servers
        ]
        history.meta["stopped_exit_codes"] = await asyncio.to_thread(pool.stop_all)
        history.meta["duration_s"] = history.now()
        history.save(history_path)
    verdicts = checkers.check(history.doc)
    report = Report(history_path, verdicts, checkers.figures(history.doc),
                    history.meta["duration_s"], database_url)
    history.meta["figures"] = report.figures
    history.meta["verdicts"] = [v.as_dict() for v in verdicts]
    history.save(history_path)
    if report.passed and not config.keep_database:
        await asyncio.to_thread(cluster.drop_database, dbname)
        report.notes.append(f"database {dbname} dropped (--keep-database keeps it)")
    return report


async def _drive(config: Config, history: History, pool: ServerPool, cluster: Cluster,
                 dbname: str, tokens: dict[str, str], rng: random.Random) -> None:
    run_id = history.meta["run_id"]
    names = [f"chaos-{run_id}-hot"] + [f"chaos-{run_id}-{n:03d}" for n in range(1,
                                                                                config.accounts)]
    history.doc["accounts"] = [{"username": n, "hot": i == 0} for i, n in enumerate(names)]
    connector = aiohttp.TCPConnector(limit=config.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = Client(session, history, tokens, timeout_s=config.request_timeout_s)
        picker = Picker(pool)
        await open_accounts(client, picker, names)
        schedule = Schedule(config.operations,
                            interleave(config.kills, config.pg_restarts, config.terminations))
        nemesis = Nemesis(schedule, pool, cluster, dbname, history, rng)
        planner = Planner(run_id, names, hot_share=config.hot_share, rng=rng)
        deadline = time.monotonic() + config.max_seconds
        stopping = asyncio.Event()
        progress = asyncio.create_task(_progress(history, schedule, stopping, config.quiet))
        faults = asyncio.create_task(nemesis.run(stopping))
        history.meta["load_started"] = history.now()
        try:
            history.meta["load_complete"] = await run_load(
                client, picker, planner, schedule, concurrency=config.concurrency,
                deadline=deadline, rng=rng, habits=Habits(
                    impatient_share=config.impatient_share, twin_share=config.twin_share))
        finally:
            stopping.set()
            await faults
            await progress
        history.meta["load_ended"] = history.now()
        history.meta["settle_s"] = await settle(pool, session, tokens["finance"])
        history.meta["unknown_writes"] = await resolve_unknowns(history, client, picker)
        await collect(history, pool, session, tokens)


async def _progress(history: History, schedule: Schedule, stopping: asyncio.Event,
                    quiet: bool) -> None:
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), PROGRESS_EVERY_S)
        except TimeoutError:
            pass
        if quiet:
            continue
        load = [op for op in history.ops if op["phase"] == "load"]
        counts = {k: sum(1 for op in load if op["outcome"] == k)
                  for k in ("ok", "refused", "unknown")}
        faults = [f["kind"] for f in history.faults]
        print(f"[{history.now():7.1f} s] {schedule.started}/{schedule.operations} started, "
              f"{counts}, faults {faults}", file=sys.stderr, flush=True)


@click.command()
@click.option("--operations", default=Config.operations, show_default=True, type=int)
@click.option("--servers", default=Config.servers, show_default=True, type=int)
@click.option("--kills", default=Config.kills, show_default=True, type=int,
              help="SIGKILLs of a server (each restarted on its port).")
@click.option("--pg-restarts", default=Config.pg_restarts, show_default=True, type=int,
              help="Crash restarts of PostgreSQL (-m immediate).")
@click.option("--terminations", default=Config.terminations, show_default=True, type=int,
              help="pg_terminate_backend of every session of the service's database.")
@click.option("--concurrency", default=Config.concurrency, show_default=True, type=int)
@click.option("--accounts", default=Config.accounts, show_default=True, type=int)
@click.option("--hot-share", default=Config.hot_share, show_default=True, type=float)
@click.option("--request-timeout", "request_timeout_s", default=Config.request_timeout_s,
              show_default=True, type=float)
@click.option("--impatient-share", default=Config.impatient_share, show_default=True,
              type=float, help="Share of requests whose client hangs up within 5-250 ms.")
@click.option("--twin-share", default=Config.twin_share, show_default=True, type=float,
              help="Share of writes sent twice at once, same key, to two servers.")
@click.option("--max-seconds", default=Config.max_seconds, show_default=True, type=float,
              help="The load stops by then, done or not (the run then fails).")
@click.option("--seed", default=None, type=int, help="Seed of the workload and the pauses.")
@click.option("--pg-cluster", default=Config.pg_cluster, show_default=True,
              help="The PostgreSQL 15 cluster to create if missing and restart.")
@click.option("--pg-port", default=Config.pg_port, show_default=True, type=int)
@click.option("--allow-shared-cluster", is_flag=True,
              help="Allow restarting a cluster others use (main, 5432): CI only.")
@click.option("--history", default=Config.history, show_default=True)
@click.option("--workdir", default=Config.workdir, show_default=True,
              help="Server logs go to WORKDIR/<run id>/.")
@click.option("--keep-database", is_flag=True, help="Keep the run's database when it passes.")
@click.option("--quiet", is_flag=True)
def main(**options: Any) -> None:
    """A chaos run of the ledger service; exit 0 only when every checker passes."""
    config = Config(**options)
    # SIGTERM unwinds like Ctrl-C, so the servers this run started are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        report = run(config)
    except (ValueError, ClusterError, ServerError) as error:
        click.echo(f"chaos run not made: {error}", err=True)
        sys.exit(2)
    click.echo(report.summary())
    click.echo(json.dumps({"figures": report.figures}, indent=None))
    sys.exit(0 if report.passed else 1)


if __name__ == "__main__":
    main()
