"""``make bench``: the ledger's speed beside baselines measured in the same run.

One run against PostgreSQL (a fresh database, dropped after):
- HTTP deposits per second and balance reads per second, p50/p99 latency, through a real
  ``ledger serve`` process;
- baselines: raw single-row INSERT commits from Python (psycopg, same concurrency), and a bare
  aiohttp handler (GET and small-JSON POST) served by a process of its own.
Figures are printed as a table with each ratio to its baseline: these machines are shared and
noisy, so only ratios measured side by side mean much.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import click
import psycopg

ROOT = Path(__file__).resolve().parent.parent
TOKENS = {role: secrets.token_urlsafe(16) for role in ("system", "cs", "finance", "auditor")}
START_TIMEOUT_S = 30.0


@dataclass
class Result:
    name: str
    count: int
    seconds: float
    latencies_s: list[float]

    @property
    def per_second(self) -> float:
        return self.count / self.seconds

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(
    name: str,
    count: int,
    concurrency: int,
    call: Callable[[aiohttp.ClientSession, int], Awaitable[None]],
) -> Result:
    """``count`` calls, ``concurrency`` at a time; every call's latency recorded."""
    latencies: list[float] = []
    next_index = iter(range(count))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for i in next_index:
                started = time.perf_counter()
                await call(session, i)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return Result(name, count, seconds, latencies)


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not start in {START_TIMEOUT_S} s")


BARE_APP = """
import sys
from aiohttp import web
async def get(request): return web.json_response({"ok": True})
async def post(request): return web.json_response(await request.json(), status=201)
app = web.Application(); app.router.add_get("/", get); app.router.add_post("/", post)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def raw_inserts(dsn: str, count: int, threads: int) -> Result:
    """Single-row INSERT commits from Python: the floor under any durable write."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE bench_raw (id bigserial PRIMARY KEY, body text)")
    body = "x" * 300
    latencies: list[float] = []
    counter = iter(range(count))
    lock = threading.Lock()

    def work() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                started = time.perf_counter()
                c.execute("INSERT INTO bench_raw (body) VALUES (%s)", (body,))
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return Result("raw INSERT commits (psycopg)", count, time.perf_counter() - started, latencies)


async def ledger_load(
    base: str, accounts: int, count: int, concurrency: int
) -> tuple[Result, Result]:
    system = {"Authorization": f"Bearer {TOKENS['system']}"}
    async with aiohttp.ClientSession() as session:
        for n in range(accounts):
            async with session.post(
                f"{base}/v1/accounts",
                json={"username": f"bench-{n}", "currency": "USD"},
                headers=system,
            ) as r:
                assert r.status == 201, await r.text()

    async def deposit(session: aiohttp.ClientSession, i: int) -> None:
        async with session.post(
            f"{base}/v1/accounts/bench-{i % accounts}/deposits",
            json={"amount": 100 + i, "reference": f"pay-{i}"},
            headers=system,
        ) as r:
            assert r.status == 201, await r.text()

    async def read(session: aiohttp.ClientSession, i: int) -> None:
        async with session.get(f"{base}/v1/accounts/bench-{i % accounts}", headers=system) as r:
            assert r.status == 200, await r.text()

    deposits = await load("ledger: HTTP deposits", count, concurrency, deposit)
    reads = await load("ledger: balance reads", count, concurrency, read)
    return deposits, reads


async def bare_load(base: str, count: int, concurrency: int) -> tuple[Result, Result]:
    async def post(session: aiohttp.ClientSession, i: int) -> None:
        async with session.post(base, json={"amount": i, "reference": f"pay-{i}"}) as r:
            assert r.status == 201

    async def get(session: aiohttp.ClientSession, i: int) -> None:
        async with session.get(base) as r:
            assert r.status == 200

    return (
        await load("bare aiohttp POST", count, concurrency, post),
        await load("bare aiohttp GET", count, concurrency, get),
    )


def table(rows: list[tuple[Result, Result]]) -> str:
    lines = [
        f"{'measure':<30} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8}   {'baseline':<30} "
        f"{'per s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}",
    ]
    for mine, base in rows:
        lines.append(
            f"{mine.name:<30} {mine.per_second:>9.0f} {mine.percentile_ms(0.5):>8.1f} "
            f"{mine.percentile_ms(0.99):>8.1f}   {base.name:<30} {base.per_second:>9.0f} "
            f"{base.percentile_ms(0.5):>8.1f} {base.percentile_ms(0.99):>8.1f} "
            f"{mine.per_second / base.per_second:>6.2f}"
        )
    return "\n".join(lines)


@click.command()
@click.option("--count", default=3000, show_default=True, help="requests per measure")
@click.option("--concurrency", default=32, show_default=True, help="connections at once")
@click.option("--accounts", default=100, show_default=True, help="accounts the load spreads over")
@click.option("--pg", default="postgresql://postgres@127.0.0.1:5432", show_default=True)
def main(count: int, concurrency: int, accounts: int, pg: str) -> None:
    assert 0 < count <= 1_000_000 and 0 < concurrency <= 1000
    name = f"ledger_bench_{secrets.token_hex(4)}"
    with psycopg.connect(f"{pg}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = f"{pg}/{name}"
    ledger_port, bare_port = free_port(), free_port()
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": dsn,
        "LEDGER_TOKENS": ",".join(f"{r}:{t}" for r, t in TOKENS.items()),
    }
    ledger = start(
        [str(Path(sys.executable).with_name("ledger")), "serve", "--port", str(ledger_port)], env
    )
    bare = start([sys.executable, "-c", BARE_APP, str(bare_port)], dict(os.environ))
    try:
        wait_for(f"http://127.0.0.1:{ledger_port}", ledger)
        wait_for(f"http://127.0.0.1:{bare_port}", bare)
        raw = raw_inserts(dsn, count, threads=min(concurrency, 8))
        deposits, reads = asyncio.run(
            ledger_load(f"http://127.0.0.1:{ledger_port}", accounts, count, concurrency)
        )
        bare_post, bare_get = asyncio.run(
            bare_load(f"http://127.0.0.1:{bare_port}/", count, concurrency)
        )
    finally:
        stop(ledger)
        stop(bare)
        with psycopg.connect(f"{pg}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(
        f"\n{count} requests per measure, {concurrency} connections, {accounts} accounts, "
        f"PostgreSQL {name}\n"
    )
    print(table([(deposits, raw), (deposits, bare_post), (reads, bare_get)]))


if __name__ == "__main__":
    main()
