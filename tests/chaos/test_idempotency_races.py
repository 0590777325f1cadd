"""A client that retries too early: the same write, same ``Idempotency-Key`` and body, sent to
two ``ledger serve`` processes at once. API.md: the same key and body answer "the first response
again (same status and body) ... and no second effect". So both answers must be the same
success, and the write must be in the log once.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.chaos.checkers import Verdict, check, verdict_lines
from tests.chaos.client import Client, Request
from tests.chaos.cluster import Cluster
from tests.chaos.finish import collect
from tests.chaos.history import History
from tests.chaos.load import Picker, open_accounts
from tests.chaos.servers import ServerPool

PAIRS = 150
AT_ONCE = 6
STAGGER_S = 0.03  # the second of a pair leaves up to this much later: spreads the overlap


@pytest.fixture
def two_servers(chaos_cluster: Cluster, tmp_path: Path) -> Iterator[tuple[ServerPool, str]]:
    run_id = secrets.token_hex(4)
    dbname = f"chaos_twins_{run_id}"
    chaos_cluster.create_database(dbname)
    tokens = ",".join(f"{role}:twins-{role}-{run_id}" for role in ("system", "cs", "finance",
                                                                    "auditor"))
    pool = ServerPool.make(2, database_url=chaos_cluster.url(dbname), tokens=tokens,
                           workdir=tmp_path)
    try:
        pool.start_all()
        yield pool, run_id
    finally:
        pool.stop_all()
        chaos_cluster.drop_database(dbname)


async def _twins(pool: ServerPool, run_id: str) -> list[Verdict]:
    history = History(run_id)
    history.meta["config"] = {"operations": PAIRS}
    tokens = {role: f"twins-{role}-{run_id}" for role in ("system", "cs", "finance", "auditor")}
    name = f"twins-{run_id}"
    history.doc["accounts"] = [{"username": name, "hot": True}]
    rng = random.Random(7)
    async with aiohttp.ClientSession() as session:
        client = Client(session, history, tokens, timeout_s=30)
        await open_accounts(client, Picker(pool), [name])
        funding = Request(op="deposit", method="POST", path=f"/v1/accounts/{name}/deposits",
                          role="system", account=name, key=f"key-fund-{run_id}",
                          tag=f"fund-{run_id}",
                          args={"amount": 10**9, "reference": f"fund-{run_id}"})
        await client.send(funding, pool.servers[0].url, server=0, phase="setup")
        gate = asyncio.Semaphore(AT_ONCE)

        async def pair(n: int) -> None:
            tag = f"ord-{run_id}-{n}"
            request = Request(op="purchase", method="POST", account=name, role="system",
                              path=f"/v1/accounts/{name}/purchases", key=f"key-{tag}", tag=tag,
                              args={"order_no": tag, "amount": 100 + n})
            delay = rng.uniform(0, STAGGER_S)

            async def second() -> dict[str, Any]:
                await asyncio.sleep(delay)
                return await client.send(request, pool.servers[1].url, server=1, phase="load",
                                         twin=True)

            async with gate:
                await asyncio.gather(
                    client.send(request, pool.servers[0].url, server=0, phase="load"), second())

        await asyncio.gather(*(pair(n) for n in range(PAIRS)))
        await collect(history, pool, session, tokens)
    history.final["verify"] = {"exit_code": 0, "output": "not run here"}
    return check(history.doc)


def test_the_same_write_sent_to_two_servers_at_once_gets_one_answer_and_one_effect(
    two_servers: tuple[ServerPool, str],
) -> None:
    pool, run_id = two_servers
    verdicts = {v.name: v for v in asyncio.run(_twins(pool, run_id))}
    judged = [verdicts[name] for name in (
        "idempotent_answers_agree", "acknowledged_writes_not_lost", "no_write_applied_twice",
        "final_balances", "no_server_errors")]
    if not all(v.ok for v in judged):
        pytest.fail(f"{PAIRS} purchases, each sent to both servers at once:\n"
                    + "\n".join(verdict_lines(judged)), pytrace=False)
