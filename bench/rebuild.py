"""``ledger rebuild`` beside merely reading and decoding the same events, in one database.

The events are made in-process, quickly: accounts opened and deposits received through the
domain's own methods (``Account.open``, ``receive_deposit``), many to an aggregate per ``save``,
so they are the very events the HTTP API records, without a round trip each. The baseline
reads the log in the replay's batch size and decodes every event (``mapper.to_domain_event``),
and does nothing with it. It runs before and after the rebuild, and the faster of the two is
the baseline (the cache is as warm for it as for the rebuild).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ledger.account import Account
from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings
from projections.replay import REPLAY_BATCH
from projections.store import open_application

DEPOSITS_PER_SAVE = 50
ACCOUNTS_PER_SAVE = 100
REBUILD_TIMEOUT_S = 600
ACTOR = Actor("system:bench", "bench-seed")
_REPORT = re.compile(r"from (\d+) events in ([0-9.]+) s")


def username(n: int) -> str:
    return f"u{n:04d}"


def seed(app: LedgerApplication, *, events: int, users: int) -> int:
    """Open ``users`` accounts and receive deposits until the log holds ``events`` events;
    answers how many were recorded."""
    names = [username(n) for n in range(min(users, events))]
    for i in range(0, len(names), ACCOUNTS_PER_SAVE):
        opening = names[i:i + ACCOUNTS_PER_SAVE]
        app.save(*(Account.open(name, "USD", actor=ACTOR) for name in opening))
    made, counter = len(names), 0
    while made < events:  # each turn records at least one event: bounded by ``events``
        for name in names:
            batch = min(DEPOSITS_PER_SAVE, events - made)
            if batch <= 0:
                break
            account = app.account(name)
            for _ in range(batch):
                counter += 1
                account.receive_deposit(100 + counter % 900, f"seed-{counter}", actor=ACTOR)
            app.save(account)
            made += batch
    return made


def read_and_decode(app: LedgerApplication) -> tuple[int, float]:
    """Every event read from the store and decoded, nothing more; (events, seconds)."""
    started = time.perf_counter()
    start, count = 0, 0
    last = app.recorder.max_notification_id() or 0
    for _ in range(last // REPLAY_BATCH + 2):  # bounded by the log's length
        notifications = app.recorder.select_notifications(
            start, REPLAY_BATCH, inclusive_of_start=False
        )
        for notification in notifications:
            app.mapper.to_domain_event(notification)
        count += len(notifications)
        if len(notifications) < REPLAY_BATCH:
            break
        start = notifications[-1].id
    return count, time.perf_counter() - started


@dataclass(frozen=True)
class Rebuild:
    events: int
    wall_s: float  # the whole command, start-up included
    replay_s: float | None  # the replay as the command reports it (None: no report line)


def rebuild_command(database_url: str, folder: Path) -> Rebuild:
    """``ledger rebuild`` as an operator runs it, in ``folder`` (its chain key's)."""
    ledger = str(Path(sys.executable).with_name("ledger"))
    env = {**os.environ, "LEDGER_DATABASE_URL": database_url,
           "LEDGER_CHAIN_KEY_FILE": str(folder / "chain.key")}
    started = time.perf_counter()
    done = subprocess.run([ledger, "rebuild"], env=env, capture_output=True, text=True,
                          timeout=REBUILD_TIMEOUT_S, check=False, cwd=folder)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"ledger rebuild exited {done.returncode}: {done.stderr[-2000:]}")
    found = _REPORT.search(done.stdout)
    if found is None:
        return Rebuild(0, wall_s, None)
    return Rebuild(int(found.group(1)), wall_s, float(found.group(2)))


@dataclass(frozen=True)
class RebuildFigures:
    events: int
    seed_s: float
    decode_per_s: float
    rebuild: Rebuild

    @property
    def command_per_s(self) -> float:
        return self.events / self.rebuild.wall_s

    @property
    def replay_per_s(self) -> float | None:
        replay_s = self.rebuild.replay_s
        return self.rebuild.events / replay_s if replay_s else None


def measure(database_url: str, *, events: int, users: int) -> RebuildFigures:
    # The chain key in a folder of the bench's own, never the repository's ./var/.
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as scratch:
        folder = Path(scratch)
        settings = replace(StoreSettings.from_url(database_url, pool_size=2),
                           chain_key_file=folder / "chain.key")
        app = open_application(settings)
        try:
            started = time.perf_counter()
            made = seed(app, events=events, users=users)
            seed_s = time.perf_counter() - started
            first = read_and_decode(app)
            rebuilt = rebuild_command(database_url, folder)
            second = read_and_decode(app)
        finally:
            app.close()
    for count, _ in (first, second):
        if count != made:
            raise RuntimeError(f"read {count} events back, {made} were recorded")
    decode_per_s = max(count / seconds for count, seconds in (first, second))
    return RebuildFigures(made, seed_s, decode_per_s, rebuilt)
