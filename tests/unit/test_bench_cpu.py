"""The bench's probes of processor time (``bench.probes.Cpu``) and memory (``resident_mb``): they
count a process's own and its children's, per answer, and PostgreSQL's time beside them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from bench.probes import Cpu, resident_mb


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


# Spins until the kernel has counted the seconds its first argument gives of its processor time
# (what /proc says, which is what the probe reads: counted in clock ticks, it may lag the
# process's own clock), at most 10 s.
SPIN = ("import os, sys, time\n"
        "tick = os.sysconf('SC_CLK_TCK')\n"
        "def counted():\n"
        "    fields = open('/proc/self/stat').read().rsplit(')', 1)[1].split()\n"
        "    return (int(fields[11]) + int(fields[12])) / tick\n"
        "deadline = time.monotonic() + 10\n"
        "while counted() < float(sys.argv[1]) and time.monotonic() < deadline:\n"
        "    sum(range(10_000))\n"
        "print('spun', flush=True)\n"
        "sys.stdin.read()\n")


@contextmanager
def a_child_that_spun(seconds: float = 0.05) -> Iterator[int]:
    """A child process of this one that has been counted ``seconds`` of processor time,
    running until the block ends; its pid."""
    child = subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "spun\n"
        yield child.pid
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def test_the_processes_a_service_started_count_with_it() -> None:
    """The ledger's read-model keeper works in a child process: its time is the service's."""
    cpu = Cpu(os.getpid())
    with a_child_that_spun() as child:
        reading = cpu.read()

    assert reading.service[child] >= 0.05
    assert reading.service_s >= reading.service[os.getpid()] + 0.05


def test_a_service_s_time_is_split_between_its_own_process_and_its_children() -> None:
    """The bench shows the ledger's event loop apart from its keeper: the two parts add up
    to the service's time, and the child's time is not the service's own."""
    cpu = Cpu(os.getpid())
    before = cpu.read()
    with a_child_that_spun():
        used = cpu.per_answer(before, answers=1)

    assert used.children_us >= 0.05 * 1e6
    assert used.main_us >= 0
    assert abs(used.service_us - used.main_us - used.children_us) < 1e-3


def test_the_cores_a_service_keeps_busy_are_its_own_time_over_the_wall_time() -> None:
    cpu = Cpu(os.getpid())
    before = cpu.read()
    digest = b""
    for _ in range(10_000):  # bounded, as above
        if cpu.read().service[os.getpid()] - before.service[os.getpid()] >= 0.05:
            break
        for _ in range(10_000):
            digest = hashlib.sha256(digest).digest()

    used = cpu.per_answer(before, answers=1)

    assert used.main_us >= 0.05 * 1e6
    assert 0 < used.main_cores <= os.cpu_count()  # type: ignore[operator]


def test_the_memory_of_a_service_counts_its_children() -> None:
    alone = resident_mb(os.getpid())
    with a_child_that_spun():
        with_child = resident_mb(os.getpid())

    assert alone > 1  # a Python process holds more than a MiB
    assert with_child >= alone + 1  # and so does its child
    assert resident_mb(2**22 + 1) == 0  # gone: nothing


def test_the_machine_s_time_counts_every_process_on_it() -> None:
    """The whole machine's busy time includes a process the service did not start (the load
    generator's, say): while a process that is not the service's spins, the machine is counted
    at least its time (less two clock ticks: the kernel counts a core's time and a process's
    apart, a tick at a time), and never more cores than it has (but for those ticks: a tenth
    more, over the few tenths of a second it spins)."""
    service = Cpu(2**22 + 1)  # a service that is gone: none of the time below is its own
    before = service.read()
    with a_child_that_spun(0.3) as child:
        spun = Cpu(child).read().service_s
        used = service.per_answer(before, answers=1)

    assert used.service_us == 0.0
    assert spun >= 0.3
    assert used.machine_us >= (spun - 2 / os.sysconf("SC_CLK_TCK")) * 1e6
    assert 0 < used.machine_cores <= os.cpu_count() * 1.1  # type: ignore[operator]
