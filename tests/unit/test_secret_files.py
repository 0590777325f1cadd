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
from projections.seal import create_key


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
