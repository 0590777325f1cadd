"""``make bench``: the figures of issues 9 and 14, the ledger beside its baselines, in one run.

On the PostgreSQL server at ``--pg``, in fresh databases dropped after:
1. A real ``ledger serve`` and the bare service (``bench/bare.py``: aiohttp + psycopg, a pool
   of 8, one durable INSERT per write, one indexed SELECT per read), each started here on a
   free loopback port, ``--users`` accounts opened in each first.
2. ``--rounds`` rounds of deposits then balance reads, wrk ``-t2 -c32`` for ``--seconds``
   each, the same requests (``bench/load.lua``) to both services, taking turns on who goes
   first; medians over the rounds. For each run: commits per request (``pg_stat_database``),
   processor time per answer of the service's own process, of its children (the ledger's
   keeper) and of PostgreSQL (``/proc``; the ledger's counted until its read models have
   caught up), the cores the service's own process kept busy (near 1.0 while its event loop
   is what limits it) and, for the ledger's write runs, the read models' lag when the load
   ends and how long until they catch up. After the rounds, each service's resident memory
   (its processes, the keeper's child included).
3. One deposit at a time (wrk ``-t1 -c1``), the ledger and the bare service.
4. Deposits alone, then again while ``--auditors`` clients page ``/v1/events?limit=1000``;
   ``--rounds`` rounds of both, medians; then the ledger's resident memory again (its child
   making the log's pages now runs too).
5. Unless ``--no-webhooks``: a second ``ledger serve`` on a fresh database (``--users``
   accounts opened in it) whose ``LEDGER_WEBHOOK_URL`` is a receiver that accepts every
   connection and never answers (``bench/hang.py``), ``LEDGER_WEBHOOK_SECRET`` set, and a
   short ``LEDGER_WEBHOOK_TIMEOUT_S`` and back-off (``WEBHOOK_ENV``) so its delivery keeps
   trying again all through the load: ``--rounds`` deposit runs on it, taking turns with the
   ledger of 1-4 (no webhooks), each run's read models caught up before the next; medians.
   Then its outbox's deliveries still waiting (``ledger_webhook_messages_waiting`` from
   ``/metrics``) and what the receiver was sent (issue 14: writes keep their speed while the
   receiver hangs).
6. With the services stopped: ``--events`` events made in a fresh database, then the rate of
   ``ledger rebuild`` beside the rate of merely reading and decoding them.
Then one markdown table: each measure, its baseline, the ratio and the issue's goal.

These machines are shared and noisy: compare only ratios measured side by side in one run.
Every run, wait and loop is bounded; started processes are stopped and databases dropped
however the run ends.

    .venv/bin/python -m bench.run --rounds 1 --seconds 4 --events 20000   # a quick run
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import aiohttp
import click
import psycopg

from bench import hang, rebuild, report, services, wrk
from bench.probes import SETTLE_S, Commits, Cpu, Lag, resident_mb
from bench.report import HttpFigures
from bench.services import Service

OPEN_CONCURRENCY = 16
OPEN_TIMEOUT_S = 300.0
OPEN_ATTEMPTS = 3
AUDITOR_HEAD_START_S = 1.0
IDLE_S = 5.0
# The hooked ledger's delivery: a POST given up after 1 s, tried again 0.25-5 s later, so a
# hanging receiver is tried all through each run (the defaults: 10 s, then 1 s doubling).
WEBHOOK_ENV = {
    "LEDGER_WEBHOOK_TIMEOUT_S": "1",
    "LEDGER_WEBHOOK_BACKOFF_BASE_S": "0.5",
    "LEDGER_WEBHOOK_BACKOFF_MAX_S": "5",
}
METRICS_TIMEOUT_S = 10.0


@dataclass
class Target:
    """One service under load, with its commit meter and (the ledger) its lag probe."""

    name: str
    service: Service
    token: str
    commits: Commits
    lag: Lag | None = None


@dataclass(frozen=True)
class Options:
    rounds: int
    seconds: int
    users: int
    threads: int
    connections: int
    auditors: int
    webhooks: bool = True


def say(text: str) -> None:
    print(text, flush=True)


async def open_accounts(base: str, token: str, users: int) -> None:
    """``users`` accounts u0000 ... through the API, as the system role."""
    headers = {"Authorization": f"Bearer {token}"}
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:

        async def one(n: int) -> None:
            body = {"username": f"u{n:04d}", "currency": "USD"}
            refusal = ""
            for _ in range(OPEN_ATTEMPTS):  # a 503 is safe to retry under the key
                async with gate, session.post(f"{base}/v1/accounts", json=body,
                                              headers={"Idempotency-Key": f"open-{n}"}) as answer:
                    if answer.status == 201:
                        return
                    refusal = f"{answer.status} {await answer.text()}"
                    if answer.status != 503:
                        break
                await asyncio.sleep(1.0)
            raise RuntimeError(f"opening u{n:04d}: {refusal}")

        await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(users))), OPEN_TIMEOUT_S)


def load(target: Target, mode: str, tag: str, options: Options, *, threads: int | None = None,
         connections: int | None = None) -> wrk.Load:
    command = wrk.command(
        target.service.url, wrk.LOAD_SCRIPT, [mode, str(options.users), tag, target.token],
        threads=threads or options.threads, connections=connections or options.connections,
        seconds=options.seconds,
    )
    return wrk.run(command, options.seconds)


def metered(target: Target, mode: str, tag: str, options: Options,
            figures: HttpFigures) -> wrk.Load:
    """One load run, with its commits per request (counted once they have settled) and, for
    the ledger's writes, the read models' lag when it ends."""
    target.commits.before_run()
    own_before = target.lag.queries if target.lag else 0
    cpu = Cpu(target.service.process.pid)
    cpu_before = cpu.read()
    done = load(target, mode, tag, options)
    line = f"  {target.name:<6} {mode:<7} {done.describe()}"
    if target.lag is not None:
        catch_up = target.lag.catch_up()
        if mode == "deposit":
            figures.lags.append(catch_up)
            line += f"; lag {catch_up.lag_events} events, 0 after {catch_up.seconds:.2f} s"
    used = cpu.per_answer(cpu_before, done.ok)  # the ledger's: once its read models caught up
    cpu_found = figures.cpu_per_write if mode == "deposit" else figures.cpu_per_read
    cpu_found.setdefault(target.name, []).append(used)
    line += (f"; CPU {used.main_us:,.0f} µs + children {used.children_us:,.0f} µs"
             f" + PostgreSQL {used.postgres_us:,.0f} µs each; {used.main_cores:.2f} cores;"
             f" machine {used.machine_us:,.0f} µs each, {used.machine_cores:.2f} cores")
    found = figures.commits_per_write if mode == "deposit" else figures.commits_per_read
    counts = found.setdefault(target.name, [])

    def counted(per_request: float) -> None:
        counts.append(per_request)
        say(f"  ({target.name} {mode} {tag}: {per_request:.2f} commits each)")

    own = (target.lag.queries if target.lag else 0) - own_before
    target.commits.after_run(done.ok, own, counted)
    say(line)
    return done


def rounds(targets: list[Target], options: Options, figures: HttpFigures) -> None:
    runs: dict[tuple[str, str], list[wrk.Load]] = {}
    for r in range(options.rounds):
        say(f"round {r + 1} of {options.rounds}")
        order = targets if r % 2 == 0 else targets[::-1]  # neither always goes first
        for mode in ("deposit", "balance"):
            for target in order:
                done = metered(target, mode, f"r{r}", options, figures)
                runs.setdefault((target.name, mode), []).append(done)
    for target in targets:  # the last runs' counts, before any unmetered load
        target.commits.before_run()
    for (name, mode), loads in runs.items():
        (figures.writes if mode == "deposit" else figures.reads)[name] = wrk.Median.of(loads)


def one_at_a_time(targets: list[Target], options: Options, figures: HttpFigures) -> None:
    """As many rounds as the loads, alternating who goes first, and their medians: one run of
    each moved the ratio by more than the code did (a deposit's p50 varied 1.7 to 3.0 ms
    between runs of the same build on a busy day)."""
    say("one deposit at a time")
    runs: dict[str, list[wrk.Load]] = {}
    for r in range(options.rounds):
        for target in targets if r % 2 == 0 else targets[::-1]:
            done = load(target, "deposit", f"solo{r}", options, threads=1, connections=1)
            runs.setdefault(target.name, []).append(done)
            say(f"  {target.name:<6} {done.describe()}")
    for name, loads in runs.items():
        figures.solo[name] = wrk.Median.of(loads)


def heavy_readers(ledger: Target, auditor_token: str, options: Options,
                  figures: HttpFigures) -> None:
    """As many rounds as the loads, each deposits alone then beside the auditors; medians (one
    run of each moved the ratio from 0.59 to 0.97 between runs of the same build)."""
    assert ledger.lag is not None
    say(f"deposits alone, then with {options.auditors} auditors paging the log")
    unloaded, audited, pages = [], [], []
    for r in range(options.rounds):
        unloaded.append(load(ledger, "deposit", f"alone{r}", options))
        ledger.lag.catch_up()
        log_size, _ = ledger.lag.positions()
        seconds = options.seconds + 2 * int(AUDITOR_HEAD_START_S) + 1
        auditors = wrk.Background(wrk.command(
            ledger.service.url, wrk.AUDITOR_SCRIPT, [auditor_token, str(log_size)],
            threads=1, connections=options.auditors, seconds=seconds), seconds)
        try:
            time.sleep(AUDITOR_HEAD_START_S)  # the auditors are paging before deposits begin
            audited.append(load(ledger, "deposit", f"audited{r}", options))
            pages.append(auditors.finish())
        finally:
            auditors.stop()
        say(f"  alone   {unloaded[-1].describe()}\n  audited {audited[-1].describe()}\n"
            f"  auditors {pages[-1].describe()} (pages)")
    figures.unloaded, figures.audited = wrk.Median.of(unloaded), wrk.Median.of(audited)
    figures.auditors = wrk.Median.of(pages)
    figures.auditor_count = options.auditors
    figures.audited_memory_mb = resident_mb(ledger.service.process.pid)  # the page maker's too


def webhook_metrics(base: str) -> dict[str, float]:
    """The ``ledger_webhook_*`` samples of ``/metrics`` (no token needed), by name and labels."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=METRICS_TIMEOUT_S) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        sample = re.fullmatch(r"(ledger_webhook_[a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if sample:
            found[sample[1]] = float(sample[2])
    return found


def outbox_counts(database_url: str) -> tuple[int, int]:
    """The outbox's messages, and those delivered, straight from its tables (the metric counts
    only the deliveries begun: at most a scan's worth per receiver)."""
    with psycopg.connect(database_url, connect_timeout=10) as c:
        row = c.execute("SELECT (SELECT count(*) FROM ob_messages), (SELECT count(*) FROM"
                        " ob_deliveries WHERE status = 'delivered')").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def hanging_receiver(pg: str, plain: Target, tokens: dict[str, str], options: Options,
                     figures: HttpFigures) -> None:
    """Deposits on a ledger whose webhook receiver never answers, taking turns with ``plain``
    (the same ledger without webhooks)."""
    assert plain.lag is not None
    say("deposits while the webhook receiver hangs, beside the ledger without webhooks")
    with ExitStack() as stack:
        receiver = stack.enter_context(hang.Hanging())
        url = stack.enter_context(services.database(pg, "hooked"))
        env = {"LEDGER_WEBHOOK_URL": receiver.url,
               "LEDGER_WEBHOOK_SECRET": secrets.token_urlsafe(24), **WEBHOOK_ENV}
        service = stack.enter_context(services.ledger(url, tokens, env, name="hooked"))
        say(f"  opening {options.users} accounts in the hooked ledger")
        asyncio.run(open_accounts(service.url, tokens["system"], options.users))
        lag = Lag(url)
        stack.callback(lag.close)
        commits = Commits(pg, url.rsplit("/", 1)[1])
        stack.callback(commits.close)
        hooked = Target(service.name, service, tokens["system"], commits, lag)
        lag.catch_up()
        runs: dict[str, list[wrk.Load]] = {}
        for r in range(options.rounds):
            for target in (plain, hooked) if r % 2 == 0 else (hooked, plain):
                done = load(target, "deposit", f"hook{r}", options)
                assert target.lag is not None
                catch_up = target.lag.catch_up()  # neither run pays for the other's backlog
                runs.setdefault(target.name, []).append(done)
                say(f"  {target.name:<6} deposit {done.describe()}; lag {catch_up.lag_events} "
                    f"events, 0 after {catch_up.seconds:.2f} s")
        figures.unhooked = wrk.Median.of(runs[plain.name])
        figures.hooked = wrk.Median.of(runs[hooked.name])
        figures.hook_metrics = webhook_metrics(service.url)
        figures.outbox = outbox_counts(url)
        figures.receiver = (receiver.accepted, receiver.held, receiver.turned_away)
    say(f"  the receiver was sent {figures.receiver[0]} connections, answered none; outbox "
        f"(messages, delivered): {figures.outbox}; webhook metrics at the end: "
        f"{figures.hook_metrics}")


@contextmanager
def targets(pg: str, options: Options, tokens: dict[str, str]) -> Iterator[list[Target]]:
    """Both services running on fresh databases, accounts opened, meters ready."""
    with ExitStack() as stack:
        ledger_url = stack.enter_context(services.database(pg, "ledger"))
        bare_url = stack.enter_context(services.database(pg, "bare"))
        ledger = stack.enter_context(services.ledger(ledger_url, tokens))
        bare = stack.enter_context(services.bare(bare_url, options.users))
        say(f"opening {options.users} accounts in the ledger")
        asyncio.run(open_accounts(ledger.url, tokens["system"], options.users))
        lag = Lag(ledger_url)
        stack.callback(lag.close)
        lag.catch_up()
        found = []
        for service, url, probe in ((bare, bare_url, None), (ledger, ledger_url, lag)):
            commits = Commits(pg, url.rsplit("/", 1)[1])
            stack.callback(commits.close)
            found.append(Target(service.name, service, tokens["system"], commits, probe))
        yield found


def http_figures(pg: str, options: Options) -> HttpFigures:
    tokens = services.tokens()
    figures = HttpFigures(connections=options.connections, rounds=options.rounds)
    with targets(pg, options, tokens) as found:
        say(f"counting idle commits ({SETTLE_S + IDLE_S:.0f} s)")
        time.sleep(SETTLE_S)  # the start-up's and the accounts' commits have settled
        opening = [target.commits.read() for target in found]
        time.sleep(IDLE_S)
        for target, started in zip(found, opening, strict=True):
            idle = target.commits.measure_idle(started)
            figures.idle_commits_per_s[target.name] = idle
            say(f"  {target.name} commits {idle:.1f}/s when idle (taken off its counts)")
        rounds(found, options, figures)
        for target in found:  # the keeper's child process included
            figures.memory_mb[target.name] = resident_mb(target.service.process.pid)
        one_at_a_time(found, options, figures)
        heavy_readers(found[1], tokens["auditor"], options, figures)
        if options.webhooks:
            hanging_receiver(pg, found[1], tokens, options, figures)
    return figures


def server_version(pg: str) -> str:
    with psycopg.connect(f"{pg}/postgres", connect_timeout=10) as c:
        row = c.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


@click.command()
@click.option("--rounds", "rounds_", default=3, show_default=True, type=click.IntRange(1, 9),
              help="Rounds of the write and read loads (medians over them).")
@click.option("--seconds", default=6, show_default=True, type=click.IntRange(1, 60),
              help="Length of each wrk run.")
@click.option("--events", default=100_000, show_default=True,
              type=click.IntRange(0, 1_000_000), help="Events to rebuild (0: skip).")
@click.option("--users", default=1000, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option("--connections", default=32, show_default=True, type=click.IntRange(1, 1000))
@click.option("--auditors", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option("--webhooks/--no-webhooks", default=True, show_default=True,
              help="Also deposits on a ledger whose webhook receiver hangs (issue 14).")
@click.option("--pg", default="postgresql://postgres@127.0.0.1:5432", show_default=True,
              help="The PostgreSQL server (a URL without a database).")
def main(rounds_: int, seconds: int, events: int, users: int, threads: int,
         connections: int, auditors: int, webhooks: bool, pg: str) -> None:
    if connections < threads:
        raise click.BadParameter("at least one connection per thread", param_hint="--connections")
    options = Options(rounds_, seconds, users, threads, connections, auditors, webhooks)
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    http = http_figures(pg, options)
    rebuilt = None
    if events:
        say(f"making {events:,} events, then `ledger rebuild` beside reading and decoding them")
        with services.database(pg, "replay") as url:
            rebuilt = rebuild.measure(url, events=events, users=users)
        say(f"  made in {rebuilt.seed_s:.1f} s; read + decode {rebuilt.decode_per_s:,.0f}/s; "
            f"rebuild {rebuilt.command_per_s:,.0f}/s whole command")
    idle = ", ".join(f"{k} {v:.1f}/s" for k, v in http.idle_commits_per_s.items())
    say(f"\nPostgreSQL {server_version(pg)}; wrk -t{threads} -c{connections} -d{seconds}s, "
        f"{rounds_} round(s), {users} users; load average {load_before:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at the end; {time.monotonic() - started:.0f} s in all; "
        f"idle commits taken off the counts: {idle}.\n")
    say(report.markdown(report.rows(http, rebuilt)))


if __name__ == "__main__":
    main()
