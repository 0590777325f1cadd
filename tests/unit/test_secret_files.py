"""Files of secrets (the chain key, the checkpoints' signing key, the role tokens) are made
whole or not at all, readable by their owner alone, and never replaced once there
(``projections.seal.write_secret``)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from api.auth import load_or_create
from projections.notes import load_or_create_signer
from projections.seal import create_key, open_to_others


@pytest.mark.parametrize("make", [
    lambda path: create_key(path),
    lambda path: load_or_create_signer(path, "ledger.example", may_create=True),
    lambda path: load_or_create(path),
], ids=["the chain key", "the signing key", "the role tokens"])
def test_a_file_of_secrets_is_made_whole_or_not_at_all_and_only_its_owner_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[Path], object],
) -> None:
    path = tmp_path / "var" / "secret"

    # Given the disk fails as the new file is made durable (a crash at that moment, as seen)
    def fails(_: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as failing:
        failing.setattr(os, "fsync", fails)
        with pytest.raises(OSError):
            make(path)
    # then nothing is left where it goes, not half a file (the next start makes it whole)
    assert sorted(p.name for p in path.parent.iterdir()) == []

    # When it is made, it is there whole, for its owner alone
    make(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    assert first.endswith(b"\n")
    # and a second making (another process, a second start) never replaces it
    make(path)
    assert path.read_bytes() == first


@pytest.mark.parametrize(("mode", "owner", "taken"), [
    (0o600, "the service", True),
    (0o400, "the service", True),
    (0o640, "the service", False),  # its own file: its group has no need of it
    (0o644, "the service", False),
    (0o640, "root", True),  # as PostgreSQL allows its key: root lends it to the group
    (0o440, "root", True),
    (0o660, "root", False),  # the group may change it
    (0o644, "root", False),  # anyone may read it
    (0o604, "root", False),
])
def test_a_file_of_secrets_is_taken_when_only_its_owner_or_roots_group_may_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int, owner: str, taken: bool,
) -> None:
    """Only a file its owner alone may read, or one root owns and lets the service's group
    read (a secrets volume's 0440), holds a secret the service uses."""
    path = tmp_path / "chain.key"
    path.write_text("ab" * 32 + "\n")
    path.chmod(mode)
    real = path.stat()
    # The file as owned by root (uid 0), the service running as another user, or as owned by
    # the service's own user.
    uid = 0 if owner == "root" else 1000
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(Path, "stat", lambda self, **kw: os.stat_result(
        (real.st_mode, real.st_ino, real.st_dev, real.st_nlink, uid, real.st_gid,
         real.st_size, int(real.st_atime), int(real.st_mtime), int(real.st_ctime))))
    refusal = open_to_others(path)
    assert (refusal is None) is taken, refusal
    if not taken:
        assert refusal == (f"{path} is open to other users (mode {mode:o}): chmod 600 it (or "
                           "640, owned by root, for the service's group to read)")
