"""The PostgreSQL cluster a chaos run owns: made if missing, started if down, restarted at will.

A chaos run restarts PostgreSQL with ``-m immediate`` (a crash: no checkpoint, in-flight
transactions lost, recovery from the WAL on start). That would break anyone else's work on the
same cluster, so the run uses a cluster of its own (``15/chaos`` on port 5433 by default), made
with ``pg_createcluster`` (trust authentication on 127.0.0.1, room for several servers'
connections). ``fsync`` and ``synchronous_commit`` stay on: the service refuses to start
otherwise, and the run is about durable commits.

A cluster others use (``main``, port 5432) is refused unless ``allow_shared`` says the caller
knows nobody else is on it (``CI=true``).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

import psycopg

DEFAULT_VERSION = "15"
DEFAULT_CLUSTER = "chaos"
DEFAULT_PORT = 5433
SHARED_CLUSTERS = frozenset({"main"})
SHARED_PORTS = frozenset({5432})
# Each `ledger serve` holds some 25-50 connections; four servers and the harness fit.
MAX_CONNECTIONS = 300
COMMAND_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 3
# What pg_ctl says when postgresql.conf does not parse.
CONFIG_ERROR = "contains errors"


class ClusterError(RuntimeError):
    """The cluster could not be made, started, restarted or reached."""


@dataclass(frozen=True)
class Cluster:
    name: str = DEFAULT_CLUSTER
    port: int = DEFAULT_PORT
    version: str = DEFAULT_VERSION
    host: str = "127.0.0.1"
    user: str = "postgres"
    allow_shared: bool = False

    @property
    def is_shared(self) -> bool:
        return self.name in SHARED_CLUSTERS or self.port in SHARED_PORTS

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    # -- making sure it runs --------------------------------------------------------------------

    def status(self) -> str | None:
        """``online``, ``down`` (or another pg_lsclusters status), or None when missing."""
        listing = _command(["pg_lsclusters", "--no-header"]).stdout
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] == self.version and fields[1] == self.name:
                if int(fields[2]) != self.port:
                    raise ClusterError(
                        f"cluster {self.version}/{self.name} listens on {fields[2]}, "
                        f"not {self.port}"
                    )
                return fields[3]
        return None

    def ensure(self) -> None:
        """Create the cluster if it is missing, start it if it is down (idempotent), then check
        it is reachable, durable and roomy enough."""
        status = self.status()
        if status is None:
            self._create()
        elif status != "online":
            try:
                _command(["pg_ctlcluster", self.version, self.name, "start"])
            except ClusterError as error:
                # A cluster of our own whose configuration PostgreSQL cannot parse (one made by
                # an earlier version of this helper wrote `listen_addresses = 127.0.0.1`
                # unquoted) never starts again: its data is a chaos run's scratch, so make it anew.
                if self.is_shared or CONFIG_ERROR not in str(error):
                    raise
                self.remove()
                self._create()
        self.wait_ready()
        self._check_settings()

    def _create(self) -> None:
        """``pg_createcluster`` with trust on loopback and room for several servers.

        Only settings whose values need no quoting go through ``-o``: pg_createcluster writes
        them into postgresql.conf as given, and a dotted address unquoted does not parse. The
        default ``listen_addresses`` (``localhost``) already keeps the cluster on loopback."""
        if self.is_shared:
            raise ClusterError(f"refusing to create the shared cluster {self.name}")
        _command([
            "pg_createcluster", self.version, self.name, "--port", str(self.port),
            "-o", f"max_connections={MAX_CONNECTIONS}",
            "--start", "--", "--auth=trust",
        ])

    def remove(self) -> None:
        """Stop and delete this cluster, data and configuration (never a shared one)."""
        if self.is_shared:
            raise ClusterError(f"refusing to remove the shared cluster {self.name}")
        if self.status() is not None:
            _command(["pg_dropcluster", "--stop", self.version, self.name])

    def stop(self) -> None:
        """Stop this cluster (fast shutdown; never a shared one)."""
        self._refuse_if_shared("stop")
        _command(["pg_ctlcluster", self.version, self.name, "stop"])

    def config_path(self) -> str:
        return f"/etc/postgresql/{self.version}/{self.name}/postgresql.conf"

    def _check_settings(self) -> None:
        with self.admin() as admin:
            for setting in ("fsync", "synchronous_commit"):
                row = admin.execute(f"SHOW {setting}").fetchone()
                if row is None or str(row[0]).lower() in ("off", "false", "0"):
                    raise ClusterError(f"{self.name} has {setting} off: commits are not durable")
            row = admin.execute("SHOW max_connections").fetchone()
            if row is None or int(str(row[0])) < MAX_CONNECTIONS // 2:
                raise ClusterError(
                    f"{self.name} allows {row and row[0]} connections; a chaos run needs "
                    f"{MAX_CONNECTIONS // 2} or more (pg_conftool {self.version} {self.name} "
                    f"set max_connections {MAX_CONNECTIONS}, then restart it)"
                )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Wait until the cluster accepts connections; returns the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            try:
                with self.admin() as admin:
                    admin.execute("SELECT 1")
                return time.monotonic() - started
            except psycopg.OperationalError as error:
                if time.monotonic() >= deadline:
                    raise ClusterError(f"{self.name} did not accept connections: {error}") from None
                time.sleep(0.2)

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    # -- faults ---------------------------------------------------------------------------------

    def restart_immediate(self) -> float:
        """Crash-restart PostgreSQL (``-m immediate``); returns seconds until it accepts again."""
        self._refuse_if_shared("restart")
        started = time.monotonic()
        _command(["pg_ctlcluster", self.version, self.name, "restart", "-m", "immediate"])
        self.wait_ready()
        return time.monotonic() - started

    def terminate_backends(self, dbname: str) -> int:
        """End every session on ``dbname`` but this one (the service's connections); returns
        how many were ended."""
        with self.admin() as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchall()
        return sum(1 for (ended,) in rows if ended)

    def _refuse_if_shared(self, what: str) -> None:
        if self.is_shared and not self.allow_shared:
            raise ClusterError(
                f"refusing to {what} the shared cluster {self.version}/{self.name} on port "
                f"{self.port}: others' runs use it (pass --allow-shared-cluster under CI only)"
            )

    # -- databases ------------------------------------------------------------------------------

    def create_database(self, dbname: str) -> None:
        with self.admin() as admin:
            admin.execute(f'CREATE DATABASE "{_identifier(dbname)}"')

    def drop_database(self, dbname: str) -> None:
        with self.admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{_identifier(dbname)}" WITH (FORCE)')


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"not a plain database name: {name!r}")
    return name


def _command(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ClusterError(f"{' '.join(args)}: {error}") from None
    if done.returncode != 0:
        raise ClusterError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done
