"""An operator's mistakes at the command line: a store URL that cannot be read, a file that
cannot be written, a name that could forge a line. Each is said in one line, in words, with a
non-zero exit and no traceback, and the URL's password is never repeated."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.identity import Actor
from projections.notes import Signer
from projections.store import open_application
from tests.conftest import store_settings
from tests.http.conftest import cli_workdir, ledger_command
from tests.http.conftest import store as store_of

TIMEOUT_S = 120
PASSWORD = "pw-7f3a9c"
ACTOR = Actor("cs:cli-mistakes", "test-cli-mistakes")


def ledger(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ledger_command(), *args], capture_output=True, text=True, timeout=TIMEOUT_S,
        cwd=cli_workdir(),
        env={"PATH": "/usr/bin:/bin", "LEDGER_DATABASE_URL": database_url,
             "LEDGER_CHAIN_KEY_FILE": os.environ["LEDGER_CHAIN_KEY_FILE"],
             "LEDGER_TOKENS": "cs:cli-mistakes-token", **env},
    )


def refused(result: subprocess.CompletedProcess[str], exit_code: int = 2) -> str:
    """The one line a refused command said."""
    assert result.returncode == exit_code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def refused_at_start(result: subprocess.CompletedProcess[str]) -> str:
    """The line a refused command ended with (``serve`` may have warned first: a superuser)."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and '"level":"ERROR"' not in result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An SQLite ledger holding a customer's deposit."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli-mistakes')}/ledger.db"
    app = open_application(store_settings(url, pool_size=1))
    try:
        app.open_account("alice", "USD", actor=ACTOR)
        app.deposit("alice", 1_000, "PAY-1", actor=ACTOR)
    finally:
        app.close()
    yield url


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ledger of each kind holding one account, of the test's own."""
    with store_of(request.param, tmp_path) as url:
        app = open_application(store_settings(url, pool_size=1))
        try:
            app.open_account("alice", "USD", actor=ACTOR)
        finally:
            app.close()
        yield url


UNREADABLE_URLS = [
    f"postgresql://ledger:{PASSWORD}/ledger",  # no host: the password is read as the port
    f"postgresql://ledger:{PASSWORD}@127.0.0.1:port/ledger",
    f"postgresql://ledger:{PASSWORD}@[::1/ledger",
]


@pytest.mark.parametrize("url", UNREADABLE_URLS)
@pytest.mark.parametrize("command", [["digest"], ["verify"], ["migrate"],
                                     ["serve", "--port", "1"]])
def test_a_store_url_that_cannot_be_read_is_refused_without_repeating_its_password(
    url: str, command: list[str],
) -> None:
    line = refused(ledger(url, *command))
    assert "LEDGER_DATABASE_URL cannot be read as a URL" in line
    assert PASSWORD not in line


@pytest.mark.parametrize("command", [["digest", "-o"], ["export", "--format", "events", "-o"]])
def test_an_output_file_in_a_folder_that_does_not_exist_is_refused_in_one_line(
    store: str, tmp_path: Path, command: list[str],
) -> None:
    target = tmp_path / "no-such-folder" / "out.txt"
    line = refused(ledger(store, *command, str(target)))
    assert f"{target}: No such file or directory" in line
    assert not target.parent.exists()


def test_a_checkpoint_file_that_cannot_be_written_is_said_before_anything_is_signed(
    store: str, tmp_path: Path,
) -> None:
    key = tmp_path / "signing.key"
    line = refused(ledger(store, "checkpoint", LEDGER_SIGNING_KEY_FILE=str(key),
                          LEDGER_CHECKPOINT_FILE=str(tmp_path)))  # a folder
    assert f"cannot append checkpoints to {tmp_path} (LEDGER_CHECKPOINT_FILE)" in line
    # and a writable file afterwards gets the first checkpoint (none was stored unseen)
    kept = tmp_path / "checkpoints.txt"
    signed = ledger(store, "checkpoint", LEDGER_SIGNING_KEY_FILE=str(key),
                    LEDGER_CHECKPOINT_FILE=str(kept))
    assert signed.returncode == 0, signed.stderr
    assert kept.read_text().strip() == signed.stdout.strip()


def test_a_signing_key_that_cannot_be_made_is_refused_in_one_line(any_store: str,
                                                                  tmp_path: Path) -> None:
    # (a store with no checkpoint yet: one with checkpoints takes only their key)
    line = refused(ledger(any_store, "checkpoint",
                          LEDGER_SIGNING_KEY_FILE="/proc/self/no-such-folder/signing.key",
                          LEDGER_CHECKPOINT_FILE=str(tmp_path / "checkpoints.txt")))
    assert "cannot make a signing key at /proc/self/no-such-folder/signing.key" in line


@pytest.mark.parametrize("by", ["evil\nmallory\tfinance\tactive", "two words", "x" * 65])
def test_staff_changed_by_a_name_that_could_forge_a_line_is_refused(store: str, by: str) -> None:
    line = refused(ledger(store, "staff", "add", "carol", "--role", "cs", "--by", by))
    assert line.startswith("ledger staff add: --by is 1-64 letters")
    listed = ledger(store, "staff", "list")
    assert listed.returncode == 0, listed.stderr
    assert "carol" not in listed.stdout and "mallory" not in listed.stdout


def test_staff_changed_by_an_email_like_name_is_recorded(store: str) -> None:
    added = ledger(store, "staff", "add", "dana", "--role", "cs", "--by", "ann.lee@corp")
    assert added.returncode == 0, added.stderr
    listed = ledger(store, "staff", "list").stdout
    assert "by system:ann.lee@corp" in listed


def test_a_checkpoint_file_that_is_not_text_is_refused_in_one_line(store: str,
                                                                   tmp_path: Path) -> None:
    key = Signer("ledger.mistakes", Ed25519PrivateKey.generate()).verifier.text()
    binary = tmp_path / "checkpoints.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80\n\n")
    line = refused(ledger(store, "verify", "--key", key, "--checkpoint", str(binary)))
    assert f"{binary} is not a file of checkpoints" in line


def test_a_url_to_remove_written_without_its_scheme_is_not_repeated(store: str) -> None:
    line = refused(ledger(store, "webhooks", "remove", "hookuser:s3cr3t-pw@mailer.example/hooks"),
                   exit_code=1)
    assert "s3cr3t-pw" not in line and "is not subscribed" in line, line


def test_a_store_with_checkpoints_takes_no_other_signing_key(any_store: str, tmp_path: Path
                                                             ) -> None:
    """A second host started without the key file (or from another folder) made a new key:
    the whole history then read as damaged there, and its checkpoints made every other server
    refuse writes. The store's key is now required, and said."""
    url = any_store
    # Given a checkpoint signed with the store's key
    key = tmp_path / "signing.key"
    signed = ledger(url, "checkpoint", LEDGER_SIGNING_KEY_FILE=str(key))
    assert signed.returncode == 0, signed.stderr
    public = ledger(url, "keys", "public", LEDGER_SIGNING_KEY_FILE=str(key)).stdout.strip()
    name_and_hash = "+".join(public.split("+")[:2])

    other = tmp_path / "other.key"
    other.write_text(Ed25519PrivateKey.generate().private_bytes_raw().hex() + "\n")
    other.chmod(0o600)
    missing = tmp_path / "elsewhere" / "signing.key"
    for command in (["checkpoint"], ["serve", "--port", "1"]):
        # When a command is given another key, or none where the key should be
        wrong = refused_at_start(ledger(url, *command, LEDGER_SIGNING_KEY_FILE=str(other)))
        absent = refused_at_start(ledger(url, *command, LEDGER_SIGNING_KEY_FILE=str(missing)))
        # Then it refuses in one line naming the key the store's checkpoints are signed with
        assert f"the signing key at {other} (LEDGER_SIGNING_KEY_FILE) is" in wrong
        assert f"no signing key at {missing}" in absent
        for line in (wrong, absent):
            assert f"signed with the key {name_and_hash}" in line
        assert not missing.exists()  # and makes no key
    assert ledger(url, "checkpoint", LEDGER_SIGNING_KEY_FILE=str(key)).returncode == 0


def test_serve_refuses_a_checkpoint_file_it_cannot_append_to(store: str, tmp_path: Path) -> None:
    """It started, and every checkpoint failed to be kept outside the database, each with a
    traceback, while /ready said ready: the copy auditors trust silently stopped growing."""
    line = refused_at_start(ledger(store, "serve", "--port", "1",
                                   LEDGER_SIGNING_KEY_FILE=str(tmp_path / "signing.key"),
                                   LEDGER_CHECKPOINT_FILE=str(tmp_path)))  # a folder
    assert line == (f"ledger serve: cannot append checkpoints to {tmp_path} "
                    "(LEDGER_CHECKPOINT_FILE): Is a directory")


@pytest.mark.parametrize("interval", ["0", "-5", "nan", "3601"])
def test_serve_refuses_a_checkpoint_interval_out_of_bounds_in_one_line(store: str,
                                                                      interval: str) -> None:
    line = refused_at_start(ledger(store, "serve", "--port", "1",
                                   LEDGER_CHECKPOINT_INTERVAL_S=interval))
    assert line == "ledger serve: LEDGER_CHECKPOINT_INTERVAL_S is 0.05..3600.0 s"


def test_serve_on_a_port_in_use_is_refused_in_one_line(any_store: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused_at_start(ledger(any_store, "serve", "--port", str(port),
                                       LEDGER_SIGNING_KEY_FILE=str(tmp_path / "signing.key")))
    assert line == f"ledger serve: cannot listen on 127.0.0.1 port {port}: Address already in use"
