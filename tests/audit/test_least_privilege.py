"""Least privilege on PostgreSQL: ``ledger migrate --grant-to ROLE`` run as the owner, then the
ledger used as ROLE, a role of the test's own (dropped after). ROLE writes and reads history
with no DDL, and the database refuses it every way of rewriting history.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from projections.checkpoints import Notary
from projections.notes import load_or_create_signer
from projections.privileges import SCHEMA_VERSION, excess_privilege
from projections.store import open_application
from tests.audit.history import History, RandomChooser
from tests.conftest import drop_pg_database, make_pg_database, pg_url, store_settings
from tests.http.conftest import TOKENS, ledger_command, start_server

HISTORY = ("ledger_events", "ledger_chain", "ledger_merkle_leaves", "ledger_checkpoints")


@pytest.fixture
def granted() -> Iterator[tuple[str, str]]:
    """(owner's URL, ROLE's URL) of a migrated database granted to a new role."""
    name, role = make_pg_database(), f"ledger_svc_{uuid.uuid4().hex[:10]}"
    owner_url = pg_url(name)
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        migrated = subprocess.run(
            [*ledger_command(), "migrate", "--grant-to", role], capture_output=True, text=True,
            timeout=120, env={**os.environ, "LEDGER_DATABASE_URL": owner_url})
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert "ledger_events: SELECT, INSERT" in migrated.stdout
        yield owner_url, owner_url.replace("://postgres@", f"://{role}@", 1)
    finally:
        with psycopg.connect(owner_url, autocommit=True) as db:
            db.execute(f'DROP OWNED BY "{role}"')
        drop_pg_database(name)
        with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_the_granted_role_writes_history_but_cannot_rewrite_it(
    granted: tuple[str, str], tmp_path: object
) -> None:
    owner_url, role_url = granted
    assert "://postgres@" in owner_url
    settings = store_settings(role_url, pool_size=2)
    # The owner is told it holds too much; the role is not
    assert excess_privilege(store_settings(owner_url)) is not None
    assert excess_privilege(settings) is None
    # The role records and seals events, and the notary signs them, with no DDL
    app = open_application(settings, may_create_key=False)
    try:
        History(app, RandomChooser(seed=2)).run(8)
        signer = load_or_create_signer(settings.chain_key_file.with_name("sign.key"),
                                       "ledger.test/log", may_create=True)
        notary = Notary(app.recorder, signer, None)
        assert notary.round(force_checkpoint=True) is not None
    finally:
        app.close()
    # And every way of rewriting history is refused to it
    refused = []
    for table in HISTORY:
        for statement in (f"UPDATE {table} SET {_column(table)} = {_column(table)}",
                          f"DELETE FROM {table}",
                          f"TRUNCATE {table}",
                          f"ALTER TABLE {table} DISABLE TRIGGER ALL",
                          f"DROP TABLE {table}"):
            with psycopg.connect(role_url, autocommit=True) as db:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    db.execute(statement)  # type: ignore[arg-type]
                refused.append(statement)
        with psycopg.connect(role_url, autocommit=True) as db:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute("SET session_replication_role = replica")
    assert len(refused) == 5 * len(HISTORY)


def _column(table: str) -> str:
    return {"ledger_events": "state", "ledger_chain": "hash",
            "ledger_merkle_leaves": "hash", "ledger_checkpoints": "note"}[table]


def test_serving_as_the_owner_is_refused_when_least_privilege_is_required(
    granted: tuple[str, str]
) -> None:
    owner_url, _ = granted
    served = subprocess.run(
        [*ledger_command(), "serve", "--port", "1"], capture_output=True, text=True,
        timeout=60, env={**os.environ, "LEDGER_DATABASE_URL": owner_url,
                         "LEDGER_TOKENS": "auditor:a-token-for-the-test-0123",
                         "LEDGER_REQUIRE_LEAST_PRIVILEGE": "1"})
    assert served.returncode == 2, served.stdout + served.stderr
    assert "superuser" in served.stderr and "LEDGER_REQUIRE_LEAST_PRIVILEGE=1" in served.stderr


def test_the_service_serves_as_the_granted_role_with_least_privilege_required(
    granted: tuple[str, str], tmp_path: Path
) -> None:
    _, role_url = granted
    server = start_server(role_url, tmp_path, env={"LEDGER_REQUIRE_LEAST_PRIVILEGE": "1"})
    try:
        token = {"Authorization": f"Bearer {TOKENS['system']}"}
        opened = requests_json(f"{server.base_url}/v1/accounts", token,
                               {"username": "ann.lee", "currency": "USD"})
        assert opened["username"] == "ann.lee"
        account = requests_json(f"{server.base_url}/v1/accounts/ann.lee", token)
        assert account["posted"] == 0
        ready = requests_json(f"{server.base_url}/ready", token)
        assert ready["status"] == "ready" and "privilege" not in ready
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()


def requests_json(url: str, headers: dict[str, str], body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={
        **headers, **({"Content-Type": "application/json"} if data else {})})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.fixture
def owned_by_a_login() -> Iterator[str]:
    """The URL of a migrated database whose tables a plain (not superuser) login owns."""
    name, role = f"ledger_test_{uuid.uuid4().hex[:12]}", f"ledger_own_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')
    url = pg_url(name).replace("://postgres@", f"://{role}@", 1)
    try:
        migrated = subprocess.run(
            [*ledger_command(), "migrate"], capture_output=True, text=True, timeout=120,
            env={**os.environ, "LEDGER_DATABASE_URL": url})
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        yield url
    finally:
        drop_pg_database(name)
        with psycopg.connect(pg_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.parametrize("login", ["superuser", "owner"])
def test_serving_with_more_than_it_needs_is_said_at_start_and_in_ready(
    login: str, granted: tuple[str, str], owned_by_a_login: str, tmp_path: Path
) -> None:
    # Given the service started, least privilege not required, as a superuser or as the
    # (plain) login that owns the events' table
    url = granted[0] if login == "superuser" else owned_by_a_login
    server = start_server(url, tmp_path, env={"LEDGER_REQUIRE_LEAST_PRIVILEGE": None})
    try:
        # Then it serves, and /ready says what it could do
        ready = requests_json(f"{server.base_url}/ready",
                              {"Authorization": f"Bearer {TOKENS['auditor']}"})
    finally:
        assert server.stop() == 0, server.log()
    said = {"superuser": "a superuser: it could rewrite history",
            "owner": "the owner of the events' table: it could switch the guards off"}[login]
    assert said in ready["privilege"], ready
    # and its log said it at start, as a WARNING
    warnings = [json.loads(line) for line in server.log().splitlines()
                if line.startswith("{") and '"WARNING"' in line]
    assert any(said in w["message"] for w in warnings), server.log()


def test_migrate_run_as_the_granted_role_says_it_cannot_and_changes_nothing(
    granted: tuple[str, str],
) -> None:
    """Run with the service's own URL, migrate used to say "the schema is in place" having
    added nothing: an upgrade that looked done left the service half working."""
    _, role_url = granted
    migrated = subprocess.run(
        [*ledger_command(), "migrate"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "LEDGER_DATABASE_URL": role_url})
    assert migrated.returncode == 2, migrated.stdout + migrated.stderr
    assert "in place" not in migrated.stdout
    assert "does not own the ledger's tables" in migrated.stderr
    assert "Traceback" not in migrated.stderr


def test_migrate_grant_to_a_role_that_does_not_exist_is_refused_in_one_line(
    granted: tuple[str, str],
) -> None:
    owner_url, _ = granted
    migrated = subprocess.run(
        [*ledger_command(), "migrate", "--grant-to", "no_such_role_here"], capture_output=True,
        text=True, timeout=120, env={**os.environ, "LEDGER_DATABASE_URL": owner_url})
    assert migrated.returncode == 2, migrated.stdout + migrated.stderr
    assert migrated.stderr.strip() == ("ledger migrate: --grant-to no_such_role_here: there is "
                                       "no such role in this database's server (CREATE ROLE it "
                                       "first)")


@pytest.mark.parametrize("command", [["rebuild"], ["webhooks", "list"], ["checkpoint"]])
def test_what_only_the_owner_may_do_is_refused_to_the_granted_role_in_one_line(
    granted: tuple[str, str], tmp_path: Path, command: list[str],
) -> None:
    _, role_url = granted
    done = subprocess.run(
        [*ledger_command(), *command], capture_output=True, text=True, timeout=120,
        cwd=tmp_path, env={**os.environ, "LEDGER_DATABASE_URL": role_url})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"ledger {command[0]}: the database refused it (permission denied")
    assert line.endswith("run it with the tables' owner's LEDGER_DATABASE_URL")


def test_migrate_waits_a_bounded_time_for_tables_in_use(granted: tuple[str, str]) -> None:
    """Its CREATE INDEX queued behind a long transaction waited as long as that did, holding
    every writer in line behind it."""
    owner_url, _ = granted
    with psycopg.connect(owner_url) as holder:  # a writer's transaction that does not end
        holder.execute("LOCK TABLE ledger_events IN ROW EXCLUSIVE MODE")
        migrated = subprocess.run(
            [*ledger_command(), "migrate"], capture_output=True, text=True, timeout=120,
            env={**os.environ, "LEDGER_DATABASE_URL": owner_url})
        holder.rollback()
    assert migrated.returncode == 1, migrated.stdout + migrated.stderr
    assert "Traceback" not in migrated.stderr
    assert migrated.stderr.strip().splitlines()[-1] == (
        "ledger migrate: the tables are in use: a lock was not given within 5 s (nothing was "
        "changed by the statement that waited); try again")


@pytest.mark.parametrize(("older", "recorded"), [
    ("DROP TABLE ledger_schema", "unrecorded"),
    ("DELETE FROM ledger_schema", "unrecorded"),
    # the version before the outbox's heads (ob_scans), which the role cannot make
    (f"DELETE FROM ledger_schema WHERE version > {SCHEMA_VERSION - 1}; DROP TABLE ob_scans;"
     f" INSERT INTO ledger_schema VALUES ({SCHEMA_VERSION - 1}) ON CONFLICT DO NOTHING",
     str(SCHEMA_VERSION - 1)),
])
def test_the_granted_role_does_not_serve_a_schema_older_than_the_ledger(
    granted: tuple[str, str], tmp_path: Path, older: str, recorded: str,
) -> None:
    """A store migrated by an older ledger (its schema unrecorded, or an older version): the
    role cannot add what is missing, and served it half working (every keyed write 500, the
    keeper failing) while /ready said ready. It now refuses to start, saying who must act."""
    owner_url, role_url = granted
    with psycopg.connect(owner_url, autocommit=True) as owner:
        owner.execute(older)
    served = subprocess.run(
        [*ledger_command(), "serve", "--port", "1"], capture_output=True, text=True,
        timeout=60, cwd=tmp_path, env={**os.environ, "LEDGER_DATABASE_URL": role_url,
                                       "LEDGER_TOKENS": "auditor:a-token-for-the-test-0123"})
    assert served.returncode == 2, served.stdout + served.stderr
    role = role_url.split("://", 1)[1].split("@", 1)[0]
    assert served.stderr.strip().splitlines()[-1] == (
        f"ledger serve: the schema is older than this ledger's (version {recorded}; it needs "
        f"{SCHEMA_VERSION}), and {role} may not upgrade it: run ledger migrate --grant-to "
        f"{role} with the tables' owner's LEDGER_DATABASE_URL")
    # and the owner's migrate, granting the role again, lets it serve
    migrated = subprocess.run(
        [*ledger_command(), "migrate", "--grant-to", role], capture_output=True, text=True,
        timeout=120, env={**os.environ, "LEDGER_DATABASE_URL": owner_url})
    assert migrated.returncode == 0, migrated.stderr
    server = start_server(role_url, tmp_path, env={"LEDGER_REQUIRE_LEAST_PRIVILEGE": "1"})
    server.stop()
