"""Issue 10's figures: the cost of a checkpoint, of a proof, and the pace of checking 100,000
events' tree and signatures offline. In memory, synthetic events shaped like the ledger's (a
deposit's JSON state): what the notary and ``tools/ledger_audit.py`` compute, without the
database (its reads are the event log's own figures, issue 9).

    .venv/bin/python -m bench.auditkit [--events 100000]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from projections.merkle import Tree, event_leaf_hash
from projections.notes import Checkpoint, Signer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ledger_audit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    n = parser.parse_args().events
    streams = [uuid.uuid4() for _ in range(1000)]
    events = []
    for position in range(1, n + 1):
        state = json.dumps({"amount": random.randrange(1, 10**6), "currency": "USD",
                            "reference": f"pay-{position}", "actor": "system:0a1b2c3d",
                            "timestamp": "2026-12-04T09:00:00.000000+00:00"}).encode()
        events.append((position, streams[position % 1000], position // 1000 + 1,
                       "ledger:Account.DepositReceived", state))
    started = time.perf_counter()
    tree = Tree()
    for event in events:
        tree.append(event_leaf_hash(*event))
    leaves_s = time.perf_counter() - started
    signer = Signer("bench.local/log", Ed25519PrivateKey.generate())
    started = time.perf_counter()
    note = signer.sign(Checkpoint("bench.local/log", n, tree.root()).body())
    first_checkpoint_s = time.perf_counter() - started
    for event in events[-1000:]:  # the log grows by 1,000 events
        tree.append(event_leaf_hash(event[0] + n, *event[1:]))
    started = time.perf_counter()
    signer.sign(Checkpoint("bench.local/log", len(tree), tree.root()).body())
    next_checkpoint_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(1000):
        tree.inclusion(random.randrange(n), len(tree))
    proof_s = (time.perf_counter() - started) / 1000
    started = time.perf_counter()
    for _ in range(100):
        tree.consistency(random.randrange(1, n), len(tree))
    consistency_s = (time.perf_counter() - started) / 100
    lines = [json.dumps({"position": p, "stream": str(s), "version": v, "type": t,
                         "state": base64.b64encode(b).decode(), "link": None})
             for p, s, v, t, b in events]
    started = time.perf_counter()
    problems = ledger_audit.audit(signer.verifier.text(), [note + "\n"], lines)
    offline_s = time.perf_counter() - started
    # every event is unsealed in this synthetic export: only the tree and signature matter here
    assert not [p for p in problems if "checkpoint" in p], problems[:3]
    print(f"| figure ({n:,} events, in memory; machine shared and loaded) | value |")
    print("|---|---|")
    print(f"| leaf hashes of the whole log (notary start-up, verify) | {leaves_s:.2f} s "
          f"({n / leaves_s:,.0f} events/s) |")
    print(f"| first checkpoint (root of {n:,} leaves + Ed25519 signature) | "
          f"{first_checkpoint_s * 1000:.0f} ms |")
    print(f"| next checkpoint after 1,000 more events (memoized subtrees) | "
          f"{next_checkpoint_s * 1000:.2f} ms |")
    print(f"| inclusion proof (mean of 1,000) | {proof_s * 1e6:.0f} µs |")
    print(f"| consistency proof (mean of 100) | {consistency_s * 1e6:.0f} µs |")
    print(f"| offline verifier: leaves, root, signature | {offline_s:.2f} s "
          f"({n / offline_s:,.0f} events/s) |")


if __name__ == "__main__":
    main()
