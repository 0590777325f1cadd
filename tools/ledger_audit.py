#!/usr/bin/env python3
"""Check the ledger's history without the service: a stand-alone verifier for auditors.

Needs only Python 3.11+ and ``cryptography``. Give it

- the verifier key (``ledger keys public``: ``<name>+<hex key hash>+<base64 key>``), as text or
  a file holding it;
- one or more checkpoint files (``LEDGER_CHECKPOINT_FILE``, or notes saved from
  ``GET /v1/audit/checkpoint``, each followed by a blank line);
- an event export (``ledger export --format events``: one JSON object a line).

It checks that every checkpoint carries a valid Ed25519 signature of the key (C2SP signed note),
that the RFC 9162 Merkle root of the export's first ``tree size`` events equals each signed
root (so the export holds exactly the history each checkpoint signed, and each checkpoint is a
prefix of the next), that each event's leaf hash is what its bytes give, and that the seals
chain (each event's ``previous`` is the link before it). It cannot check the seals' HMACs (the
chain key stays with the operator): the signed roots are what bind the events' bytes.

Leaf bytes: position, stream (UUID text), version, type (topic) and the stored state, each as
an 8-byte big-endian length then the bytes; leaf hash = SHA-256(0x00 ‖ leaf bytes); node hash =
SHA-256(0x01 ‖ left ‖ right).

Usage::

    python3 tools/ledger_audit.py --key KEY --checkpoints checkpoints.txt --events events.jsonl

Exit code 0 when everything holds; 1 with every problem listed; 2 for unreadable input.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
DASH = "\u2014"


def leaf_hash(event: dict[str, object]) -> bytes:
    parts = [str(event["position"]).encode(), str(event["stream"]).encode(),
             str(event["version"]).encode(), str(event["type"]).encode(),
             base64.b64decode(str(event["state"]))]
    data = b"".join(len(p).to_bytes(8, "big") + p for p in parts)
    return hashlib.sha256(b"\x00" + data).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, bottom-up: pair the nodes of each level left to right; an odd last
    node is carried up as it is (the same tree as the RFC's split at the largest power of 2)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = list(leaves)
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
                  for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def parse_key(text: str) -> tuple[str, bytes, bytes]:
    name, hex_hash, encoded = text.strip().split("+", 2)
    raw = base64.b64decode(encoded, validate=True)
    if raw[:1] != b"\x01" or len(raw) != 33:
        raise ValueError("not an Ed25519 verifier key")
    key_hash = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_hash.hex() != hex_hash:
        raise ValueError("the key's hash does not match its name and key")
    return name, key_hash, raw[1:]


def read_notes(text: str) -> list[str]:
    parts = [p.strip("\n") for p in text.split("\n\n") if p.strip()]
    if len(parts) % 2:
        raise ValueError("a checkpoint file holds whole notes, each followed by a blank line")
    return [f"{b}\n\n{s}\n" for b, s in zip(parts[::2], parts[1::2], strict=True)]


def open_note(key: tuple[str, bytes, bytes], note: str) -> tuple[str, int, bytes]:
    """(origin, tree size, root) of a note signed by ``key``; ValueError otherwise."""
    name, key_hash, public = key
    body, signatures = note.split("\n\n", 1)
    for line in signatures.splitlines():
        dash, signer, blob64 = line.split(" ")
        blob = base64.b64decode(blob64)
        if dash == DASH and signer == name and blob[:4] == key_hash:
            try:
                Ed25519PublicKey.from_public_bytes(public).verify(blob[4:], (body + "\n").encode())
            except InvalidSignature:
                raise ValueError("the signature does not verify") from None
            origin, size, root = body.split("\n")
            return origin, int(size), base64.b64decode(root)
    raise ValueError(f"no signature of {name}")


def audit(key_text: str, checkpoint_texts: list[str], event_lines: list[str]
          ) -> tuple[list[str], int]:
    """Every problem found (empty when everything holds), and how many of the first events the
    largest checkpoint verified covers: the events after it are bound by no signature."""
    problems: list[str] = []
    key = parse_key(key_text)
    events = [json.loads(line) for line in event_lines if line.strip()]
    leaves, previous = [], GENESIS
    for event in events:
        leaf = leaf_hash(event)
        leaves.append(leaf)
        position = event["position"]
        if "leaf_hash" in event and base64.b64decode(event["leaf_hash"]) != leaf:
            problems.append(f"position {position}: the exported leaf hash is not its bytes'")
        if event.get("link") is None:
            problems.append(f"position {position}: the event carries no seal")
            continue
        if event["previous"] != previous:
            problems.append(f"position {position}: the seal does not follow the one before it")
        previous = event["link"]
    sizes = []
    for text in checkpoint_texts:
        for note in read_notes(text):
            try:
                origin, size, root = open_note(key, note)
            except ValueError as error:
                problems.append(f"checkpoint {note.splitlines()[1:2]}: {error}")
                continue
            sizes.append(size)
            if size > len(leaves):
                problems.append(f"checkpoint of {size} events ({origin}): the export holds only "
                                f"{len(leaves)} (events were removed, or the export is short)")
            elif merkle_root(leaves[:size]) != root:
                problems.append(f"checkpoint of {size} events ({origin}): the signed root does "
                                f"not match the export's first {size} events (up to position "
                                f"{events[size - 1]['position']})")
    if not sizes:
        problems.append("no checkpoint verified")
    return problems, min(max(sizes, default=0), len(events))


def ok_line(events: int, covered: int) -> str:
    """What holds, and how far: a seal's order alone is no proof (anyone holding the database
    can make links that follow each other), so events past the last checkpoint are named."""
    if covered >= events:
        return (f"ok: {events} events; every checkpoint's signature, root and the seals' order"
                " hold")
    return (f"ok: {events} events; the first {covered} are covered by a signed checkpoint; the"
            f" last {events - covered} are NOT (only their seals' order was checked, which"
            " anyone holding the database can remake): check them against a later checkpoint")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", required=True, help="the verifier key, or a file holding it")
    parser.add_argument("--checkpoints", required=True, action="append", type=Path,
                        help="a checkpoint file (repeatable)")
    parser.add_argument("--events", required=True, type=Path, help="the event export (JSONL)")
    args = parser.parse_args(argv)
    try:
        key_text = Path(args.key).read_text() if Path(args.key).is_file() else args.key
        checkpoints = [path.read_text() for path in args.checkpoints]
        lines = args.events.read_text().splitlines()
        problems, covered = audit(key_text, checkpoints, lines)
    except (OSError, ValueError, KeyError) as error:
        print(f"ledger_audit: cannot read the input: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"NOT OK: {problem}")
    if problems:
        return 1
    print(ok_line(sum(1 for line in lines if line.strip()), covered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
