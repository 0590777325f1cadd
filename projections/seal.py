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
import os
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from projections.events import json_encoder

GENESIS = "0" * 64
KEY_BYTES = 32


class ChainKeyError(RuntimeError):
    """The chain key is missing, unreadable, or not the key this store was sealed with."""


def same_seal(expected: str, stored: str) -> bool:
    """Whether ``stored`` (text read back from the database) is the seal ``expected``, in
    constant time. As bytes: ``hmac.compare_digest`` raises on text that is not ASCII, and
    whoever holds the database's password chooses what is stored."""
    return hmac.compare_digest(expected.encode(), stored.encode())


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

    @functools.cached_property
    def _rows_secret(self) -> bytes:
        return hmac.new(self.secret, b"ledger read-model rows", hashlib.sha256).digest()

    def row_seal(self, text: str) -> str:
        """The seal of a read-model row that later facts are made from (as ``text``: the
        outbox's streams), under a key derived from this one for such rows alone."""
        return hmac.new(self._rows_secret, text.encode(), hashlib.sha256).hexdigest()

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
        return same_seal(expected, link)


# Events a process remembers having sealed, until its notary has placed them (``WrittenHere``).
WRITTEN_HERE_BOUND = 20_000


class Sealed(NamedTuple):
    """One event as its writer sealed it: the link before it, its own, and what it covers (a
    tuple: made for every event written, on the writer's hot path)."""

    previous: str
    link: str
    originator_id: UUID | str
    version: int
    topic: str
    state: bytes


class WrittenHere:
    """The events this process committed, as it sealed them, kept until its notary reads them
    back (``SealWatch``, with ``written=``; the staff directory looks at them before it, without
    taking them): an event read back as exactly what was written, with exactly the links
    written, is one whose seal holds, without the HMAC computed a second time in the same
    process. Anything else read back (another process's event, a row or a link changed since)
    is checked in full, as it always was.

    Bounded (``WRITTEN_HERE_BOUND`` events): the oldest are forgotten first, and a forgotten
    event is checked in full. Remembered only once committed: the writer calls ``remember``
    after its commit is answered."""

    def __init__(self, bound: int = WRITTEN_HERE_BOUND) -> None:
        assert bound > 0
        self._bound = bound
        self._events: OrderedDict[int, Sealed] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, links: Sequence[tuple[int, str, str]],
                 stored_events: Sequence[StoredEvent]) -> None:
        """``links`` (position, previous, link), in the order of ``stored_events``."""
        assert len(links) == len(stored_events), "every committed event has its link"
        with self._lock:
            for (position, previous, link), stored in zip(links, stored_events, strict=True):
                self._events[position] = Sealed(previous, link, stored.originator_id,
                                                stored.originator_version, stored.topic,
                                                bytes(stored.state))
            while len(self._events) > self._bound:  # bounded by how many were just added
                self._events.popitem(last=False)

    def take(self, position: int) -> Sealed | None:
        """What was sealed at ``position`` here, forgotten as it is answered; None if nothing
        (or no longer) remembered."""
        with self._lock:
            return self._events.pop(position, None)

    def look(self, position: int) -> Sealed | None:
        """What was sealed at ``position`` here, kept for the notary's ``take`` (the staff
        directory reads the log more often than the notary); None if nothing (or no longer)
        remembered."""
        with self._lock:
            return self._events.get(position)

    def __len__(self) -> int:
        return len(self._events)


def seal_text(values: list[object]) -> str:
    """What a message's or a key record's seal covers: its values, in their order, as compact
    JSON, as ``json.JSONEncoder(separators=(",", ":")).encode`` writes it."""
    return _compact_json(values)


_compact_json = json_encoder(sort_keys=False, separators=(",", ":"))


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
    except UnicodeDecodeError:  # raw bytes (a secrets manager's): never repeat one of them
        raise ChainKeyError(f"{path} does not hold a chain key (64 hex digits)") from None
    if (shared := open_to_others(path)) is not None:
        raise ChainKeyError(shared)
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
    key = ChainKey(secrets.token_bytes(KEY_BYTES))
    return key if write_secret(path, key.secret.hex() + "\n") else read_key(path)


def open_to_others(path: Path) -> str | None:
    """Why the file of secrets at ``path`` is refused as it stands: others may read or write it
    (as ssh refuses such a private key: whoever reads the chain key can forge history, whoever
    reads a token can act as its role). None when only its owner may; or, as PostgreSQL allows
    for its server's key, when root owns it and lets this (other) user's group read it, no more
    (mode 0640 or 0440: a secrets volume's group)."""
    try:
        found = path.stat()
    except OSError:
        return None  # reading it says why
    mode = stat.S_IMODE(found.st_mode)
    group_reads = mode & stat.S_IRWXG == stat.S_IRGRP
    lent_by_root = found.st_uid == 0 and os.geteuid() != 0 and group_reads
    if mode & stat.S_IRWXO or (mode & stat.S_IRWXG and not lent_by_root):
        return (f"{path} is open to other users (mode {mode:o}): chmod 600 it (or 640, owned "
                "by root, for the service's group to read)")
    return None


def write_secret(path: Path, text: str) -> bool:
    """A new file of secrets at ``path`` (mode 0600, its folder made), whole or not at all: a
    draft is written, synced and linked into place, so no crash leaves half a file and no one
    else can read it meanwhile. False, and nothing written, when ``path`` was there already
    (another process made it first): it is never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(draft, path)  # atomic, and refuses to replace a file that exists
        except FileExistsError:
            return False
    finally:
        draft.unlink(missing_ok=True)
    return True


__all__ = [
    "GENESIS", "ChainKey", "ChainKeyError", "create_key", "open_to_others", "read_key",
    "seal_text", "write_secret",
]
