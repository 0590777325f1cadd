"""``ledger rebuild`` while two servers on one store serve writes and reads (issue 10, item 5):
no read answers 503 or stale data, a read-model row gone wrong is put right by the swap, and
afterwards the read models equal a fresh replay (``ledger verify`` says ok).

Each client writes deposits to one server and reads its balance from the other; each balance
read after a deposit's 201 must include it. The clients run until the rebuild has ended and each
has done a few more rounds: they stop on state, not after a sleep."""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.identity import Actor
from projections.store import open_application
from tests.conftest import store_settings
from tests.http.conftest import (
    TOKENS,
    Server,
    cli_workdir,
    ledger_command,
    start_server,
    store,
)

ACTOR = Actor("system:rebuild-test", "rebuild-test")
BULK_ACCOUNTS = 6
BULK_DEPOSITS = 500  # 3,006 events before the servers start: a rebuild of several batches
CLIENTS = 2
ROUNDS_AFTER = 3  # rounds each client does after the rebuild has ended
TIMEOUT_S = 300
BYSTANDER = "bystander"


def ledger(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ledger_command(), *args], capture_output=True, text=True, timeout=TIMEOUT_S,
        cwd=cli_workdir(),
        env={"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": database_url,
             "LEDGER_CHAIN_KEY_FILE": os.environ["LEDGER_CHAIN_KEY_FILE"]},
    )


def call(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{server.base_url}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKENS['system']}",
                 "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode(errors="replace")


def fill(url: str) -> None:
    """A bystander with a deposit, and many deposits saved in bulk (through the domain)."""
    app = open_application(store_settings(url, pool_size=1))
    try:
        app.open_account(BYSTANDER, "USD", actor=ACTOR)
        app.deposit(BYSTANDER, 1_000, "PAY-B", actor=ACTOR)
        for n in range(BULK_ACCOUNTS):
            username = f"bulk_{n}"
            app.open_account(username, "EUR", actor=ACTOR)
            account = app.account(username)
            for d in range(BULK_DEPOSITS):
                account.receive_deposit(1 + d, f"PAY-{d}", actor=ACTOR)
            app.save(account)
    finally:
        app.close()


def tamper_with_the_bystanders_row(url: str, workdir: Path) -> None:
    """Behind every server's back: the bystander's live read-model row says 1 more."""
    sql = "UPDATE rm_accounts SET posted = posted + 1 WHERE username = 'bystander'"
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(workdir / "ledger.accounts.db")) as connection:
            connection.execute(sql)
            connection.commit()
        return
    with psycopg.connect(url) as connection:
        connection.execute(sql)


class Client(threading.Thread):
    """Deposits to one server and reads the balance from the other, until told to stop."""

    def __init__(self, writer: Server, reader: Server, username: str,
                 stop: threading.Event) -> None:
        super().__init__(name=f"client-{username}", daemon=True)
        self.writer, self.reader, self.username, self.stop = writer, reader, username, stop
        self.rounds = 0
        self.posted = 0
        self.failures: list[str] = []
        self.reads: list[tuple[float, float]] = []  # (started, ended)
        self.rounds_lock = threading.Condition()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.round()
        except Exception as error:  # reported by the test
            self.failures.append(f"{type(error).__name__}: {error}")

    def round(self) -> None:
        amount = 1 + self.rounds % 7
        status, body = call(self.writer, "POST", f"/v1/accounts/{self.username}/deposits",
                            {"amount": amount, "reference": f"R-{self.rounds}"})
        if status != 201:
            self.failures.append(f"deposit {self.rounds}: {status} {body}")
            return
        self.posted += amount
        started = time.monotonic()
        status, body = call(self.reader, "GET", f"/v1/accounts/{self.username}")
        self.reads.append((started, time.monotonic()))
        if status != 200:
            self.failures.append(f"read {self.rounds}: {status} {body}")
        elif body["posted"] != self.posted:
            self.failures.append(f"read {self.rounds}: stale, posted {body['posted']} "
                                 f"after deposits of {self.posted}")
        with self.rounds_lock:
            self.rounds += 1
            self.rounds_lock.notify_all()

    def wait_rounds(self, at_least: int) -> None:
        with self.rounds_lock:
            assert self.rounds_lock.wait_for(
                lambda: self.rounds >= at_least or bool(self.failures) or not self.is_alive(),
                TIMEOUT_S,
            ), f"{self.name} did {self.rounds} rounds"


@pytest.fixture(params=["sqlite", "postgres"])
def two_servers(request: pytest.FixtureRequest, tmp_path: Path
                ) -> Iterator[tuple[str, Path, list[Server]]]:
    with store(request.param, tmp_path) as url:
        fill(url)
        servers = [start_server(url, tmp_path) for _ in range(2)]
        try:
            yield url, tmp_path, servers
        finally:
            for server in servers:
                server.stop()


def test_a_rebuild_while_two_servers_serve_answers_every_read_current_and_verifies(
    two_servers: tuple[str, Path, list[Server]],
) -> None:
    url, workdir, servers = two_servers
    # the bystander's row as the servers read it, then gone wrong behind their backs
    assert call(servers[0], "GET", f"/v1/accounts/{BYSTANDER}")[1]["posted"] == 1_000
    tamper_with_the_bystanders_row(url, workdir)
    assert call(servers[1], "GET", f"/v1/accounts/{BYSTANDER}")[1]["posted"] == 1_001

    stop = threading.Event()
    clients = []
    for n in range(CLIENTS):
        username = f"client_{n}"
        assert call(servers[n], "POST", "/v1/accounts",
                    {"username": username, "currency": "USD"})[0] == 201
        clients.append(Client(servers[n], servers[1 - n], username, stop))
    for client in clients:
        client.start()
    try:
        for client in clients:
            client.wait_rounds(3)  # both loops run before the rebuild starts

        rebuild_started = time.monotonic()
        rebuilt = ledger(url, "rebuild", "--lock-timeout", "60")
        rebuild_ended = time.monotonic()

        for client in clients:
            client.wait_rounds(client.rounds + ROUNDS_AFTER)
    finally:
        stop.set()
        for client in clients:
            client.join(TIMEOUT_S)

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt every read model" in rebuilt.stdout
    assert [f for c in clients for f in c.failures] == []
    during = [end - start for c in clients for start, end in c.reads
              if start < rebuild_ended and end > rebuild_started]
    assert during, "no read was served while the rebuild ran"
    # the swap put the bystander's row right: the read models are the fresh ones
    assert call(servers[0], "GET", f"/v1/accounts/{BYSTANDER}")[1]["posted"] == 1_000
    assert call(servers[1], "GET", f"/v1/accounts/{BYSTANDER}")[1]["posted"] == 1_000

    # the swapped-in read models stood where the keeper had left the old ones: it went on
    # without a refused batch or a restart
    for server in servers:
        assert "starting again" not in server.log(), server.log()

    verified = ledger(url, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("ok:")
    print(
        f"\nrebuild beside two serving servers ({url.split(':')[0]}): "
        f"{rebuilt.stdout.strip()}; wall {rebuild_ended - rebuild_started:.2f} s; "
        f"{len(during)} reads during it, latency median "
        f"{statistics.median(during) * 1000:.1f} ms, max {max(during) * 1000:.1f} ms"
    )
