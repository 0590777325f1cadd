"""A short chaos run (``make chaos`` makes the long one): two ``ledger serve`` processes on one
PostgreSQL, 1,200 operations, a server SIGKILLed and restarted, PostgreSQL crash-restarted
twice, the service's sessions terminated; then every checker of ``tests.chaos.checkers`` must
pass.

It runs on a cluster of its own (``tests/chaos/conftest.py``), in about 30-60 s.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.chaos.cluster import Cluster
from tests.chaos.run import Config, run

SHORT = Config(
    operations=1200, servers=2, kills=1, pg_restarts=2, terminations=1, concurrency=16,
    accounts=12,
    # Twins (one key sent to two servers at once) have a test of their own:
    # test_idempotency_races.py. Here: the faults and the impatient clients.
    twin_share=0.0,
    max_seconds=240.0,
    quiet=True,
)


def test_a_short_chaos_run_with_a_kill_a_crash_restart_and_cut_sessions_passes_every_checker(
    chaos_cluster: Cluster, tmp_path: Path,
) -> None:
    config = replace(
        SHORT,
        pg_cluster=chaos_cluster.name,
        pg_port=chaos_cluster.port,
        allow_shared_cluster=chaos_cluster.allow_shared,
        history=str(tmp_path / "chaos-history.json"),
        workdir=str(tmp_path / "servers"),
    )
    report = run(config)
    figures = report.figures
    assert figures["operations"] == SHORT.operations
    assert figures["faults_injected"] == {"kill": 1, "pg_restart": 2, "terminate": 1}
    if not report.passed:
        pytest.fail(report.summary(), pytrace=False)
