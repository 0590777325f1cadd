"""An operator points a command at the wrong place: each mistake is said in one line, exits
non-zero, and the wrong database is left as it was (issue 12, "Messages people read")."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from projections.store import open_application
from tests.conftest import drop_pg_database, make_pg_database, pg_url, store_settings
from tests.http.conftest import cli_workdir, ledger_command

TIMEOUT_S = 120


def ledger(database_url: str, *args: str, cwd: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ledger_command(), *args], capture_output=True, text=True, timeout=TIMEOUT_S,
        cwd=cwd or cli_workdir(),
        env={"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": database_url,
             "LEDGER_CHAIN_KEY_FILE": os.environ["LEDGER_CHAIN_KEY_FILE"],
             "LEDGER_TOKENS": "cs:one-line-test-token"},
    )


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture(params=["sqlite", "postgres"])
def foreign_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that is not the ledger's: another program's table in it."""
    if request.param == "sqlite":
        path = tmp_path / "shop.db"
        with sqlite3.connect(path) as connection:
            connection.execute("CREATE TABLE customers (name TEXT)")
        yield f"sqlite:///{path}"
        return
    name = make_pg_database()
    try:
        with psycopg.connect(pg_url(name)) as connection:
            connection.execute("CREATE TABLE customers (name TEXT)")
        yield pg_url(name)
    finally:
        drop_pg_database(name)


def tables(url: str) -> set[str]:
    settings = store_settings(url)
    if settings.sqlite_path is not None:
        with sqlite3.connect(settings.sqlite_path) as connection:
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {r[0] for r in rows}
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        return {r[0] for r in rows}


def test_verify_against_another_programs_database_says_there_is_no_ledger_there(
    foreign_database: str,
) -> None:
    result = ledger(foreign_database, "verify")
    assert result.returncode == 2
    assert "there is no ledger in" in one_line(result.stderr)
    assert "ok" not in result.stdout
    # and it made none of the ledger's tables there
    assert tables(foreign_database) == {"customers"}


@pytest.mark.parametrize("command", [["rebuild"], ["digest"], ["export", "--format", "beancount"]])
def test_the_other_commands_refuse_another_programs_database_too(
    foreign_database: str, command: list[str]
) -> None:
    result = ledger(foreign_database, *command)
    assert result.returncode == 2
    assert "there is no ledger in" in one_line(result.stderr)
    assert tables(foreign_database) == {"customers"}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_verify_of_a_ledger_that_holds_no_events_is_not_called_ok(
    kind: str, tmp_path: Path
) -> None:
    name = None
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/ledger.db"
    else:
        name = make_pg_database()
        url = pg_url(name)
    try:
        open_application(store_settings(url, pool_size=1)).close()
        result = ledger(url, "verify")
        assert result.returncode == 1
        assert "holds no events" in one_line(result.stderr)
        assert result.stdout == ""
    finally:
        if name is not None:
            drop_pg_database(name)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:1/ledger",  # nothing listens there
        "postgresql://postgres@127.0.0.1:5432/no_such_database_for_the_ledger",
    ],
)
@pytest.mark.parametrize("command", [["verify"], ["rebuild"], ["digest"]])
def test_a_database_that_cannot_be_reached_is_said_in_one_line(
    url: str, command: list[str]
) -> None:
    result = ledger(url, *command)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith(f"ledger {command[0]}: cannot reach the database")
    assert "LEDGER_DATABASE_URL" in line


def test_serve_with_a_database_that_cannot_be_reached_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    result = ledger("postgresql://postgres@127.0.0.1:1/ledger", "serve", "--port", "1",
                    cwd=tmp_path)
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("ledger serve: cannot reach the database")
