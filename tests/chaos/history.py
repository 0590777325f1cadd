"""The history of a chaos run: every request and its outcome, every fault, the final state.

Written as one JSON document (``FORMAT``) so that a checker outside this repository can judge the
run too (``python -m tests.chaos.check HISTORY`` runs ours on it)::

    {"format": "ledger-chaos-history/1",
     "meta":     {"run_id", "started_at", "duration_s", "config", "database", "servers",
                  "tags": {op: [event type, data field]}, "figures"},
     "accounts": [{"username", "hot"}],
     "ops":      [op, ...],
     "faults":   [{"kind": "kill" | "pg_restart" | "terminate", "target", "start", "end",
                   "ok", "detail"}],
     "final":    {"events", "accounts", "histories", "reconciliation", "verify"}}

An op is one HTTP request: ``{id, phase, worker, server, op, method, path, role, args, key,
tag, account, request_id, resolves, start, end, status, code, outcome, error, replayed, body}``.

- ``phase``: ``setup`` (opening accounts, before any fault), ``load`` (while faults are
  injected), ``resolve`` (after the faults: the same request again, same ``Idempotency-Key``,
  for a ``load`` write whose outcome was unknown; ``resolves`` names that op's id).
- ``start``/``end``: seconds since the run began, on one monotonic clock.
- ``outcome``: ``ok`` (2xx: it took effect), ``refused`` (4xx, or 503 ``busy``/``not_ready``:
  it did not), ``unknown`` (no answer, a timeout, or another 5xx: it may have).
- ``tag``: a value unique to this op that the event it writes carries in the data field named
  by ``meta.tags[op]`` (a deposit's payment reference, an order number, a reason, a note, a
  payout reference): how the log is searched for it.
- ``request_id``: the refund request a step (approve, pay, reject, cancel) acts on.

``final.events`` is the log's account and refund-request events ``{position, stream, type,
data}``; ``final.accounts[username][server]`` each server's answer to ``GET
/v1/accounts/{username}`` once the faults were over; ``final.histories[username]`` the account's
history read model; ``final.reconciliation[server]`` each server's reconciliation;
``final.verify`` the exit code and output of ``ledger verify --json``.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "ledger-chaos-history/1"
OK, REFUSED, UNKNOWN = "ok", "refused", "unknown"
# A write's tag and where the log carries it: the event type, the field of its data.
TAGS: dict[str, tuple[str, str]] = {
    "open_account": ("ledger:Account.Opened", "username"),
    "deposit": ("ledger:Account.DepositReceived", "reference"),
    "purchase": ("ledger:Account.PurchasePaid", "order_no"),
    "fail_purchase": ("ledger:Account.PurchaseFailed", "reason"),
    "request_refund": ("ledger:Account.BalanceRefundRequested", "reason"),
    "approve": ("ledger:RefundRequest.Approved", "note"),
    "pay": ("ledger:Account.BalanceRefundPaidOut", "payout_reference"),
    "reject": ("ledger:Account.BalanceRefundReleased", "reason"),
    "cancel": ("ledger:Account.BalanceRefundReleased", "reason"),
}
WRITES = frozenset(TAGS)
READS = frozenset({"read"})


class History:
    def __init__(self, run_id: str) -> None:
        self._t0 = time.monotonic()
        self.doc: dict[str, Any] = {
            "format": FORMAT,
            "meta": {
                "run_id": run_id,
                "started_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "tags": {op: list(where) for op, where in TAGS.items()},
            },
            "accounts": [],
            "ops": [],
            "faults": [],
            "final": {},
        }

    def now(self) -> float:
        """Seconds since the run began."""
        return round(time.monotonic() - self._t0, 6)

    @property
    def ops(self) -> list[dict[str, Any]]:
        ops: list[dict[str, Any]] = self.doc["ops"]
        return ops

    @property
    def faults(self) -> list[dict[str, Any]]:
        faults: list[dict[str, Any]] = self.doc["faults"]
        return faults

    @property
    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.doc["meta"]
        return meta

    @property
    def final(self) -> dict[str, Any]:
        final: dict[str, Any] = self.doc["final"]
        return final

    def add(self, op: dict[str, Any]) -> dict[str, Any]:
        op["id"] = len(self.ops)
        self.ops.append(op)
        return op

    def save(self, path: Path) -> None:
        """Written whole or not at all."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with partial.open("w") as file:
            json.dump(self.doc, file, separators=(",", ":"))
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)


def load(path: Path) -> dict[str, Any]:
    with path.open() as file:
        doc: dict[str, Any] = json.load(file)
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} document")
    return doc
