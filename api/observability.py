"""Request ids and Prometheus metrics, from the outermost middleware.

Every request gets an id, the caller's ``X-Request-Id`` when it is sane (1-128 printable ASCII)
or a fresh UUID; it is echoed in the answer, recorded in the events the request writes (as the
actor's request id) and in the logs. Requests are counted and timed by route *template* (never
the raw path: label values stay bounded), method and status.
"""

from __future__ import annotations

import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from api.context import REQUEST_ID

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"


class Metrics:
    """The service's metrics, in a registry of its own (one per app, so tests don't share)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ledger_http_requests",
            "HTTP requests answered",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "ledger_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ("route", "method"),
            registry=self.registry,
        )
        self.history_damage = Gauge(
            "ledger_history_damaged_position",
            "The first log position whose seal does not hold, where the read models stop "
            "(0: none); set on every /ready",
            registry=self.registry,
        )
        # the notary's (issue 10), set on every /metrics
        self.history_damage_found = Gauge(
            "ledger_history_damage_found",
            "How many times the notary found the history damaged since the process started",
            registry=self.registry,
        )
        self.checkpoint_tree_size = Gauge(
            "ledger_checkpoint_tree_size", "Leaves in the notary's Merkle tree",
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)


METRICS = web.AppKey("metrics", Metrics)


def request_id_of(header: str | None) -> str:
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else resource.canonical


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: the problem middleware inside it turns every error into an answer."""
    request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    response = await handler(request)
    response.headers[REQUEST_ID_HEADER] = request_id
    request.app[METRICS].observe(
        route_template(request), request.method, response.status, time.perf_counter() - started
    )
    return response
