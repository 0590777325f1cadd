"""The chaos tests' PostgreSQL: a cluster of their own, made if missing, started if down.

``LEDGER_CHAOS_PG_CLUSTER`` and ``LEDGER_CHAOS_PG_PORT`` choose it (default ``15/chaos`` on
5433: the chaos run restarts it, so never the cluster others' tests use). Where it cannot be
made (no ``pg_createcluster``, not root) the tests skip, except under ``CI=true``, where they
must run and pass.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator

import pytest

from tests.chaos.cluster import DEFAULT_CLUSTER, DEFAULT_PORT, Cluster, ClusterError
from tests.conftest import IN_CI


@pytest.fixture(scope="session")
def chaos_cluster() -> Cluster:
    cluster = Cluster(
        os.environ.get("LEDGER_CHAOS_PG_CLUSTER", DEFAULT_CLUSTER),
        int(os.environ.get("LEDGER_CHAOS_PG_PORT", str(DEFAULT_PORT))),
        allow_shared=IN_CI,
    )
    try:
        cluster.ensure()
    except ClusterError as error:
        if IN_CI:
            pytest.fail(f"the chaos cluster is required under CI=true: {error}")
        pytest.skip(f"no PostgreSQL cluster for chaos: {error}")
    return cluster


@pytest.fixture
def scratch_cluster() -> Iterator[Cluster]:
    """A cluster of the test's own name and port (never ``chaos`` or ``main``), removed at the
    end: for a test that stops or breaks it."""
    if shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true needs pg_createcluster, run as root")
        pytest.skip("cluster tests need pg_createcluster, run as root")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    cluster = Cluster(f"scratch{os.getpid()}", port)
    try:
        yield cluster
    finally:
        cluster.remove()
