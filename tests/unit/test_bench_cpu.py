"""The bench's processor-time probe (``bench.probes.Cpu``): it counts a process's own time and its
children's, per answer, and PostgreSQL's beside it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from bench.probes import Cpu


def test_the_time_a_process_spends_is_counted_per_answer() -> None:
    cpu = Cpu(os.getpid())
    before = cpu.read()
    digest = b""
    for _ in range(10_000):  # bounded: a few seconds at most, where 0.05 s is wanted
        if cpu.read().service_s - before.service_s >= 0.05:
            break
        for _ in range(10_000):
            digest = hashlib.sha256(digest).digest()

    used = cpu.per_answer(before, answers=10)

    assert used.service_us >= 0.05 / 10 * 1e6
    assert used.postgres_us >= 0


def test_a_process_that_is_gone_counts_no_time() -> None:
    gone = Cpu(2**22 + 1)  # above Linux's pid_max

    assert gone.read().service_s == 0.0


SPIN = ("import sys, time\n"
        "started = time.process_time()\n"
        "while time.process_time() - started < 0.05:\n"
        "    pass\n"
        "print('spun', flush=True)\n"
        "sys.stdin.read()\n")


def test_the_processes_a_service_started_count_with_it() -> None:
    """The ledger's read-model keeper works in a child process: its time is the service's."""
    cpu = Cpu(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "spun\n"
        reading = cpu.read()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)

    assert reading.service[child.pid] >= 0.05
    assert reading.service_s >= reading.service[os.getpid()] + 0.05
