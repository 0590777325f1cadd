"""Running wrk (the one load generator of the bench) and reading what its scripts report.

Every wrk run is bounded: its own ``-d`` duration, a socket timeout, and a wall-clock limit on
the process beyond that. The scripts (``load.lua``, ``auditor.lua``) print one line
``BENCH {json}`` from ``done()``; a run without that line is an error, never a zero.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOAD_SCRIPT = HERE / "load.lua"
AUDITOR_SCRIPT = HERE / "auditor.lua"
# A response slower than this is a socket timeout in wrk's count (and so an error here).
SOCKET_TIMEOUT_S = 10
# How long past its duration a wrk process may take before it is killed.
GRACE_S = 30
MARKER = "BENCH "


@dataclass(frozen=True)
class Load:
    """One wrk run: answers by status, latency percentiles, socket errors."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    statuses: dict[str, int]

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("2"))

    @property
    def failed(self) -> int:
        """Answers other than 2xx, and requests that got no answer."""
        return self.requests - self.ok + self.socket_errors

    @property
    def per_second(self) -> float:
        """2xx answers per second: a refusal is not throughput."""
        return self.ok / self.seconds

    def describe(self) -> str:
        others = {s: n for s, n in sorted(self.statuses.items()) if n and not s.startswith("2")}
        extra = f", non-2xx {others}" if others else ""
        errors = f", socket errors {self.socket_errors}" if self.socket_errors else ""
        return (f"{self.per_second:,.0f}/s p50 {self.p50_ms:.1f} ms p99 {self.p99_ms:.1f} ms"
                f"{extra}{errors}")


@dataclass(frozen=True)
class Median:
    """Several rounds of one load: medians of rate and percentiles, failures summed."""

    rounds: int
    per_second: float
    p50_ms: float
    p99_ms: float
    failed: int
    others: dict[str, int]  # non-2xx answers by status, and "socket" for no answer

    @classmethod
    def of(cls, loads: list[Load]) -> Median:
        others: dict[str, int] = {}
        for load in loads:
            for status, n in load.statuses.items():
                if n and not status.startswith("2"):
                    others[status] = others.get(status, 0) + n
            if load.socket_errors:
                others["socket"] = others.get("socket", 0) + load.socket_errors
        return cls(
            rounds=len(loads),
            per_second=statistics.median(load.per_second for load in loads),
            p50_ms=statistics.median(load.p50_ms for load in loads),
            p99_ms=statistics.median(load.p99_ms for load in loads),
            failed=sum(load.failed for load in loads),
            others=others,
        )


def command(
    url: str, script: Path, args: list[str], *, threads: int, connections: int, seconds: int
) -> list[str]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    return [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
        f"--timeout={SOCKET_TIMEOUT_S}s", "--latency", "-s", str(script), url, "--", *args,
    ]


def parse(stdout: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            found: dict[str, Any] = json.loads(line[len(MARKER):])
            return found
    raise RuntimeError(f"wrk printed no {MARKER.strip()} line:\n{stdout[-2000:]}")


def to_load(report: dict[str, Any]) -> Load:
    statuses = report.get("statuses")
    if statuses is None:  # auditor.lua counts only 4xx/5xx (it hands no body to Lua)
        failed = int(report["non_2xx"])
        statuses = {"2xx": int(report["requests"]) - failed, "4xx/5xx": failed}
    return Load(
        requests=int(report["requests"]),
        seconds=int(report["duration_us"]) / 1e6,
        p50_ms=float(report["p50_us"]) / 1000,
        p99_ms=float(report["p99_us"]) / 1000,
        socket_errors=int(report["socket_errors"]),
        statuses={str(k): int(v) for k, v in statuses.items()},
    )


def run(cmd: list[str], seconds: int) -> Load:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + GRACE_S,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr[-2000:]}")
    return to_load(parse(done.stdout))


class Background:
    """A wrk run in the background (the auditors), collected with ``finish()``."""

    def __init__(self, cmd: list[str], seconds: int) -> None:
        self.seconds = seconds
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def finish(self) -> Load:
        try:
            stdout, stderr = self.process.communicate(timeout=self.seconds + GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate(timeout=GRACE_S)
            raise
        if self.process.returncode != 0:
            raise RuntimeError(f"wrk exited {self.process.returncode}: {stderr[-2000:]}")
        return to_load(parse(stdout))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(GRACE_S)
