"""The command's own face: ``--version``, a ``--help`` that imports no server stack, tokens
long enough to be secret and printed only when made."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.auth import MIN_TOKEN_LENGTH, TokenConfigError, Tokens
from tests.http.conftest import ledger_command, start_server, tokens_env

HEAVY = ("aiohttp", "psycopg", "psycopg_pool", "eventsourcing", "pydantic", "tqdm")


def test_version_says_the_packages_version() -> None:
    result = subprocess.run([*ledger_command(), "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"ledger {importlib.metadata.version('ledger')}"


def test_python_dash_m_api_cli_runs_the_command() -> None:
    """``python -m api.cli checkpoint`` in a cron job must sign, not exit 0 having done
    nothing."""
    done = subprocess.run([sys.executable, "-m", "api.cli", "--version"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert importlib.metadata.version("ledger") in done.stdout


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["serve", "--help"],
                                  ["verify", "--help"]])
def test_help_and_version_import_no_server_stack(argv: list[str]) -> None:
    script = (
        "import sys\n"
        f"sys.argv = ['ledger', *{argv!r}]\n"
        "from api import cli\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit as done:\n"
        "    assert done.code in (0, None), done.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_a_token_shorter_than_sixteen_characters_is_refused() -> None:
    with pytest.raises(TokenConfigError, match="at least 16"):
        Tokens.parse("system:" + "x" * (MIN_TOKEN_LENGTH - 1))
    assert Tokens.parse("system:" + "x" * MIN_TOKEN_LENGTH).identify("x" * 16) == "system"


def test_serve_refuses_a_short_token_in_words(tmp_path: Path) -> None:
    result = subprocess.run(
        [*ledger_command(), "serve", "--port", "1"], cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
        env={**os.environ, "LEDGER_TOKENS": f"{tokens_env()},cs:abc",
             "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/l.db"},
    )
    assert result.returncode == 2
    assert "ledger serve: the cs token has 3 characters: a token needs at least 16" in (
        result.stderr)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "l.db").exists()


def test_made_tokens_are_printed_once_not_at_every_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    first = start_server(url, tmp_path, env={"LEDGER_TOKENS": None})
    try:
        first_log = first.log()
    finally:
        first.stop()
    lines = (tmp_path / "var" / "tokens").read_text().split()
    assert len(lines) == 4
    for line in lines:
        assert line in first_log
        assert len(line.split(":", 1)[1]) >= MIN_TOKEN_LENGTH
    second = start_server(url, tmp_path, env={"LEDGER_TOKENS": None})
    try:
        second_log = second.log()
    finally:
        second.stop()
    assert "using the tokens in var/tokens" in second_log
    for line in lines:
        assert line.split(":", 1)[1] not in second_log


# -- the configuration is read once, at start, and a bad value stops the command ----------------

SECRET = "never-shown-" + "z" * 20
BAD_AT_START = [
    ("LEDGER_CHECKPOINT_INTERVAL_S", "soon", "LEDGER_CHECKPOINT_INTERVAL_S is not a number"),
    ("LEDGER_REQUIRE_LEAST_PRIVILEGE", "yes please",
     "LEDGER_REQUIRE_LEAST_PRIVILEGE is not 1 or 0"),
    ("LEDGER_MAX_CONNECTIONS", "many", "LEDGER_MAX_CONNECTIONS is not a whole number"),
    ("LEDGER_WEBHOOK_SECRET", SECRET, None),  # a good secret beside a bad number, below
]


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["digest"], ["keys", "public"]])
@pytest.mark.parametrize(("name", "value", "says"), BAD_AT_START,
                         ids=[name for name, _, _ in BAD_AT_START])
def test_a_setting_that_cannot_be_read_stops_the_command_in_one_line(
    tmp_path: Path, command: list[str], name: str, value: str, says: str | None
) -> None:
    env = {"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/l.db",
           "LEDGER_TOKENS": tokens_env(), name: value}
    if says is None:  # the secret is good: the line is about the number beside it
        env["LEDGER_WEBHOOK_CONCURRENCY"] = "none"
        says = "LEDGER_WEBHOOK_CONCURRENCY is not a whole number"
    result = subprocess.run([*ledger_command(), *command], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"ledger {command[0]}: ") and says in lines[0]
    assert SECRET not in result.stdout + result.stderr
    assert not list(tmp_path.iterdir())  # nothing made: no store, no key, no tokens file


@pytest.mark.parametrize("tokens", [f"{SECRET}:system", SECRET])
def test_a_token_written_in_the_wrong_place_is_never_repeated(tmp_path: Path,
                                                              tokens: str) -> None:
    result = subprocess.run(
        [*ledger_command(), "serve", "--port", "1"], cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/l.db",
             "LEDGER_TOKENS": tokens})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "LEDGER_TOKENS" in result.stderr or "role" in result.stderr
    assert SECRET not in result.stdout + result.stderr



@pytest.mark.parametrize(("name", "value", "says"), [
    ("LEDGER_WRITE_ROLE_WORKERS", "0", "LEDGER_WRITE_ROLE_WORKERS is 1.."),
    ("LEDGER_HEAVY_QUEUE_WAIT_S", "-1", "LEDGER_HEAVY_QUEUE_WAIT_S is in (0, "),
    ("LEDGER_REQUEST_DEADLINE_S", "0", "LEDGER_REQUEST_DEADLINE_S is in (0, "),
    ("LEDGER_MAX_ATTEMPTS", "0", "LEDGER_MAX_ATTEMPTS is 1.."),
    ("LEDGER_LOCK_TIMEOUT_S", "0", "LEDGER_LOCK_TIMEOUT_S is in (0, "),
])
def test_a_bound_out_of_range_is_refused_naming_its_variable(
    tmp_path: Path, name: str, value: str, says: str,
) -> None:
    env = {"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/l.db",
           "LEDGER_TOKENS": tokens_env(), name: value}
    result = subprocess.run([*ledger_command(), "serve", "--port", "1"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"ledger serve: {says}")
