"""What the bench starts and always stops: fresh databases, and the two HTTP services.

``database()`` creates a database of a random name and drops it (``WITH (FORCE)``) when the
block ends, however it ends. ``service()`` starts a process on a free loopback port, waits
(bounded) until its ``/health`` answers, and stops it at the end (SIGTERM, then SIGKILL).
A process's output goes to a log file, whose tail is shown when it fails to start.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
ROLES = ("system", "cs", "finance", "auditor")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database(pg: str, label: str) -> Iterator[str]:
    """A fresh database on the server at ``pg`` (a URL without a database); its URL."""
    name = f"ledger_bench_{secrets.token_hex(4)}_{label}"
    with psycopg.connect(f"{pg}/postgres", autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{pg}/{name}"
    finally:
        with psycopg.connect(f"{pg}/postgres", autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class Service:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def _wait_healthy(service: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{service.url}/health", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    tail = service.log.read_text(errors="replace")[-3000:]
    raise SystemExit(f"{service.name} did not become healthy in {START_TIMEOUT_S:.0f} s "
                     f"(exit code {service.process.poll()}); its log ends:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_S)


@contextmanager
def service(name: str, args: list[str], env: dict[str, str], port: int) -> Iterator[Service]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
        log = Path(folder) / "log"
        with log.open("wb") as out:
            # In its own folder: the keys a ledger makes on its first start (./var/) land
            # there, never in the repository, where the tests' `ledger` commands would read them.
            env = {**env, "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)}
            process = subprocess.Popen(args, env=env, cwd=folder, stdout=out, stderr=out)
        running = Service(name, f"http://127.0.0.1:{port}", process, log)
        try:
            _wait_healthy(running)
            yield running
        finally:
            _stop(process)


def ledger(database_url: str, tokens: dict[str, str], more_env: dict[str, str] | None = None,
           name: str = "ledger") -> AbstractContextManager[Service]:
    """A real ``ledger serve`` on the database, with one token per role (and ``more_env``)."""
    port = free_port()
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_TOKENS": ",".join(f"{role}:{token}" for role, token in tokens.items()),
        **(more_env or {}),
    }
    command = [str(Path(sys.executable).with_name("ledger")), "serve", "--port", str(port)]
    return service(name, command, env, port)


def bare(database_url: str, users: int) -> AbstractContextManager[Service]:
    port = free_port()
    command = [sys.executable, "-m", "bench.bare", "--dsn", database_url,
               "--port", str(port), "--users", str(users)]
    return service("bare", command, dict(os.environ), port)


def tokens() -> dict[str, str]:
    return {role: secrets.token_urlsafe(16) for role in ROLES}
