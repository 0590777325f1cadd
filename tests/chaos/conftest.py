"""The chaos tests' PostgreSQL: a cluster of their own, made if missing, started if down.

``LEDGER_CHAOS_PG_CLUSTER`` and ``LEDGER_CHAOS_PG_PORT`` choose it (default ``15/chaos`` on
5433: the chaos run restarts it, so never the cluster others' tests use). Where it cannot be
made (no ``pg_createcluster``, not root) the tests skip, except under ``CI=true``, where they
must run and pass.
"""

from __future__ import annotations

import os

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
