"""Several ``ledger serve`` processes on one database, each killable and restartable on its port.

A server is *live* from the moment its ``/health`` answers until the harness kills it; the load
generator sends requests only to live servers (requests already in flight to a killed one fail,
and are recorded as unknown). Every start writes a log of its own (``serve-<n>-<start>.log``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 20.0
START_ATTEMPTS = 3


class ServerError(RuntimeError):
    """A server did not start (its log says why)."""


def ledger_script() -> str:
    script = Path(sys.executable).with_name("ledger")
    if not script.exists():
        raise ServerError(f"no ledger console script beside {sys.executable}: run make install")
    return str(script)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    index: int
    port: int
    workdir: Path
    env: Mapping[str, str]
    process: subprocess.Popen[bytes] | None = None
    live: bool = False
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait for /health, a bounded number of times (a start can fail while
        PostgreSQL restarts)."""
        for _attempt in range(START_ATTEMPTS):
            self.starts += 1
            log_path = self.workdir / f"serve-{self.index}-{self.starts}.log"
            self.logs.append(log_path)
            with open(log_path, "wb") as log_file:
                self.process = subprocess.Popen(
                    [ledger_script(), "serve", "--port", str(self.port)],
                    cwd=self.workdir, env=dict(self.env), stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_healthy():
                self.live = True
                return
            self._reap(signal.SIGKILL)
        raise ServerError(f"server {self.index} did not start; see {self.logs[-1]}")

    def _wait_healthy(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, requests in flight are cut, its sessions die with it."""
        self.live = False
        self._reap(signal.SIGKILL)

    def stop(self) -> int | None:
        """SIGTERM, a bounded wait, then SIGKILL; the exit code (None if never started)."""
        self.live = False
        return self._reap(signal.SIGTERM)

    def _reap(self, how: signal.Signals) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(how)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        return self.process.returncode

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


@dataclass
class ServerPool:
    servers: list[Server]

    @classmethod
    def make(cls, count: int, *, database_url: str, tokens: str, workdir: Path) -> ServerPool:
        env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_TOKENS": tokens}
        workdir.mkdir(parents=True, exist_ok=True)
        return cls([Server(i, free_port(), workdir, env) for i in range(count)])

    def start_all(self) -> None:
        for server in self.servers:  # one at a time: start-up takes the schema lock anyway
            server.start()

    def stop_all(self) -> dict[int, int | None]:
        return {server.index: server.stop() for server in self.servers}

    def live(self) -> list[Server]:
        return [server for server in self.servers if server.live]

    def add_person(self, name: str, role: str, timeout_s: float = 30.0) -> str:
        """``ledger staff add NAME --role ROLE`` on the pool's store; returns the new token once
        every live server knows it (``GET /v1/me`` names the person)."""
        first = self.servers[0]
        added = subprocess.run(
            [ledger_script(), "staff", "add", name, "--role", role, "--by", "chaos"],
            cwd=first.workdir, env=dict(first.env), capture_output=True, text=True,
            timeout=60,
        )
        if added.returncode != 0:
            raise RuntimeError(f"ledger staff add failed: {added.stderr}")
        token = added.stdout.strip()
        deadline = time.monotonic() + timeout_s
        for server in self.live():
            while True:
                asked = urllib.request.Request(f"{server.url}/v1/me",
                                               headers={"Authorization": f"Bearer {token}"})
                try:
                    with urllib.request.urlopen(asked, timeout=5) as answer:
                        if answer.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server {server.index} never knew {name}")
                time.sleep(0.05)
        return token
