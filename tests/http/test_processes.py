"""``ledger serve`` as a process: configuration at start, several processes, a clean stop."""

from __future__ import annotations

import contextlib
import signal
import stat
import subprocess
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.http.conftest import (
    Api,
    free_port,
    ledger_command,
    metric,
    start_server,
    store,
    tokens_env,
    until,
)


async def test_a_write_acknowledged_by_one_process_is_read_by_the_other_at_once(
    tmp_path: Path,
) -> None:
    with store("postgres", tmp_path) as url:
        servers = []
        try:
            for _ in range(2):  # one at a time: a server that started is stopped, whatever fails
                servers.append(start_server(url, tmp_path))
            async with aiohttp.ClientSession(servers[0].base_url) as s1, \
                    aiohttp.ClientSession(servers[1].base_url) as s2:
                one, two = Api(s1), Api(s2)
                username = await one.open_account()
                for n in range(1, 11):
                    writer, reader = (one, two) if n % 2 else (two, one)
                    reply = await writer.post(f"/v1/accounts/{username}/deposits",
                                              {"amount": 7, "reference": f"x{n}"})
                    assert reply.status == 201, reply.text
                    assert (await reader.account(username))["posted"] == 7 * n
        finally:
            exit_codes = [server.stop() for server in servers]
        assert exit_codes == [0, 0], [server.log() for server in servers]


def test_sigterm_stops_the_server_cleanly(store_url: str, tmp_path: Path) -> None:
    server = start_server(store_url, tmp_path)
    assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()


def test_without_ledger_tokens_it_makes_tokens_once_and_keeps_them(
    store_url: str, tmp_path: Path
) -> None:
    server = start_server(store_url, tmp_path, env={"LEDGER_TOKENS": None})
    try:
        printed = server.log()
    finally:
        assert server.stop() == 0
    tokens_file = tmp_path / "var" / "tokens"
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    lines = tokens_file.read_text().split()
    assert sorted(line.split(":")[0] for line in lines) == ["auditor", "cs", "finance", "system"]
    for line in lines:
        assert line in printed  # the operator is told them at start
    restarted = start_server(store_url, tmp_path, env={"LEDGER_TOKENS": None})
    try:
        assert tokens_file.read_text().split() == lines
        system_token = next(line for line in lines if line.startswith("system:")).split(":")[1]
        request = urllib.request.Request(f"{restarted.base_url}/ready",
                                         headers={"Authorization": f"Bearer {system_token}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200
    finally:
        restarted.stop()


@pytest.mark.parametrize(
    "tokens",
    [
        "wizard:abc",  # unknown role
        "system:",  # empty token
        "system",  # no token at all
        f"system:same,cs:same,{tokens_env()}",  # one token for two roles
        "",
    ],
)
def test_bad_ledger_tokens_refuse_to_start(tmp_path: Path, tokens: str) -> None:
    result = subprocess.run(
        [*ledger_command(), "serve", "--port", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "LEDGER_TOKENS": tokens,
             "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/l.db"},
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "ledger serve:" in result.stderr
    assert not (tmp_path / "l.db").exists()  # refused before touching the store


def test_a_bad_database_url_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [*ledger_command(), "serve", "--port", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "LEDGER_TOKENS": tokens_env(),
             "LEDGER_DATABASE_URL": "mysql://nope/db"},
    )
    assert result.returncode == 2
    assert "LEDGER_DATABASE_URL" in result.stderr


@pytest.mark.parametrize(("keeper", "said"), [
    ("process", "LEDGER_KEEPER=process needs PostgreSQL"),
    ("fork", "LEDGER_KEEPER"),
])
def test_a_keeper_setting_that_cannot_be_had_refuses_to_start(
    tmp_path: Path, keeper: str, said: str
) -> None:
    result = subprocess.run(
        [*ledger_command(), "serve", "--port", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "LEDGER_TOKENS": tokens_env(), "LEDGER_KEEPER": keeper,
             "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/l.db"},
    )
    assert result.returncode == 2, result.stderr
    assert said in result.stderr
    assert "Traceback" not in result.stderr


SECRET_FILES = {
    # the file, what it holds (a secret of the right form), where it is named
    "tokens": ("var/tokens", "system:{hex}\n", None),
    "chain key": ("keys/chain.key", "{hex}{hex}\n", "LEDGER_CHAIN_KEY_FILE"),
    "signing key": ("keys/signing.key", "{hex}{hex}\n", "LEDGER_SIGNING_KEY_FILE"),
}


@pytest.mark.parametrize("kind", list(SECRET_FILES))
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o602])
def test_a_file_of_secrets_others_may_read_or_write_is_refused_at_start(
    tmp_path: Path, kind: str, mode: int
) -> None:
    """As ssh refuses a private key others can read: whoever reads the tokens acts as their
    roles, whoever reads the chain key can forge history, whoever reads the signing key can
    sign checkpoints in the service's name. The service refuses to start in one line naming
    the file, its mode and what to do, and never repeats the secret."""
    relative, form, variable = SECRET_FILES[kind]
    secret_file = tmp_path / relative
    secret_file.parent.mkdir()
    secret = uuid.uuid4().hex
    secret_file.write_text(form.format(hex=secret))
    secret_file.chmod(mode)
    env = {"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/l.db"}
    if variable is not None:
        env[variable] = str(secret_file)
    result = subprocess.run(
        [*ledger_command(), "serve", "--port", str(free_port())],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 2, result.stderr
    named = str(secret_file) if variable is not None else relative  # as configured
    assert f"{named} is open to other users (mode {mode:o}): chmod 600 it" in result.stderr
    assert "Traceback" not in result.stderr
    assert secret not in result.stdout + result.stderr


def test_the_public_half_of_a_signing_key_is_read_from_any_file(tmp_path: Path) -> None:
    """Printing a signing key's public half (to give auditors) signs nothing: a key file others
    may read is refused for signing (above), not for that."""
    key = tmp_path / "signing.key"
    key.write_text(uuid.uuid4().hex * 2 + "\n")
    key.chmod(0o644)
    env = {"PATH": "/usr/bin:/bin", "LEDGER_SIGNING_KEY_FILE": str(key)}
    printed = subprocess.run([*ledger_command(), "keys", "public"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, env=env)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("ledger.local/log+")


def spawned_by(pid: int) -> set[int]:
    """The processes ``pid`` spawned with ``multiprocessing`` that still run (Linux:
    /proc/PID/task/*/children; multiprocessing's resource tracker is not one of them)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.update(int(c) for c in (task / "children").read_text().split())
    return {child for child in found if b"spawn_main" in _cmdline(child)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def gone(pid: int) -> bool:
    """The process ended and was reaped (a zombie counts as gone: it runs nothing)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[1].split()[0] == "Z"


KEEPER_WAIT_S = 20.0


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
async def test_on_postgresql_the_keeper_and_page_maker_are_children_ending_with_the_server(
    tmp_path: Path, how: signal.Signals
) -> None:
    with store("postgres", tmp_path) as url:
        server = start_server(url, tmp_path)
        try:
            async with aiohttp.ClientSession(server.base_url) as session:
                api = Api(session)
                username = await api.open_account()
                reply = await api.post(f"/v1/accounts/{username}/deposits",
                                       {"amount": 7, "reference": "k1"})
                assert reply.status == 201, reply.text
                assert (await api.account(username))["posted"] == 7  # kept by the child
                await until(lambda: len(spawned_by(server.process.pid)) == 1,
                            "the server has spawned its keeper", timeout_s=KEEPER_WAIT_S)
                page = await api.get("/v1/events?limit=10", role="auditor")  # by the other
                assert page.status == 200 and len(page.json["items"]) == 2, page.text
                assert await metric(api, "ledger_event_pages_made_by_child") == 1
            children = spawned_by(server.process.pid)
            assert len(children) == 2, children
            server.process.send_signal(how)
            server.process.wait(30)
            await until(lambda: all(gone(child) for child in children),
                        "the children end with the server", timeout_s=KEEPER_WAIT_S)
        finally:
            server.stop()
        if how == signal.SIGTERM:
            assert server.process.returncode == 0, server.log()
            assert "Traceback" not in server.log()
