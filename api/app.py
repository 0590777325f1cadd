"""``create_app``: the whole HTTP service, built in one place.

Resources live in ``cleanup_ctx``, opened in this order and closed in the reverse: the bounded
executors (one for requests, one thread for ``verify``), the ledger application, the read models,
the read-model keeper. On PostgreSQL the ledger commits from the event loop while it serves
(``projections.loopwriter``). Middlewares, outermost
first: request id and metrics, problems (every error becomes problem+json), the request deadline
(``api.limits``), auth (token, role). Handlers reach the executor through the admission's lanes
(``api.limits``), each route in the lane the route table gives it.
Handler cancellation stays off (aiohttp's default): a client hanging up never cuts a write in
half. Bodies over ``client_max_size`` are refused with 413.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime

from aiohttp import web

from api import logs, openapi, sealed_pages, webhooks
from api.auditkit import notary_context, notary_opened
from api.auth import Tokens, auth_middleware
from api.config import Config
from api.context import Keeper, ReadSide, SharedLook, Verifier, in_executor
from api.edge import edge_middleware
from api.edge import install as install_edge
from api.finance import default_verifier
from api.keys import (
    ADMISSION,
    AUDIT_EXECUTOR,
    AUDIT_LOCK,
    CONFIG,
    CURRENT,
    DEADLINES,
    EXECUTOR,
    KEEPER,
    LEDGER,
    LIMITS,
    METRICS,
    METRICS_LOOK,
    OPENAPI_JSON,
    PAGE_MAKER,
    READ_MODELS,
    READ_WAIT_S,
    READY_LOOK,
    SETTINGS,
    SIGNIN,
    TOKENS,
    VERIFIER,
    WEBHOOK_URLS,
    WRITER,
)
from api.limits import Admission, Deadlines, Lane, Limits, deadline_middleware
from api.log_pages import PageMaker
from api.observability import Metrics, observe_middleware
from api.people import staff_directory
from api.problems import problem_middleware
from api.routes import ROUTES
from api.routing import register
from api.signin import SignIn
from ledger.application import DEFAULT_LOCK_TIMEOUT_S, DEFAULT_MAX_ATTEMPTS, LedgerApplication
from ledger.clock import utc_now
from ledger.refund_request import second_approval_thresholds
from ledger.settings import StoreSettings
from projections.current import CurrentReader
from projections.loopwriter import writing_on_loop
from projections.notes import signing_settings
from projections.readmodels import PROJECTIONS, ReadModelKeeper, ReadModels, prepare_read_models
from projections.store import open_application

MAX_BODY_BYTES = 64 * 1024
DEFAULT_READ_WAIT_S = 5.0
# Threads for writes beyond the store's pool (see create_app): as many writes as this may wait
# on the committer at once, and so share its transactions.
COMMIT_WAITERS = 24
MAX_ATTEMPTS_BOUND = 1000
MAX_LOCK_TIMEOUT_S = 60.0


def create_app(
    settings: StoreSettings,
    tokens: Tokens,
    *,
    executor_workers: int | None = None,
    read_wait_s: float = DEFAULT_READ_WAIT_S,
    max_body_bytes: int = MAX_BODY_BYTES,
    read_models: Callable[[StoreSettings, LedgerApplication], ReadSide] = ReadModels,
    keeper: Callable[[StoreSettings], Keeper] = ReadModelKeeper,
    verifier: Verifier | None = None,
    limits: Limits = Limits(),  # noqa: B008 (frozen: one shared default is safe)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    config: Config | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> web.Application:
    """The service on ``settings``' store. ``executor_workers`` defaults to the store's pool
    size: never more threads than connections to give them. ``limits`` bound the requests
    waiting for a worker and how long any request takes (``api.limits``); ``max_attempts`` and
    ``lock_timeout_s`` bound the ledger's optimistic retries and per-account lock wait (past
    either: 503 ``busy``). The executor's threads are shared out between the lanes (write,
    read, heavy; ``Limits.lanes``): each needs one, so an executor has at least three.
    ``config`` (``api.config``; None: every default) gives the rest: sign-in, webhooks, the
    notary's key and pace, the second approval's thresholds. ``clock`` is the shop's clock
    (its calendar: ages, deadlines, idle cut-offs); a test moves it, events keep their own
    timestamps. ValueError when it cannot be had."""
    config = Config.of({}) if config is None else config
    if verifier is None:  # audit.verify, the checkpoints checked with the notary's key
        key_file, origin, checkpoint_file = signing_settings(
            config.signing_key_file, config.origin, config.checkpoint_file)
        verifier = functools.partial(default_verifier, signing_key=(key_file, origin),
                                     checkpoint_file=checkpoint_file)
    webhook_settings = webhooks.WebhookSettings.from_config(config)
    second_approval = second_approval_thresholds(config.second_approval_above)
    signin = SignIn.from_config(config)  # reads the JWKS file: unusable, no start
    workers = executor_workers or settings.pool_size
    if not 1 <= workers <= settings.pool_size:
        raise ValueError(f"executor_workers is 1..{settings.pool_size} (the pool size)")
    if not 1 <= max_attempts <= MAX_ATTEMPTS_BOUND:
        raise ValueError(f"LEDGER_MAX_ATTEMPTS is 1..{MAX_ATTEMPTS_BOUND}")
    if not 0 < lock_timeout_s <= MAX_LOCK_TIMEOUT_S:
        raise ValueError(f"LEDGER_LOCK_TIMEOUT_S is in (0, {MAX_LOCK_TIMEOUT_S:g}]")
    lanes = limits.lanes(workers)  # ValueError when the threads cannot give each lane its own
    threads = workers
    if limits.write.workers is None:
        # A write's job decides from the cache and then waits for the committer, holding a
        # thread but no connection: writers get threads of their own beyond the pool's.
        write = lanes[Lane.WRITE]
        lanes[Lane.WRITE] = replace(write, workers=write.workers + COMMIT_WAITERS,
                                    role_workers=write.role_workers + COMMIT_WAITERS)
        threads += COMMIT_WAITERS
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[observe_middleware, problem_middleware, edge_middleware,
                     deadline_middleware, auth_middleware],
    )
    install_edge(app)
    sealed_pages.install(app)
    app[LIMITS] = limits
    app[WEBHOOK_URLS] = webhook_settings.urls
    app[DEADLINES] = Deadlines(limits.request_deadline_s)
    app[SETTINGS] = settings
    app[CONFIG] = config
    if signin is not None:
        app[SIGNIN] = signin
    app[TOKENS] = tokens
    app[VERIFIER] = verifier
    app[READ_WAIT_S] = read_wait_s
    app[METRICS] = Metrics()
    app[READY_LOOK] = SharedLook()
    app[METRICS_LOOK] = SharedLook()
    register(app, ROUTES)
    app[OPENAPI_JSON] = json.dumps(
        openapi.build(ROUTES, request_deadline_s=limits.request_deadline_s,
                      max_body_bytes=max_body_bytes)).encode()

    async def executor(app: web.Application) -> AsyncIterator[None]:
        app[EXECUTOR] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ledger")
        app[AUDIT_EXECUTOR] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        app[AUDIT_LOCK] = asyncio.Lock()
        app[ADMISSION] = Admission(lanes)
        yield
        app[AUDIT_EXECUTOR].shutdown(wait=True)
        app[EXECUTOR].shutdown(wait=True)

    async def ledger(app: web.Application) -> AsyncIterator[None]:
        app[LEDGER] = await in_executor(app, open_application, settings,
                                        max_attempts=max_attempts, lock_timeout_s=lock_timeout_s,
                                        second_approval_above=second_approval, clock=clock)
        async with writing_on_loop(app[LEDGER]) as writer:  # PostgreSQL: commits on the loop
            app[WRITER] = writer
            yield
        await in_executor(app, app[LEDGER].close)

    async def read_side(app: web.Application) -> AsyncIterator[None]:
        # The read models' tables are made before the keeper's thread or the readers open them
        # (one process at a time): made from two threads at once, tracking tables race.
        await in_executor(app, prepare_read_models, settings)
        app[READ_MODELS] = await in_executor(app, read_models, settings, app[LEDGER])
        current = None
        if settings.kind == "postgres":
            current = CurrentReader(settings, [f"{p.name}_tracking" for p in PROJECTIONS])
            await current.open()
        app[CURRENT] = current
        app[KEEPER] = keeper(settings)
        await in_executor(app, app[KEEPER].start)
        if settings.kind == "postgres":  # the log's pages made by a child (api.log_pages)
            app[PAGE_MAKER] = PageMaker(settings, functools.partial(
                logs.configure, *logs.settings_of(config)))
        yield
        if PAGE_MAKER in app:
            await in_executor(app, app[PAGE_MAKER].close)
        await in_executor(app, app[KEEPER].stop)
        if current is not None:
            await current.close()
        await in_executor(app, app[READ_MODELS].close)

    app.cleanup_ctx.extend([executor, ledger, notary_opened, read_side])
    app.cleanup_ctx.append(staff_directory)  # named staff and sign-in (api.people)
    app.cleanup_ctx.append(webhooks.delivery(webhook_settings))  # after the keeper starts
    app.cleanup_ctx.append(notary_context)  # checkpoints and the watch (api.auditkit)
    return app

