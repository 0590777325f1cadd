"""The log as an RFC 9162 Merkle tree: leaf hashes, roots, inclusion and consistency proofs.

The leaves are the stored events in log order (leaf index 0, 1, 2, …; a position the store
skipped is no leaf). A leaf's bytes are the event's canonical bytes (``leaf_bytes``): its log
position, its stream (aggregate id, as a UUID's text), its version, its topic and its stored
state, each prefixed with its length as 8 bytes big-endian, in that order. Then, as RFC 9162
section 2.1.1 says::

    leaf hash = SHA-256(0x00 ‖ leaf bytes)
    node hash = SHA-256(0x01 ‖ left ‖ right)

and the root of the first ``n`` leaves splits them at the largest power of two below ``n``.
Anyone holding an event export recomputes the leaf hashes without the service
(``tools/ledger_audit.py``). ``Tree`` keeps the leaf hashes in memory (32 bytes each) and the
hashes of complete subtrees of ``MEMO_MIN_LEAVES`` leaves or more as it computes them (they
never change: the log is append-only), so a root or a proof costs O(log n) hashes of memoized
subtrees plus at most ``MEMO_MIN_LEAVES`` leaves at each level's edge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from uuid import UUID

HASH_BYTES = 32
MEMO_MIN_LEAVES = 64
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof asked of sizes or indexes the tree does not have."""


def leaf_bytes(
    position: int, stream: UUID | str, version: int, topic: str, state: bytes | memoryview
) -> bytes:
    parts = (str(position).encode(), _stream_text(stream).encode(), str(version).encode(),
             topic.encode(), bytes(state))
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


def _stream_text(stream: UUID | str) -> str:
    # SQLite keeps ids as hex, PostgreSQL as UUIDs: hash one spelling.
    if isinstance(stream, UUID):
        return str(stream)
    try:
        return str(UUID(stream))
    except ValueError:
        return stream


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def event_leaf_hash(
    position: int, stream: UUID | str, version: int, topic: str, state: bytes | memoryview
) -> bytes:
    return leaf_hash(leaf_bytes(position, stream, version, topic, state))


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree:
    """The leaf hashes of the log in memory, appended as the log grows."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self._leaves = bytearray()
        self._memo: dict[tuple[int, int], bytes] = {}
        for leaf in leaves:
            self.append(leaf)

    def __len__(self) -> int:
        return len(self._leaves) // HASH_BYTES

    def append(self, leaf: bytes) -> None:
        assert len(leaf) == HASH_BYTES, "a leaf hash is 32 bytes"
        self._leaves += leaf

    def leaf(self, index: int) -> bytes:
        return bytes(self._leaves[index * HASH_BYTES:(index + 1) * HASH_BYTES])

    def _hash(self, start: int, n: int) -> bytes:
        """MTH of leaves[start:start+n] (n >= 1)."""
        if n == 1:
            return self.leaf(start)
        memo = n >= MEMO_MIN_LEAVES and n & (n - 1) == 0
        if memo:
            found = self._memo.get((start, n))
            if found is not None:
                return found
        k = _split(n)
        value = node_hash(self._hash(start, k), self._hash(start + k, n - k))
        if memo:
            self._memo[(start, n)] = value
        return value

    def root(self, size: int | None = None) -> bytes:
        size = len(self) if size is None else size
        if not 0 <= size <= len(self):
            raise ProofError(f"the tree has {len(self)} leaves, not {size}")
        return EMPTY_ROOT if size == 0 else self._hash(0, size)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 2.1.3.1: the audit path of leaf ``index`` in the tree of ``size`` leaves."""
        if not 0 < size <= len(self):
            raise ProofError(f"tree size {size} is not 1..{len(self)}")
        if not 0 <= index < size:
            raise ProofError(f"leaf index {index} is not in a tree of {size} leaves")
        path: list[bytes] = []
        start, n = 0, size
        while n > 1:
            k = _split(n)
            if index - start < k:
                path.append(self._hash(start + k, n - k))
                n = k
            else:
                path.append(self._hash(start, k))
                start, n = start + k, n - k
        path.reverse()  # the RFC lists the path from the leaf up
        return path

    def consistency(self, old: int, new: int) -> list[bytes]:
        """RFC 9162 2.1.4.1: the proof that the tree of ``old`` leaves is a prefix of ``new``."""
        if not 0 < old <= new <= len(self):
            raise ProofError(f"sizes must be 0 < from <= to <= {len(self)}: {old}, {new}")
        return self._subproof(old, 0, new, True)

    def _subproof(self, m: int, start: int, n: int, complete: bool) -> list[bytes]:
        if m == n:
            return [] if complete else [self._hash(start, n)]
        k = _split(n)
        if m <= k:
            return [*self._subproof(m, start, k, complete), self._hash(start + k, n - k)]
        return [*self._subproof(m - k, start + k, n - k, False), self._hash(start, k)]


# -- checking proofs (RFC 9162 2.1.3.2 and 2.1.4.2) ----------------------------------------------


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to; ProofError when the path cannot be one."""
    if not 0 <= index < size:
        raise ProofError("leaf index beyond the tree")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("path too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("path too short")
    return r


def consistent(
    old: int, new: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> bool:
    """Whether ``path`` proves the tree of ``old`` leaves and root ``old_root`` a prefix of the
    tree of ``new`` leaves and root ``new_root``."""
    if not 0 < old <= new:
        return False
    if old == new:
        return not path and old_root == new_root
    proof = list(path)
    if old & (old - 1) == 0:  # a power of two: the old root is the proof's first node
        proof.insert(0, old_root)
    if not proof:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


__all__ = [
    "EMPTY_ROOT",
    "ProofError",
    "Tree",
    "consistent",
    "event_leaf_hash",
    "leaf_bytes",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
]
