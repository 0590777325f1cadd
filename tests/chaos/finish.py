"""After the faults: let the service settle, resolve every unknown write, and collect the final
state the checkers judge (the log, balances from every server, histories, reconciliation,
``ledger verify``).

Resolving an unknown write: the same request again, to any server, with the same
``Idempotency-Key`` and body, until its outcome is known (bounded). The service answers the
original response (``Idempotent-Replayed: true``) if the first attempt took effect, or performs
it now, once. Either way the write's final outcome is the resolution's: ``ok`` means it is in
the log exactly once, ``refused`` that it is not there at all. The checkers hold the log to that
(``tests.chaos.checkers``), so a resolution that lied would be caught.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.chaos.client import Client, Request
from tests.chaos.history import UNKNOWN, WRITES, History
from tests.chaos.load import Picker, send_until_known
from tests.chaos.servers import ServerPool, ledger_script

SETTLE_TIMEOUT_S = 120.0
SETTLE_QUIET_S = 2.0
RESOLVE_ATTEMPTS = 30
EVENT_PAGE = 1000
MAX_EVENT_PAGES = 10_000
VERIFY_TIMEOUT_S = 900.0
ACCOUNT_EVENT_PREFIXES = ("ledger:Account.", "ledger:RefundRequest.")


async def _ready(session: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any] | None:
    try:
        async with session.get(f"{url}/ready", headers={"Authorization": f"Bearer {token}"},
                               timeout=aiohttp.ClientTimeout(total=10)) as reply:
            if reply.status == 200:
                ready: dict[str, Any] = await reply.json()
                return ready
    except (aiohttp.ClientError, TimeoutError):
        pass
    return None


async def settle(pool: ServerPool, session: aiohttp.ClientSession, token: str) -> float:
    """Restart any server that is down, then wait until every server is ready, the log has not
    moved for ``SETTLE_QUIET_S`` and the read models have caught up. Returns the seconds taken.
    Requests still running inside a server when the load stopped end meanwhile, so they cannot
    race the resolution."""
    started = time.monotonic()
    for server in pool.servers:
        if not server.live:
            await asyncio.to_thread(server.start)
    deadline = started + SETTLE_TIMEOUT_S
    last, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        answers = [await _ready(session, s.url, token) for s in pool.servers]
        if all(a is not None for a in answers):
            positions = {a["log_position"] for a in answers if a is not None}
            lag = max(a["lag"] for a in answers if a is not None)
            if positions != last:
                last, quiet_since = positions, time.monotonic()
            elif lag == 0 and time.monotonic() - quiet_since >= SETTLE_QUIET_S:
                return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the service did not settle in {SETTLE_TIMEOUT_S} s")


def request_of(op: dict[str, Any]) -> Request:
    return Request(op=op["op"], method=op["method"], path=op["path"], role=op["role"],
                   account=op["account"], args=op["args"], key=op["key"], tag=op["tag"],
                   request_id=op["request_id"])


async def resolve_unknowns(history: History, client: Client, picker: Picker) -> int:
    """Retry every unknown load write, oldest first; returns how many there were."""
    unknown = [op for op in history.ops
               if op["phase"] == "load" and op["op"] in WRITES and op["outcome"] == UNKNOWN]
    for op in sorted(unknown, key=lambda o: o["start"]):
        await send_until_known(client, picker, request_of(op), phase="resolve",
                               attempts=RESOLVE_ATTEMPTS, first_id=op["id"])
    return len(unknown)


async def _get(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, Any]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"},
                           timeout=aiohttp.ClientTimeout(total=60)) as reply:
        return reply.status, await reply.json(content_type=None)


async def _paged(session: aiohttp.ClientSession, url: str, token: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after: str | None = None
    for _page in range(MAX_EVENT_PAGES):
        query = f"limit={EVENT_PAGE}" + ("" if after is None else f"&after={after}")
        status, body = await _get(session, f"{url}{'&' if '?' in url else '?'}{query}", token)
        if status != 200:
            raise RuntimeError(f"GET {url} answered {status}: {body}")
        items += body["items"]
        after = body["next"]
        if after is None:
            return items
    raise RuntimeError(f"GET {url} had more than {MAX_EVENT_PAGES} pages")


async def collect(history: History, pool: ServerPool, session: aiohttp.ClientSession,
                  tokens: dict[str, str]) -> None:
    """The final state, into ``history.final``."""
    finance, first = tokens["finance"], pool.servers[0].url
    events = await _paged(session, f"{first}/v1/events", finance)
    history.final["events"] = [
        {k: e[k] for k in ("position", "stream", "type", "data")}
        for e in events if e["type"].startswith(ACCOUNT_EVENT_PREFIXES)
    ]
    history.final["log_end"] = events[-1]["position"] if events else 0
    accounts: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    for entry in history.doc["accounts"]:
        name = entry["username"]
        accounts[name] = {}
        for server in pool.servers:
            status, body = await _get(session, f"{server.url}/v1/accounts/{name}", finance)
            accounts[name][str(server.index)] = body if status == 200 else {"status": status,
                                                                             "body": body}
        histories[name] = await _paged(session, f"{first}/v1/accounts/{name}/history", finance)
    history.final["accounts"] = accounts
    history.final["histories"] = histories
    history.final["reconciliation"] = {}
    for server in pool.servers:
        status, body = await _get(session, f"{server.url}/v1/reconciliation?currency=USD", finance)
        history.final["reconciliation"][str(server.index)] = (
            body if status == 200 else {"status": status, "body": body})


def ledger_verify(database_url: str, workdir: Path) -> dict[str, Any]:
    """``ledger verify --json`` on the run's database, in the servers' folder (their signing
    key, which signed the checkpoints, is there): its exit code and what it printed."""
    started = time.monotonic()
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url}
    try:
        done = subprocess.run([ledger_script(), "verify", "--json"], env=env, cwd=workdir,
                              capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"exit_code": None, "output": f"timed out after {VERIFY_TIMEOUT_S} s"}
    return {"exit_code": done.returncode, "output": (done.stdout + done.stderr)[-20_000:],
            "seconds": round(time.monotonic() - started, 3)}
