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

from api.keys import METRICS, REQUEST_ID, ROUTE_LANES

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

        self.log_position = Gauge(
            "ledger_log_position", "The event log's head: the position of its last event",
            registry=self.registry)
        self.read_model_position = Gauge(
            "ledger_read_model_position", "The last log position each read model has applied",
            ("read_model",), registry=self.registry)
        self.read_model_lag_events = Gauge(
            "ledger_read_model_lag_events",
            "Events in the log the slowest read model has not applied yet", registry=self.registry)
        self.read_model_lag_seconds = Gauge(
            "ledger_read_model_lag_seconds",
            "Age in seconds of the oldest event the slowest read model has not applied yet "
            "(0: current now)",
            registry=self.registry)
        self.keeper_leader = Gauge(
            "ledger_read_model_keeper_leader",
            "1 when this process keeps the read models current (holds their lock), else 0",
            registry=self.registry)
        self.chain_ok = Gauge(
            "ledger_chain_ok",
            "1 when every event after the read models' position has a valid seal, 0 when the "
            "history is damaged (see ledger_history_damaged_position)", registry=self.registry)
        self.store_up = Gauge(
            "ledger_store_up", "1 when the store answered the last scrape's questions, else 0",
            registry=self.registry)
        self.pool_connections = Gauge(
            "ledger_pool_connections",
            "The store's connection pool: size, and (PostgreSQL) in_use, idle and waiting",
            ("pool", "state"), registry=self.registry)
        self.lane_workers = Gauge(
            "ledger_lane_workers", "Worker slots of each admission lane", ("lane",),
            registry=self.registry)
        self.lane_in_use = Gauge(
            "ledger_lane_in_use", "Worker slots of each admission lane in use now", ("lane",),
            registry=self.registry)
        self.lane_waiting = Gauge(
            "ledger_lane_waiting", "Requests waiting in each admission lane's line now",
            ("lane",), registry=self.registry)
        self.lane_rejections = Counter(
            "ledger_lane_rejections", "Requests refused 503 busy, by the lane they waited in",
            ("lane",), registry=self.registry)
        self.open_refund_requests = Gauge(
            "ledger_open_refund_requests",
            "Refund requests requested or approved (money still held), by currency",
            ("currency",), registry=self.registry)
        self.open_refund_amount = Gauge(
            "ledger_open_refund_requests_amount_minor",
            "The amount of the open refund requests, in minor units, by currency",
            ("currency",), registry=self.registry)
        self.overdue_cases = Gauge(
            "ledger_overdue_return_cases", "Return cases past one of their deadlines",
            registry=self.registry)
        self.connections = Gauge(
            "ledger_http_connections", "Open HTTP connections (api.edge)", registry=self.registry)
        self.connections_evicted = Gauge(
            "ledger_http_connections_evicted",
            "Connections closed to keep under the cap since start (api.edge)",
            registry=self.registry)
        self.event_pages_kept = Gauge(
            "ledger_event_pages_kept_bytes",
            "Bytes of full /v1/events pages kept as answered, gzipped (api.sealed_pages)",
            registry=self.registry)
        self.event_pages_answered_kept = Gauge(
            "ledger_event_pages_answered_kept",
            "/v1/events pages answered from the kept pages since start (api.sealed_pages)",
            registry=self.registry)
        self.event_pages_made_by_child = Gauge(
            "ledger_event_pages_made_by_child",
            "/v1/events pages made by the page maker's child process since start "
            "(PostgreSQL; api.log_pages)", registry=self.registry)
        self.event_page_maker_failures = Gauge(
            "ledger_event_page_maker_failures",
            "Times the page maker's child could not answer since start, its pages then made "
            "on a thread (api.log_pages)", registry=self.registry)
        self.current_reads_kept = Gauge(
            "ledger_current_reads_kept",
            "Answers of current reads kept while the log stands still (projections.current)",
            registry=self.registry)
        self.current_reads_answered_kept = Gauge(
            "ledger_current_reads_answered_kept",
            "Current reads answered from kept rows after a look at the log's head, since start",
            registry=self.registry)
        self.current_reads_head_looks = Gauge(
            "ledger_current_reads_head_looks",
            "Looks at the log's head, each shared by the reads waiting for it, since start",
            registry=self.registry)
        self.writer_batches = Gauge(
            "ledger_writer_batches",
            "PostgreSQL: batches of commands recorded since start, by how: one statement on the"
            " writer's connection, or on its thread under the writers' lock",
            ["how"], registry=self.registry)
        self.writer_connection_failures = Gauge(
            "ledger_writer_connection_failures",
            "PostgreSQL: statements or connects of the writer's connection that failed since start",
            registry=self.registry)
        # When this process first saw the read models behind an event whose time cannot be
        # trusted (``api.gauges.lag_seconds``), monotonic.
        self.lag_since: float | None = None
        # The request counter's and latency histogram's series of each route, method and status
        # (``labels()`` looks them up under a lock: a hundredth of a deposit's event-loop time).
        self._answered: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        found = self._answered.get((route, method, status))
        if found is None:  # a route's template, a known method and a status: a bounded set
            found = self._answered[(route, method, status)] = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
        found[0].inc()
        found[1].observe(seconds)


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
    metrics = request.app[METRICS]
    metrics.observe(
        route_template(request), request.method, response.status, time.perf_counter() - started
    )
    if response.status == 503 and _is_busy(response):
        lane = request.app[ROUTE_LANES].get(request.match_info.route.name or "")
        if lane is not None:
            metrics.lane_rejections.labels(lane.value).inc()
    return response


def _is_busy(response: web.StreamResponse) -> bool:
    body = getattr(response, "body", None)
    return isinstance(body, bytes) and b'"code": "busy"' in body
