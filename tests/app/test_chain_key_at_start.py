"""The chain key at start, on a store that holds events: the history itself says whether the
key file is the store's key, whatever the store's record of the key's fingerprint says; a
record changed or removed by SQL is named as such, and the start is refused either way."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.seal import ChainKey, ChainKeyError, read_key
from projections.store import open_application
from tests.app.conftest import open_funded
from tests.audit.conftest import Intruder

OTHER_SECRET = "ab" * 32
TAMPERED = "changed or removed behind the service's back (the key does seal its history)"
NOT_THE_KEY = "is not this store's key"


@pytest.fixture
def sealed_store(settings: StoreSettings, system: Actor) -> StoreSettings:
    """A store holding a few events sealed with the session's key, no process on it."""
    app = open_application(settings)
    try:
        open_funded(app, system)
    finally:
        app.close()
    return settings


@pytest.fixture
def other_key(tmp_path: Path) -> Path:
    path = tmp_path / "other.key"
    path.write_text(OTHER_SECRET + "\n")
    path.chmod(0o600)
    return path


def recorded_fingerprints(intruder: Intruder) -> list[str]:
    return [str(row[0]) for row in intruder.select("SELECT fingerprint FROM ledger_chain_key", ())]


def remove_the_record(intruder: Intruder) -> None:
    intruder.run("DELETE FROM ledger_chain_key", unguarded=True)


def change_the_record(intruder: Intruder, fingerprint: str) -> None:
    intruder.run("UPDATE ledger_chain_key SET fingerprint = %s", (fingerprint,), unguarded=True)


def refusal(settings: StoreSettings, key_file: Path | None = None) -> str:
    """What a start with ``key_file`` (the session's key by default) says as it refuses."""
    if key_file is not None:
        settings = replace(settings, chain_key_file=key_file)
    with pytest.raises(ChainKeyError) as refused:
        open_application(settings).close()
    message = str(refused.value)
    assert "\n" not in message  # one line, as the CLI prints it
    return message


def test_a_removed_fingerprint_record_is_named_and_the_right_key_still_refused(
    sealed_store: StoreSettings,
) -> None:
    # Given a store with events whose record of its key's fingerprint was deleted by SQL
    intruder = Intruder(sealed_store)
    remove_the_record(intruder)

    # When a process starts with the key that sealed it
    message = refusal(sealed_store)

    # Then it refuses, blaming the record, not the key, and writes no new record
    assert TAMPERED in message
    assert NOT_THE_KEY not in message and "earlier version" not in message
    assert read_key(sealed_store.chain_key_file).fingerprint in message
    assert recorded_fingerprints(intruder) == []


def test_a_changed_fingerprint_record_is_named_and_the_right_key_still_refused(
    sealed_store: StoreSettings,
) -> None:
    # Given a store with events whose record of its key's fingerprint was changed by SQL
    intruder = Intruder(sealed_store)
    change_the_record(intruder, "f" * 32)

    # When a process starts with the key that sealed it
    message = refusal(sealed_store)

    # Then it refuses, blaming the record, and leaves the record as it found it
    assert TAMPERED in message
    assert NOT_THE_KEY not in message
    assert recorded_fingerprints(intruder) == ["f" * 32]


def test_another_key_is_refused_as_not_the_store_s_key_when_the_record_was_removed(
    sealed_store: StoreSettings, other_key: Path,
) -> None:
    intruder = Intruder(sealed_store)
    remove_the_record(intruder)

    message = refusal(sealed_store, other_key)

    assert f"the chain key at {other_key}" in message and NOT_THE_KEY in message
    assert TAMPERED not in message and "earlier version" not in message
    assert recorded_fingerprints(intruder) == []


def test_another_key_is_refused_even_when_the_record_was_changed_to_name_it(
    sealed_store: StoreSettings, other_key: Path,
) -> None:
    # Given the record changed by SQL to the fingerprint of a key that never sealed the store
    intruder = Intruder(sealed_store)
    change_the_record(intruder, ChainKey(bytes.fromhex(OTHER_SECRET)).fingerprint)

    # When a process starts with that key, Then the history refuses it, and the record is named
    message = refusal(sealed_store, other_key)

    assert NOT_THE_KEY in message
    assert "the store's record of its key's fingerprint names this key" in message


def test_another_key_is_refused_as_not_the_store_s_key_when_the_record_is_intact(
    sealed_store: StoreSettings, other_key: Path,
) -> None:
    message = refusal(sealed_store, other_key)

    assert NOT_THE_KEY in message and "is not the key this store is sealed with" in message
    assert read_key(sealed_store.chain_key_file).fingerprint in message
    assert TAMPERED not in message


def test_no_key_is_made_for_a_store_with_events_whose_record_was_removed(
    sealed_store: StoreSettings, tmp_path: Path,
) -> None:
    intruder = Intruder(sealed_store)
    remove_the_record(intruder)
    missing = tmp_path / "missing.key"

    message = refusal(sealed_store, missing)

    assert f"there is no chain key at {missing}" in message
    assert not missing.exists()
    assert recorded_fingerprints(intruder) == []


def test_the_right_key_with_its_record_intact_starts(sealed_store: StoreSettings) -> None:
    app = open_application(sealed_store)
    try:
        assert app.recorder.chain_key == read_key(  # type: ignore[attr-defined]
            sealed_store.chain_key_file)
    finally:
        app.close()


def test_a_key_file_of_raw_bytes_is_refused_in_words_that_repeat_none_of_them(
    tmp_path: Path,
) -> None:
    """32 raw bytes from a secrets manager are no chain key (64 hex digits); the refusal is one
    line that quotes no byte of the secret (a decoding error's words would)."""
    raw = bytes(range(0xE0, 0x100))
    path = tmp_path / "raw.key"
    path.write_bytes(raw)
    path.chmod(0o600)
    with pytest.raises(ChainKeyError) as refused:
        read_key(path)
    assert str(refused.value) == f"{path} does not hold a chain key (64 hex digits)"


def test_a_store_of_an_earlier_version_with_an_unkeyed_chain_is_refused_in_words(
    settings: StoreSettings,
) -> None:
    """An earlier version chained its events with plain SHA-256 (``ledger_chain`` of
    position and hash only), which anyone who can write to the database can recompute. This
    ledger vouches for no such history: it refuses the store in one line saying why and what to
    do, where it used to fail on a missing column with a traceback."""
    earlier = ("CREATE TABLE ledger_chain (position BIGINT PRIMARY KEY, hash TEXT NOT NULL,"
               " CHECK (length(hash) = 64))")
    if settings.kind == "sqlite":
        assert settings.sqlite_path is not None
        with sqlite3.connect(settings.sqlite_path) as made:
            made.execute(earlier)
    else:
        with psycopg.connect(settings.url, autocommit=True) as made:
            made.execute(earlier)
    with pytest.raises(ChainKeyError) as refused:
        open_application(settings)
    assert str(refused.value).startswith(
        "the store's chain was made by an earlier version, whose links are plain SHA-256")
    assert str(refused.value).endswith("start this one on an empty store")
