"""The seal on every stored event: a keyed hash chain, made by the writer as it records.

Each event's link is ``HMAC-SHA-256(key, previous link ‖ position ‖ aggregate id ‖ version ‖
topic ‖ stored bytes)`` (each part length-prefixed, so no two joins read alike), computed by the
committer inside the transaction that records the event, which places the event right after
the link it knows (the one it last wrote, or the one it read under the writers' lock): a
position another writer took first fails the whole transaction. The key lives in a file outside
the database (``LEDGER_CHAIN_KEY_FILE``, read by ``ledger.settings``); the store keeps only its
fingerprint.
Someone who can write to the database but does not hold the key cannot make a valid link: an
event inserted, changed, removed or reordered behind the service's back shows as a position
whose link is missing, wrong, or does not follow the one before it.

A link row keeps the previous link beside its own, so one event's seal can be checked on its
own (loading an aggregate), and the chain's continuity by walking it (the keeper, ``verify``).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

GENESIS = "0" * 64
KEY_BYTES = 32


class ChainKeyError(RuntimeError):
    """The chain key is missing, unreadable, or not the key this store was sealed with."""


@dataclass(frozen=True)
class ChainKey:
    secret: bytes

    def __post_init__(self) -> None:
        assert len(self.secret) == KEY_BYTES, "a chain key is 32 bytes"

    @property
    def fingerprint(self) -> str:
        """What the store keeps to recognise the key: it reveals nothing of the secret."""
        return hashlib.sha256(b"ledger chain key\n" + self.secret).hexdigest()[:32]

    def link(
        self,
        previous: str,
        position: int,
        originator_id: UUID | str,
        version: int,
        topic: str,
        state: object,
    ) -> str:
        mac = hmac.new(self.secret, digestmod=hashlib.sha256)
        for part in (
            previous.encode(),
            str(position).encode(),
            _uuid_text(originator_id).encode(),
            str(version).encode(),
            topic.encode(),
            _raw(state),
        ):
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.hexdigest()

    @functools.cached_property
    def _messages_secret(self) -> bytes:
        return hmac.new(self.secret, b"ledger outbox messages", hashlib.sha256).digest()

    @functools.cached_property
    def _key_records_secret(self) -> bytes:
        return hmac.new(self.secret, b"ledger idempotency key records", hashlib.sha256).digest()

    def message_seal(self, text: str) -> str:
        """The seal of a message the service sends (an outbox message, as ``text``):
        HMAC-SHA-256 under a key derived from this one for messages alone, so that no message's
        seal ever reads as an event's link or a key record's seal, nor one as another."""
        return hmac.new(self._messages_secret, text.encode(), hashlib.sha256).hexdigest()

    def key_record_seal(self, text: str) -> str:
        """The seal of an idempotency key's record (as ``text``), under a key derived from
        this one for key records alone."""
        return hmac.new(self._key_records_secret, text.encode(), hashlib.sha256).hexdigest()

    def holds(
        self,
        link: str | None,
        previous: str | None,
        position: int,
        originator_id: UUID | str,
        version: int,
        topic: str,
        state: object,
    ) -> bool:
        """Whether ``link`` is this key's seal of the event after ``previous``."""
        if link is None or previous is None:
            return False
        expected = self.link(previous, position, originator_id, version, topic, state)
        return hmac.compare_digest(expected, link)


def seal_text(values: list[object]) -> str:
    """What a message's or a key record's seal covers: its values, in their order, as compact
    JSON (one encoder for every seal: ``json.dumps`` makes a new one at each call)."""
    return _compact_json(values)


_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def _uuid_text(originator_id: UUID | str) -> str:
    # SQLite stores ids as hex, PostgreSQL as UUIDs: seal the one canonical spelling.
    if isinstance(originator_id, UUID):
        return str(originator_id)
    try:
        return str(UUID(originator_id))
    except ValueError:
        return originator_id


def _raw(state: object) -> bytes:
    # A column changed behind the service's back may come back as another type: hash what is
    # there rather than fail, so the check names the position.
    if isinstance(state, bytes):
        return state
    if isinstance(state, memoryview | bytearray):
        return bytes(state)
    return str(state).encode()


def read_key(path: Path) -> ChainKey:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise ChainKeyError(f"no chain key at {path} (LEDGER_CHAIN_KEY_FILE)") from None
    except OSError as error:
        raise ChainKeyError(f"cannot read the chain key at {path}: {error.strerror}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != KEY_BYTES:
        raise ChainKeyError(f"{path} does not hold a chain key (64 hex digits)")
    return ChainKey(secret)


def create_key(path: Path) -> ChainKey:
    """Make a new key file (mode 0600), whole or not at all; if another process made it
    first, read theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = ChainKey(secrets.token_bytes(KEY_BYTES))
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(key.secret.hex() + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(draft, path)  # atomic, and refuses to replace a key that exists
        except FileExistsError:
            return read_key(path)
    finally:
        draft.unlink(missing_ok=True)
    return key


__all__ = ["GENESIS", "ChainKey", "ChainKeyError", "create_key", "read_key", "seal_text"]
