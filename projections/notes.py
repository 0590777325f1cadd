"""Signed checkpoints: C2SP signed notes (``c2sp.org/signed-note``) carrying a
``c2sp.org/tlog-checkpoint`` body, signed with Ed25519.

A checkpoint reads::

    <origin>
    <tree size>
    <base64 root hash>

    — <key name> <base64(4-byte key hash ‖ 64-byte signature)>

The signature is over the body (the lines before the blank line, each ending in a newline). The
key hash is the first 4 bytes of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key), and the
verifier key, what ``ledger keys public`` prints, is ``<name>+<hex key hash>+<base64(0x01 ‖
public key)>``. The signing key lives in a file outside the database
(``LEDGER_SIGNING_KEY_FILE``, default ``var/ledger-signing.key``; made, mode 0600, on the first
start): whoever edits the database cannot sign a checkpoint.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from projections.seal import open_to_others, write_secret

DEFAULT_SIGNING_KEY_FILE = Path("var/ledger-signing.key")
DEFAULT_ORIGIN = "ledger.local/log"
ED25519 = b"\x01"
DASH = "\u2014"
MAX_NOTE_BYTES = 64 * 1024


class NoteError(ValueError):
    """A note or key that does not parse, or a signature that does not verify."""


def key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @property
    def hash(self) -> bytes:
        return key_hash(self.name, self.public)

    def text(self) -> str:
        return f"{self.name}+{self.hash.hex()}+{base64.b64encode(ED25519 + self.public).decode()}"

    @classmethod
    def parse(cls, text: str) -> Verifier:
        try:
            name, hex_hash, encoded = text.strip().split("+", 2)
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise NoteError("a verifier key reads <name>+<hex key hash>+<base64 key>") from None
        if raw[:1] != ED25519 or len(raw) != 33:
            raise NoteError("the verifier key is not an Ed25519 key")
        verifier = cls(name, raw[1:])
        if verifier.hash.hex() != hex_hash:
            raise NoteError("the verifier key's hash does not match its name and key")
        return verifier

    def verify(self, note: str) -> str:
        """The note's body when it carries this key's valid signature; NoteError otherwise."""
        body, signatures = split_note(note)
        public = Ed25519PublicKey.from_public_bytes(self.public)
        for name, blob in signatures:
            if name != self.name or blob[:4] != self.hash:
                continue
            try:
                public.verify(blob[4:], body.encode())
            except InvalidSignature:
                raise NoteError(f"the signature of {name} does not verify") from None
            return body
        raise NoteError(f"the note carries no signature of {self.name}")


@dataclass(frozen=True)
class Signer:
    name: str
    private: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Verifier(self.name, public)

    def sign(self, body: str) -> str:
        assert body.endswith("\n") and "\n\n" not in body, "a note body is non-empty lines"
        signature = self.private.sign(body.encode())
        blob = base64.b64encode(self.verifier.hash + signature).decode()
        return f"{body}\n{DASH} {self.name} {blob}\n"


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """A note's body and its signatures (name, key hash ‖ signature)."""
    if len(note.encode()) > MAX_NOTE_BYTES or "\n\n" not in note or not note.endswith("\n"):
        raise NoteError("not a signed note")
    body, _, rest = note.partition("\n\n")
    signatures = []
    for line in rest.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise NoteError(f"not a signature line: {line!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            raise NoteError("a signature is not base64") from None
        if len(blob) < 5:
            raise NoteError("a signature is too short")
        signatures.append((parts[1], blob))
    if not signatures:
        raise NoteError("the note has no signature")
    return body + "\n", signatures


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.tree_size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint body is origin, tree size and root, one a line")
        try:
            size = int(lines[1])
            root = base64.b64decode(lines[2], validate=True)
        except ValueError:
            raise NoteError("a checkpoint's size or root does not parse") from None
        if size < 0 or len(root) != 32 or str(size) != lines[1]:
            raise NoteError("a checkpoint's size or root does not parse")
        return cls(lines[0], size, root)


def read_checkpoints(text: str) -> list[str]:
    """The notes of a checkpoint file: each note, then a blank line."""
    notes, parts = [], [p for p in text.split("\n\n") if p.strip()]
    if len(parts) % 2:
        raise NoteError("a checkpoint file holds whole notes, each followed by a blank line")
    for body, signatures in zip(parts[::2], parts[1::2], strict=True):
        notes.append(f"{body.strip(chr(10))}\n\n{signatures.strip(chr(10))}\n")
    return notes


def append_checkpoint(path: Path, note: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(note + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_signer(path: Path, name: str) -> Signer:
    try:
        raw = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise NoteError(f"no signing key at {path} (LEDGER_SIGNING_KEY_FILE)") from None
    except UnicodeDecodeError:  # raw bytes: never repeat one of them
        raise NoteError(f"{path} does not hold a signing key (64 hex digits)") from None
    except (OSError, ValueError) as error:
        raise NoteError(f"{path} does not hold a signing key (64 hex digits): {error}") from None
    if len(raw) != 32:
        raise NoteError(f"{path} does not hold a signing key (64 hex digits)")
    return Signer(name, Ed25519PrivateKey.from_private_bytes(raw))


def signer_to_sign_with(path: Path, name: str) -> Signer:
    """``read_signer``, for signing: refused when others may read or write the file (whoever
    reads it can sign checkpoints in the service's name). Its public half alone (a verifier,
    ``ledger keys public``) is read from any file."""
    signer = read_signer(path, name)
    if (shared := open_to_others(path)) is not None:
        raise NoteError(shared)
    return signer


def load_or_create_signer(path: Path, name: str, *, may_create: bool) -> Signer:
    """The signing key at ``path``; made there (mode 0600, whole or not at all) when missing and
    ``may_create``."""
    if not path.exists() and may_create:  # another process's, made first, is kept
        write_secret(path, secrets.token_bytes(32).hex() + "\n")
    return signer_to_sign_with(path, name)


def verifier_of(key_file: Path, origin: str) -> Verifier | None:
    """The checkpoints' verifier key, from the signing key in ``key_file`` (None when there is
    none, or it cannot be read)."""
    try:
        return read_signer(key_file, origin).verifier
    except NoteError:
        return None


def signing_settings(key_file: str = "", origin: str = "", checkpoint_file: str = ""
                     ) -> tuple[Path, str, Path]:
    """(signing key file, origin, checkpoint file) as configured (``LEDGER_SIGNING_KEY_FILE``,
    ``LEDGER_ORIGIN``, ``LEDGER_CHECKPOINT_FILE``; empty: the defaults, the checkpoint file
    beside the key)."""
    key = Path(key_file.strip() or DEFAULT_SIGNING_KEY_FILE)
    origin = origin.strip() or DEFAULT_ORIGIN
    if "\n" in origin or " " in origin or "+" in origin:
        raise NoteError("LEDGER_ORIGIN is one word with no '+'")
    file = Path(checkpoint_file.strip() or key.parent / "checkpoints.txt")
    return key, origin, file


__all__ = [
    "Checkpoint",
    "NoteError",
    "Signer",
    "Verifier",
    "append_checkpoint",
    "load_or_create_signer",
    "read_checkpoints",
    "read_signer",
    "signer_to_sign_with",
    "signing_settings",
    "split_note",
    "verifier_of",
]
