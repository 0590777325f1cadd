"""Every key of the service's application and requests, in one place.

A handler, a middleware or a resource's context reaches what the app holds through these typed
keys (``request.app[LEDGER]``, ``request[ACTOR]``). This module imports no other module of
``api`` as it runs, so any of them may import it: the types of the keys made in ``api`` are
named for the type checker only (their modules import this one).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ledger.application import LedgerApplication
from ledger.identity import Actor
from ledger.settings import StoreSettings

if TYPE_CHECKING:
    from api.auth import Tokens
    from api.config import Config
    from api.context import Keeper, ReadSide, SharedLook, Verifier
    from api.edge import EdgeStats
    from api.limits import Admission, Deadlines, Lane, Limits
    from api.log_pages import PageMaker
    from api.observability import Metrics
    from api.sealed_pages import SealedPages
    from api.signin import SignIn
    from projections.checkpoints import Notary
    from projections.current import CurrentReader
    from projections.loopwriter import LoopWriter
    from projections.staff import StaffDirectory

# -- the app's resources -----------------------------------------------------------------------

SETTINGS = web.AppKey("settings", StoreSettings)
# The configuration read at start (``api.config``): what the resources below are made with.
CONFIG: web.AppKey[Config] = web.AppKey("config")
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
# One verify at a time, on a thread of its own: a long one never takes the executor's workers.
AUDIT_EXECUTOR = web.AppKey("audit_executor", ThreadPoolExecutor)
AUDIT_LOCK = web.AppKey("audit_lock", asyncio.Lock)
LEDGER = web.AppKey("ledger", LedgerApplication)
READ_MODELS: web.AppKey[ReadSide] = web.AppKey("read_models")
KEEPER: web.AppKey[Keeper] = web.AppKey("keeper")
READ_WAIT_S = web.AppKey("read_wait_s", float)
# Current reads in one statement on an async pool, in the event loop (PostgreSQL; None on
# SQLite, whose reads stay on the executor): ``projections.current``.
CURRENT: web.AppKey[CurrentReader | None] = web.AppKey("current_reads")
WRITER: web.AppKey[LoopWriter | None] = web.AppKey("writer")
VERIFIER: web.AppKey[Verifier] = web.AppKey("verifier")
# Checkpoints and the watch (``api.auditkit``).
NOTARY: web.AppKey[Notary] = web.AppKey("notary")
# What the service's login may do beyond its needs (None: nothing; issue 10).
EXCESS_PRIVILEGE: web.AppKey[str | None] = web.AppKey("excess_privilege")
# Named staff (``api.people``) and their sign-in (``api.signin``).
STAFF: web.AppKey[StaffDirectory] = web.AppKey("staff")
SIGNIN: web.AppKey[SignIn] = web.AppKey("signin")
# Full pages of /v1/events that can no longer change, as answered (``api.sealed_pages``).
EVENT_PAGES: web.AppKey[SealedPages] = web.AppKey("event_pages")
# The child process making pages of /v1/events (PostgreSQL; ``api.log_pages``).
PAGE_MAKER: web.AppKey[PageMaker] = web.AppKey("page_maker")

# -- bounds, the route table's facts, the edge --------------------------------------------------

LIMITS: web.AppKey[Limits] = web.AppKey("limits")
# The requests' deadlines, LIMITS' request_deadline_s after each began (``api.limits``).
DEADLINES: web.AppKey[Deadlines] = web.AppKey("deadlines")
# Worker slots of EXECUTOR for requests, by lane and role (``api.limits``).
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")
# Each route's lane, by route name (``api.routing.register``).
ROUTE_LANES: web.AppKey[dict[str, Lane]] = web.AppKey("route_lanes")
# Roles of each route, by route name: None means no token needed.
ROUTE_ROLES = web.AppKey("route_roles", dict[str, frozenset[str] | None])
TOKENS: web.AppKey[Tokens] = web.AppKey("tokens")
OPS_PORT = web.AppKey("ops_port", int)
EDGE_STATS: web.AppKey[EdgeStats] = web.AppKey("edge_stats")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
# The probes' looks at the store, each shared by the requests that ask meanwhile
# (``api.operations``, ``api.gauges``).
READY_LOOK: web.AppKey[SharedLook[dict[str, Any]]] = web.AppKey("ready_look")
METRICS_LOOK: web.AppKey[SharedLook[dict[str, Any]]] = web.AppKey("metrics_look")
OPENAPI_JSON = web.AppKey("openapi_json", bytes)
# The webhook receivers configured (LEDGER_WEBHOOK_URL): the outbox's page counts them.
WEBHOOK_URLS: web.AppKey[tuple[str, ...]] = web.AppKey("webhook_urls")

# -- a request's --------------------------------------------------------------------------------

ACTOR = web.RequestKey("actor", Actor)
REQUEST_ID = web.RequestKey("request_id", str)
# True while the request's body is being read (``api.parsing.body``): a deadline passing then
# is the client's (408), not the service's (503).
READING_BODY = web.RequestKey("reading_body", bool)
