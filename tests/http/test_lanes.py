"""Fair admission: writes, plain reads and heavy reads wait in lanes of their own, and within a
lane each role has a share, so no role starves another.

- With the heavy lane full of auditors' (and finance's) event pages, a system deposit is
  admitted at once and succeeds, and so is a plain read; auditors past their share are
  refused 503 ``busy`` at once, in words that name the lane and the role.
- With one role holding its share of a lane and its share of the line, a request of another
  role in that same lane is admitted at once (each lane).
- A role over its share gets 503 ``busy`` with ``Retry-After``, and nothing changes: the same
  request sent again with its key once the lane is free is done, once.
- When a slot frees, it goes to a role that holds fewer slots, ahead of the older requests of
  the role that holds more; in a lane of one worker, roles take turns.
- Every route is in the lane the route table gives it; the default bounds share 8 threads
  5 / 2 / 1; bounds that cannot be had refuse to start the app.
- On a real server, 300 auditors paging the log never make a system deposit or balance fail.

The in-process tests hold jobs on cue: a read side whose ``events`` waits at a gate (the
``read_models`` seam of ``create_app``, around the real read models), and jobs handed to the
admission itself (``Admission.run_in``), which hold a slot of a lane as a role until their
gate opens. Every step waits on the admission's own counts of requests holding and waiting,
never on a sleep.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from api.auth import Tokens
from api.config import Config
from api.keys import ADMISSION, EXECUTOR, NOTARY
from api.limits import HEAVY_STARTS_PER_S, Admission, Lane, LaneLimits, Limits
from api.problems import Overloaded
from api.routes import ROUTES
from ledger.application import LedgerApplication
from ledger.settings import StoreSettings
from projections.readmodels import ReadModels
from tests.conftest import store_settings
from tests.http.conftest import TOKENS, Server, start_server, store, tokens_env, until

BLOCK_S = 20.0  # how long a held job waits for its gate at most: far beyond every test step
# Small lanes, so a share is quickly full: 2 workers each (a role may hold 1), lines of 4 (a
# role may have 2 waiting).
SMALL = Limits(request_deadline_s=30.0, max_waiting=4, queue_wait_s=20.0,
               write=LaneLimits(workers=2), read=LaneLimits(workers=2),
               heavy=LaneLimits(workers=2))


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


class Gate:
    """Holds every job that passes it until it is opened (at most BLOCK_S)."""

    def __init__(self) -> None:
        self.opened = threading.Event()

    def wait(self) -> None:
        if not self.opened.wait(BLOCK_S):
            raise TimeoutError("the test never opened the gate")

    def open(self) -> None:
        self.opened.set()


class GatedEvents:
    """The real read models, but a page of the event log first waits at ``gate``."""

    def __init__(self, inner: ReadModels, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate

    def events(self, **page: Any) -> Any:
        self.gate.wait()
        return self.inner.events(**page)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Service:
    client: TestClient[web.Request, web.Application]
    gate: Gate  # the event log's pages wait here
    held: list[Gate]  # the gates of jobs held through the admission

    @property
    def admission(self) -> Admission:
        return self.client.app[ADMISSION]

    async def call(self, method: str, path: str, role: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, str | None]:
        reply = await self.client.request(method, path, json=body,
                                          headers={**auth(role), **(headers or {})})
        return reply.status, await reply.json(), reply.headers.get("Retry-After")

    def hold(self, lane: Lane, role: str) -> asyncio.Task[None]:
        """A job of ``role`` in ``lane`` that holds its slot (or its place in line, then its
        slot) until its own gate opens."""
        gate = Gate()
        self.held.append(gate)
        executor: ThreadPoolExecutor = self.client.app[EXECUTOR]
        return asyncio.create_task(self.admission.run_in(lane, role, executor, gate.wait))

    async def flood(self, lane: Lane, role: str) -> list[asyncio.Task[None]]:
        """``role`` holds its share of ``lane`` and has its share of the line waiting."""
        bounds = self.admission.bounds(lane)
        jobs = [self.hold(lane, role) for _ in range(bounds.role_workers)]
        await until(lambda: self.admission.holding(lane, role) == bounds.role_workers,
                    f"{role} holds its share of the {lane} lane")
        jobs += [self.hold(lane, role) for _ in range(bounds.role_waiting)]
        await until(lambda: self.admission.waiting(lane, role) == bounds.role_waiting,
                    f"{role} has its share of the {lane} lane's line waiting")
        return jobs

    def open_all(self) -> None:
        self.gate.open()
        for gate in self.held:
            gate.open()


@asynccontextmanager
async def serve(tmp_path: Path, limits: Limits) -> AsyncIterator[Service]:
    gate = Gate()

    def read_models(settings: StoreSettings, app: LedgerApplication) -> Any:
        return GatedEvents(ReadModels(settings, app), gate)

    app = create_app(store_settings(f"sqlite:///{tmp_path}/ledger.db"),
                     Tokens.parse(tokens_env()), executor_workers=6, limits=limits,
                     read_models=read_models)
    async with TestClient(TestServer(app)) as client:
        service = Service(client, gate, [])
        try:
            yield service
        finally:
            service.open_all()  # the executor's shutdown waits for every held job


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    async with serve(tmp_path, SMALL) as running:
        yield running


async def open_account(service: Service, role: str = "cs") -> str:
    username = f"u-{uuid.uuid4().hex[:10]}"
    status, body, _ = await service.call("POST", "/v1/accounts", role,
                                         {"username": username, "currency": "USD"})
    assert status == 201, body
    return username


def assert_busy(status: int, body: Any, retry_after: str | None, *words: str) -> None:
    assert (status, body["code"], retry_after) == (503, "busy", "1"), body
    for word in words:
        assert word in body["detail"], body["detail"]


# -- the heavy lane full of auditors -------------------------------------------------------


async def test_with_the_heavy_lane_full_of_auditors_a_system_deposit_is_admitted_at_once(
    service: Service,
) -> None:
    username = await open_account(service, "system")
    admission, heavy = service.admission, service.admission.bounds(Lane.HEAVY)
    # Given auditors and finance paging the log: every slot of the heavy lane held, its line full
    pages = []
    for role in ("auditor", "finance"):
        for _ in range(heavy.role_workers + heavy.role_waiting):
            pages.append(asyncio.create_task(
                service.call("GET", "/v1/events?limit=1000", role)))
    await until(lambda: (admission.holding(Lane.HEAVY), admission.waiting(Lane.HEAVY))
                == (heavy.workers, heavy.max_waiting), "the heavy lane is full")
    # and more auditors, past their share: refused at once, in words naming lane and role
    for _ in range(3):
        assert_busy(*await service.call("GET", "/v1/events?limit=1000", "auditor"),
                    "heavy lane", "auditor role", "share")
    # When the order system deposits, then reads the balance
    status, body, _ = await service.call("POST", f"/v1/accounts/{username}/deposits", "system",
                                         {"amount": 2_500, "reference": "pay-heavy"})
    # Then both are served while every page still waits at its gate
    assert status == 201, body
    status, account, _ = await service.call("GET", f"/v1/accounts/{username}", "system")
    assert (status, account["posted"]) == (200, 2_500), account
    assert (admission.holding(Lane.HEAVY), admission.waiting(Lane.HEAVY)) == (
        heavy.workers, heavy.max_waiting)
    # and once the log answers, every page held or waiting is served
    service.gate.open()
    assert [(await page)[0] for page in pages] == [200] * len(pages)


# -- a role's share, and the others' ----------------------------------------------------------

# Per lane: the role that floods it, and a request of another role in the same lane.
PROBES: dict[Lane, tuple[str, str, str, str, Any, int]] = {
    Lane.WRITE: ("system", "cs", "POST", "/v1/accounts", "new-account", 201),
    Lane.READ: ("auditor", "system", "GET", "/v1/accounts/{username}", None, 200),
    Lane.HEAVY: ("auditor", "finance", "GET", "/v1/reconciliation?currency=USD", None, 200),
}


@pytest.mark.parametrize("lane", list(PROBES), ids=[lane.value for lane in PROBES])
async def test_with_one_role_holding_its_share_of_a_lane_another_roles_request_is_admitted(
    service: Service, lane: Lane,
) -> None:
    flooder, other, method, path, body, answer = PROBES[lane]
    username = await open_account(service)
    if body == "new-account":
        body = {"username": f"n-{uuid.uuid4().hex[:10]}", "currency": "USD"}
    # Given one role holding its share of the lane, and its share of the line waiting
    await service.flood(lane, flooder)
    # When another role calls a route of the same lane
    status, reply, _ = await service.call(method, path.format(username=username), other, body)
    # Then it is served at once, while the flood still holds and waits
    assert status == answer, reply
    bounds = service.admission.bounds(lane)
    assert service.admission.holding(lane, flooder) == bounds.role_workers
    assert service.admission.waiting(lane, flooder) == bounds.role_waiting


async def test_a_role_over_its_share_is_refused_busy_at_once_and_nothing_changes(
    service: Service,
) -> None:
    username = await open_account(service)
    key = {"Idempotency-Key": f"over-{uuid.uuid4().hex}"}
    deposit = {"amount": 700, "reference": "pay-over"}
    admission = service.admission
    # Given the system role holding its share of the write lane and its share of the line
    jobs = await service.flood(Lane.WRITE, "system")
    holding, waiting = admission.holding(Lane.WRITE), admission.waiting(Lane.WRITE)
    # When it sends one deposit more
    answer = await service.call("POST", f"/v1/accounts/{username}/deposits", "system", deposit,
                                key)
    # Then it is refused at once (it never joined the line), saying why
    assert_busy(*answer, "write lane", "system role", "share")
    assert (admission.holding(Lane.WRITE), admission.waiting(Lane.WRITE)) == (holding, waiting)
    # and nothing changed: no deposit, and the same request with its key now does it, once
    service.open_all()
    await asyncio.gather(*jobs)
    status, account, _ = await service.call("GET", f"/v1/accounts/{username}", "system")
    assert (status, account["posted"]) == (200, 0), account
    for _ in range(2):
        status, body, _ = await service.call("POST", f"/v1/accounts/{username}/deposits",
                                             "system", deposit, key)
        assert (status, body["account"]["posted"]) == (201, 700), body


async def test_a_freed_slot_goes_to_the_role_holding_fewer_ahead_of_older_requests(
    tmp_path: Path,
) -> None:
    # Lanes where a role may hold every slot: the share is then kept by the order of turns.
    limits = Limits(request_deadline_s=30.0, max_waiting=4, queue_wait_s=20.0,
                    heavy=LaneLimits(workers=2, role_workers=2))
    async with serve(tmp_path, limits) as service:
        admission = service.admission
        # Given auditors holding every slot of the heavy lane, two more of theirs in line
        first = service.hold(Lane.HEAVY, "auditor")
        service.hold(Lane.HEAVY, "auditor")
        await until(lambda: admission.holding(Lane.HEAVY, "auditor") == 2, "auditors hold all")
        service.hold(Lane.HEAVY, "auditor")
        service.hold(Lane.HEAVY, "auditor")
        await until(lambda: admission.waiting(Lane.HEAVY, "auditor") == 2, "auditors wait")
        # and a finance page waiting behind them
        page = asyncio.create_task(service.call("GET", "/v1/events", "finance"))
        await until(lambda: admission.waiting(Lane.HEAVY, "finance") == 1, "finance waits")
        # When one auditor job ends
        service.held[0].open()
        await first
        # Then its slot goes to finance, and both auditors' older requests still wait
        await until(lambda: admission.holding(Lane.HEAVY, "finance") == 1, "finance is served")
        assert admission.waiting(Lane.HEAVY, "auditor") == 2
        service.open_all()
        assert (await page)[0] == 200


def _started(served: list[tuple[str, Gate]], jobs: int) -> bool:
    return len(served) == jobs


async def test_in_a_lane_of_one_worker_roles_take_turns() -> None:
    limits = Limits(max_waiting=8, write=LaneLimits(workers=1), read=LaneLimits(workers=1),
                    heavy=LaneLimits(workers=1))
    admission = Admission(limits.lanes(3))
    served: list[tuple[str, Gate]] = []  # the roles of the jobs started, in order

    def job(role: str) -> Callable[[], None]:
        gate = Gate()

        def run() -> None:
            served.append((role, gate))
            gate.wait()

        return run

    with ThreadPoolExecutor(max_workers=3) as executor:
        # Given the only slot held by cs, then four cs requests and two finance ones in line
        jobs = [asyncio.create_task(admission.run_in(Lane.READ, "cs", executor, job("cs")))]
        await until(lambda: len(served) == 1, "cs holds the slot")
        roles = ["cs", "cs", "cs", "cs", "finance", "finance"]
        for role in roles:
            jobs.append(asyncio.create_task(admission.run_in(Lane.READ, role, executor,
                                                             job(role))))
        await until(lambda: admission.waiting(Lane.READ) == len(roles), "all are in line")
        # When each job ends in turn
        for started in range(2, len(roles) + 2):
            served[-1][1].open()
            await until(functools.partial(_started, served, started), "the next job starts")
        served[-1][1].open()
        await asyncio.gather(*jobs)
    # Then finance did not wait behind every cs request: the roles took turns
    assert [role for role, _ in served] == ["cs", "finance", "cs", "finance", "cs", "cs", "cs"]


async def test_requests_in_line_for_what_the_one_ahead_makes_find_it_kept_and_run_no_job(
) -> None:
    # Given a heavy lane of one worker, whose slot a job making a page holds
    limits = Limits(max_waiting=8, heavy=LaneLimits(workers=1))
    admission = Admission(limits.lanes(3))
    kept: dict[str, str] = {}
    made: list[str] = []
    gate = Gate()

    def make_page() -> str:
        gate.wait()
        made.append("page")
        return "page"

    def kept_page() -> str | None:
        return kept.get("page")

    def keep(page: str) -> None:
        kept["page"] = page

    async def ask(role: str) -> str:
        return await admission.run_in(Lane.HEAVY, role, executor, make_page, kept=kept_page,
                                      keep=keep)

    with ThreadPoolExecutor(max_workers=3) as executor:
        first = asyncio.create_task(ask("auditor"))
        await until(lambda: admission.holding(Lane.HEAVY) == 1, "the first makes the page")
        # and three requests for the same page in line behind it, of two roles
        behind = [asyncio.create_task(ask(role)) for role in ("auditor", "finance", "auditor")]
        await until(lambda: admission.waiting(Lane.HEAVY) == 3, "three wait in line")
        # When the page is made
        gate.open()
        answers = await asyncio.gather(first, *behind)
    # Then each of them had its turn and found it kept: the page was made once
    assert answers == ["page"] * 4
    assert made == ["page"]
    assert (admission.holding(Lane.HEAVY), admission.waiting(Lane.HEAVY)) == (0, 0)


async def test_a_paced_lane_starts_a_request_at_once_and_the_next_when_the_pace_allows() -> None:
    # Given a heavy lane of 4 workers that starts at most 1 request a second
    limits = Limits(max_waiting=8, heavy=LaneLimits(workers=4, role_workers=4,
                                                    starts_per_s=1))
    admission = Admission(limits.lanes(6))
    with ThreadPoolExecutor(max_workers=6) as executor:
        # When two auditors' jobs come one after the other
        first = await admission.run_in(Lane.HEAVY, "auditor", executor, lambda: 1)
        second = asyncio.create_task(admission.run_in(Lane.HEAVY, "auditor", executor,
                                                      lambda: 2))
        # Then the first started at once, and the second waits in line with every worker free,
        # until the pace lets it start
        await until(lambda: admission.waiting(Lane.HEAVY) == 1, "the second waits in line")
        assert admission.holding(Lane.HEAVY) == 0
        assert (first, await second) == (1, 2)
        assert admission.waiting(Lane.HEAVY) == 0


async def test_a_request_the_pace_cannot_start_within_its_wait_is_refused_busy() -> None:
    # Given a heavy lane that starts one request a second, whose line waits 0.2 s at most
    limits = Limits(max_waiting=8, queue_wait_s=0.2,
                    heavy=LaneLimits(workers=2, role_workers=2, starts_per_s=1))
    admission = Admission(limits.lanes(4))
    with ThreadPoolExecutor(max_workers=4) as executor:
        assert await admission.run_in(Lane.HEAVY, "auditor", executor, lambda: "first") == "first"
        # When a second comes before the next start is due (a second later)
        with pytest.raises(Overloaded, match="heavy lane"):
            await admission.run_in(Lane.HEAVY, "auditor", executor, lambda: "second")
    # Then it was refused, and nothing of it ran or waits
    assert admission.waiting(Lane.HEAVY) == 0 and admission.holding(Lane.HEAVY) == 0


def test_only_the_heavy_lane_is_paced_by_default() -> None:
    lanes = Limits().lanes(8)
    assert lanes[Lane.HEAVY].starts_per_s == HEAVY_STARTS_PER_S
    assert math.isinf(lanes[Lane.WRITE].starts_per_s)
    assert math.isinf(lanes[Lane.READ].starts_per_s)

# -- the auditor's proofs wait for the notary on a worker, not on the event loop ------------------

# How long the test holds the notary's lock at most, as a round catching up on a long log would.
ROUND_S = 5.0
PROOFS = {
    "inclusion": "/v1/audit/proof?position={position}&tree_size={size}",
    "consistency": "/v1/audit/consistency?from={size}&to={size}",
}


class HeldRound:
    """The notary's lock held from a thread of the test, as a long round holds it: until
    ``end`` or, at most, ``ROUND_S``."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.held = threading.Event()
        self.ended = threading.Event()
        self.cut_short = False  # let go at ROUND_S, not when the test said so
        self.thread = threading.Thread(target=self._hold, name="held-round", daemon=True)
        self.thread.start()

    def _hold(self) -> None:
        with self.lock:
            self.held.set()
            self.cut_short = not self.ended.wait(ROUND_S)

    def end(self) -> None:
        self.ended.set()
        self.thread.join(ROUND_S)


@pytest.mark.parametrize("proof", list(PROOFS.values()), ids=list(PROOFS))
async def test_a_proof_waiting_for_the_notarys_round_holds_up_no_health_check_nor_deposit(
    proof: str, tmp_path: Path
) -> None:
    config = Config.of({"LEDGER_SIGNING_KEY_FILE": str(tmp_path / "signing.key"),
                        "LEDGER_CHECKPOINT_FILE": str(tmp_path / "checkpoints.txt")})
    app = create_app(store_settings(f"sqlite:///{tmp_path}/ledger.db"),
                     Tokens.parse(tokens_env()), executor_workers=6, limits=SMALL, config=config)
    async with TestClient(TestServer(app)) as client:
        service = Service(client, Gate(), [])
        username = f"u-{uuid.uuid4().hex[:10]}"
        status, opened, _ = await service.call("POST", "/v1/accounts", "system",
                                               {"username": username, "currency": "USD"})
        assert status == 201, opened
        notary = app[NOTARY]
        await asyncio.to_thread(notary.round)  # the account's opening is a leaf of the tree
        path = proof.format(position=opened["position"], size=len(notary.tree))
        # Given the notary in a long round, holding its lock
        round_ = HeldRound(notary._lock)
        try:
            await until(round_.held.is_set, "the notary's lock held")
            # When an auditor asks for a proof
            asked = asyncio.create_task(service.call("GET", path, "auditor"))
            await until(lambda: asked.done() or service.admission.holding(Lane.READ) == 1,
                        "the proof on a worker of the read lane")
            # Then it waits there, while /health and a deposit are answered at once
            health = await client.get("/health")
            deposit = await service.call("POST", f"/v1/accounts/{username}/deposits",
                                         "system", {"amount": 100, "reference": "in-round"})
            assert not round_.cut_short, "the event loop waited for the notary's round"
            assert not asked.done(), "the proof was answered before the notary's round ended"
            assert (health.status, deposit[0]) == (200, 201), deposit
        finally:
            round_.end()
        # and once the round ends, the proof is answered
        status, answer, _ = await asked
        assert status == 200, answer


# -- the route table and the bounds -----------------------------------------------------------

HEAVY_PATHS = {"/v1/events", "/v1/journal", "/v1/reconciliation", "/v1/audit/verify",
               "/v1/audit/digest", "/v1/export/beancount", "/v1/reconciliation/unmatched",
               "/v1/export/csv", "/v1/export/hledger"}  # issue 10's exports


def test_every_write_is_in_the_write_lane_and_the_books_in_the_heavy_one() -> None:
    for route in ROUTES:
        expected = (Lane.WRITE if route.method == "POST"
                    else Lane.HEAVY if route.path in HEAVY_PATHS else Lane.READ)
        assert route.lane is expected, route.path


def test_by_default_eight_threads_are_shared_five_two_one_and_a_role_leaves_one_slot() -> None:
    lanes = Limits().lanes(8)
    assert {lane: (b.workers, b.role_workers) for lane, b in lanes.items()} == {
        Lane.WRITE: (5, 4), Lane.READ: (2, 1), Lane.HEAVY: (1, 1)}
    assert {(b.max_waiting, b.role_waiting, b.queue_wait_s) for b in lanes.values()} == {
        (256, 128, 10.0)}
    assert sum(b.workers for b in lanes.values()) <= 8


@pytest.mark.parametrize(("limits", "threads"), [
    (Limits(), 2),  # a lane without a worker
    (Limits(write=LaneLimits(workers=7), read=LaneLimits(workers=2)), 8),  # more than threads
    (Limits(read=LaneLimits(role_workers=3)), 8),  # a share beyond the lane
    (Limits(max_waiting=4, heavy=LaneLimits(role_waiting=5)), 8),  # a line share beyond it
])
def test_lanes_that_cannot_be_had_are_refused(limits: Limits, threads: int) -> None:
    with pytest.raises(ValueError, match=r"lane|threads|workers|waiting"):
        limits.lanes(threads)


@pytest.mark.parametrize("lane_limits", [
    LaneLimits(workers=0), LaneLimits(max_waiting=-1), LaneLimits(queue_wait_s=0),
    LaneLimits(queue_wait_s=float("nan")), LaneLimits(role_workers=0),
    LaneLimits(role_waiting=-1), LaneLimits(queue_wait_s=31.0),  # past the deadline
    LaneLimits(starts_per_s=0), LaneLimits(starts_per_s=float("nan")),
])
def test_a_lane_bound_out_of_range_is_refused(lane_limits: LaneLimits) -> None:
    with pytest.raises(ValueError, match="LEDGER_HEAVY_"):  # named by its variable
        Limits(request_deadline_s=30.0, heavy=lane_limits)


# -- 300 auditors against a real server -------------------------------------------------------

AUDITORS = 300
DEPOSITS = 10
# A narrow heavy lane and short lines, so the auditors are surely refused too.
NARROW = {"LEDGER_HEAVY_WORKERS": "1", "LEDGER_MAX_WAITING_REQUESTS": "16"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def narrow(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"narrow-{request.param}")
    with store(request.param, workdir) as url:
        server = start_server(url, workdir, env=NARROW)
        try:
            yield server
        finally:
            server.stop()


async def test_three_hundred_auditors_paging_the_log_never_fail_a_system_deposit(
    narrow: Server,
) -> None:
    username = f"u-{uuid.uuid4().hex[:10]}"
    connector = aiohttp.TCPConnector(limit=AUDITORS + 10)
    async with aiohttp.ClientSession(narrow.base_url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def call(method: str, path: str, role: str, body: Any = None
                       ) -> tuple[int, Any, str | None]:
            async with session.request(method, path, json=body, headers=auth(role)) as reply:
                return (reply.status, await reply.json(content_type=None),
                        reply.headers.get("Retry-After"))

        assert (await call("POST", "/v1/accounts", "system",
                           {"username": username, "currency": "USD"}))[0] == 201
        stop = asyncio.Event()
        auditors: Counter[int] = Counter()

        async def auditor() -> None:
            while not stop.is_set():
                status, body, retry_after = await call("GET", "/v1/events?limit=1000",
                                                       "auditor")
                auditors[status] += 1
                if status == 503:
                    assert_busy(status, body, retry_after, "heavy lane", "auditor role")
                else:
                    assert status == 200, body

        paging = [asyncio.create_task(auditor()) for _ in range(AUDITORS)]
        try:
            await until(lambda: auditors.total() >= AUDITORS, "the auditors are paging", 60)
            for n in range(DEPOSITS):
                status, body, _ = await call("POST", f"/v1/accounts/{username}/deposits",
                                             "system", {"amount": 100, "reference": f"p-{n}"})
                assert status == 201, body
                status, body, _ = await call("GET", f"/v1/accounts/{username}/balance",
                                             "system")
                assert (status, body["posted"]) == (200, 100 * (n + 1)), body
        finally:
            stop.set()
            await asyncio.gather(*paging)
    assert auditors[200] >= 1, auditors
