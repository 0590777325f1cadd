"""The chaos cluster helper makes a cluster PostgreSQL can start, and mends one it cannot.

Each test works on a scratch cluster of its own name and port (never ``chaos`` or ``main``)
and removes it at the end. Where clusters cannot be made here (no ``pg_createcluster``, not
root) the tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import re

import pytest

from tests.chaos.cluster import Cluster, ClusterError


def _settings(cluster: Cluster) -> dict[str, str]:
    with cluster.admin() as admin:
        rows = admin.execute(
            "SELECT name, setting FROM pg_settings"
            " WHERE name IN ('listen_addresses', 'max_connections', 'fsync', 'port')"
        ).fetchall()
    return {str(name): str(setting) for name, setting in rows}


def test_a_missing_cluster_is_made_started_on_loopback_and_removed(
    scratch_cluster: Cluster,
) -> None:
    assert scratch_cluster.status() is None

    scratch_cluster.ensure()

    assert scratch_cluster.status() == "online"
    settings = _settings(scratch_cluster)
    assert settings["port"] == str(scratch_cluster.port)
    assert settings["listen_addresses"] in {"localhost", "127.0.0.1"}
    assert settings["fsync"] == "on"
    assert int(settings["max_connections"]) >= 300
    # Every uncommented line of the written configuration is one PostgreSQL parses: a value
    # with dots or colons is quoted.
    with open(scratch_cluster.config_path()) as config:
        for line in config:
            setting = re.match(r"^\s*(\w+)\s*=\s*([^#\s]+)", line)
            if setting and re.search(r"[.:]", setting.group(2)):
                assert setting.group(2).startswith("'"), line

    scratch_cluster.remove()
    assert scratch_cluster.status() is None


def test_a_cluster_of_its_own_whose_configuration_does_not_parse_is_made_anew(
    scratch_cluster: Cluster,
) -> None:
    scratch_cluster.ensure()
    # What the helper's earlier version wrote, and PostgreSQL refuses to start on.
    with open(scratch_cluster.config_path(), "a") as config:
        config.write("listen_addresses = 127.0.0.1\n")
    scratch_cluster.stop()
    assert scratch_cluster.status() == "down"

    scratch_cluster.ensure()

    assert scratch_cluster.status() == "online"
    assert _settings(scratch_cluster)["listen_addresses"] in {"localhost", "127.0.0.1"}


def test_the_shared_cluster_is_never_made_anew_or_removed() -> None:
    shared = Cluster("main", 5432)
    with pytest.raises(ClusterError, match="shared"):
        shared.remove()
    with pytest.raises(ClusterError, match="shared"):
        shared._create()
