"""The gauges an operator pages on, brought up to date on each scrape of ``/metrics``.

Counted as they happen (``api.observability``): requests, their latency, rejections by lane.
Read at scrape time, here: the log's head and each read model's position, the lag (events, and
seconds since the read models last had every event), whether this process keeps the read
models (leadership), the chain (damaged or not), the store's pool, how the writer recorded its
batches (PostgreSQL), each admission lane's workers in use and line, the open connections, and
the business: open refund requests (count and amount by currency) and overdue return cases.
The reads go through the read lane like any request's, one look shared by every scrape
asked while it is made (``api.context.SharedLook``); a store that does not answer sets
``ledger_store_up`` to 0 and leaves the rest as they were.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from api.context import ReadSide, run
from api.keys import (
    ADMISSION,
    CURRENT,
    EDGE_STATS,
    EVENT_PAGES,
    KEEPER,
    LEDGER,
    METRICS,
    METRICS_LOOK,
    PAGE_MAKER,
    READ_MODELS,
    SETTINGS,
    WRITER,
)
from api.limits import Lane
from api.observability import Metrics

# Overdue cases are counted a page of 1,000 at a time, up to this many pages.
OVERDUE_PAGES = 10
log = logging.getLogger("api.gauges")


def _facts(read_models: ReadSide) -> dict[str, Any]:
    status = read_models.status()
    open_requests = read_models.refund_request_totals(status="open", username=None,
                                                      currency=None)
    overdue, after = 0, None
    for _ in range(OVERDUE_PAGES):
        page = read_models.return_cases(state=None, username=None, overdue=True, limit=1000,
                                        after=after)
        overdue += len(page.items)
        after = page.next
        if after is None:
            break
    return {"status": status, "open_requests": open_requests, "overdue": overdue}


def lag_seconds(metrics: Metrics, lag: int, age_s: float | None, now: float) -> float:
    """The read models' lag in seconds: the age of the oldest event not yet applied
    (``ReadModels.status``). When its time cannot be trusted (its seal does not hold, and the
    read models stop there), how long this process has seen them behind (``now``: monotonic)."""
    if lag == 0 or age_s is not None:
        metrics.lag_since = None
        return age_s or 0.0
    if metrics.lag_since is None:
        metrics.lag_since = now
    return now - metrics.lag_since


def _pools(app: web.Application, metrics: Metrics) -> None:
    metrics.pool_connections.labels("store", "size").set(app[SETTINGS].pool_size)
    pool = getattr(getattr(app[LEDGER].recorder, "datastore", None), "pool", None)
    stats = getattr(pool, "get_stats", None)
    if callable(stats):  # psycopg's pool (PostgreSQL)
        _pool_stats(metrics, "store", stats())
    current = app[CURRENT]
    if current is not None:  # PostgreSQL: reads in the event loop, some answered as kept
        _pool_stats(metrics, "current_reads", current.pool_stats())
        metrics.current_reads_kept.set(current.kept)
        metrics.current_reads_answered_kept.set(current.kept_answers)
        metrics.current_reads_head_looks.set(current.heads.looks)
    writer = app.get(WRITER)
    if writer is not None:  # PostgreSQL: commits from the event loop
        metrics.writer_batches.labels("statement").set(writer.recorder.statements)
        metrics.writer_batches.labels("thread").set(writer.recorder.on_thread)
        metrics.writer_connection_failures.set(writer.recorder.connection_failures)


def _pool_stats(metrics: Metrics, pool: str, stats: dict[str, int]) -> None:
    size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
    metrics.pool_connections.labels(pool, "size").set(size)
    metrics.pool_connections.labels(pool, "idle").set(idle)
    metrics.pool_connections.labels(pool, "in_use").set(size - idle)
    metrics.pool_connections.labels(pool, "waiting").set(stats.get("requests_waiting", 0))


def _lanes(app: web.Application, metrics: Metrics) -> None:
    admission = app[ADMISSION]
    for lane in Lane:
        metrics.lane_workers.labels(lane.value).set(admission.bounds(lane).workers)
        metrics.lane_in_use.labels(lane.value).set(admission.holding(lane))
        metrics.lane_waiting.labels(lane.value).set(admission.waiting(lane))
        metrics.lane_rejections.labels(lane.value)  # shown at 0 before the first


async def refresh(request: web.Request) -> None:
    app = request.app
    metrics = app[METRICS]
    _lanes(app, metrics)
    _pools(app, metrics)
    leader = getattr(app[KEEPER], "is_leader", None)
    metrics.keeper_leader.set(1 if leader is not None and leader.is_set() else 0)
    edge = app.get(EDGE_STATS)
    if edge is not None:
        metrics.connections.set(edge.open_connections())
        metrics.connections_evicted.set(edge.evicted())
    pages = app.get(EVENT_PAGES)
    if pages is not None:
        metrics.event_pages_kept.set(pages.size_bytes)
        metrics.event_pages_answered_kept.set(pages.hits)
    maker = app.get(PAGE_MAKER)
    if maker is not None:
        metrics.event_pages_made_by_child.set(maker.pages)
        metrics.event_page_maker_failures.set(maker.failures)
    try:
        facts = await app[METRICS_LOOK].get(lambda: run(request, _facts, app[READ_MODELS]))
    except Exception as error:  # any failure to reach the store: said by ledger_store_up
        log.warning("metrics: the store did not answer: %s", type(error).__name__)
        metrics.store_up.set(0)
        return
    metrics.store_up.set(1)
    status = facts["status"]
    metrics.log_position.set(status["log_position"])
    for name, position in status["read_models"].items():
        metrics.read_model_position.labels(name).set(position)
    lag = status["lag"]
    metrics.read_model_lag_events.set(lag)
    metrics.read_model_lag_seconds.set(
        lag_seconds(metrics, lag, status["lag_seconds"], time.monotonic()))
    damage = status.get("damage")
    metrics.chain_ok.set(0 if damage else 1)
    metrics.history_damage.set(damage["position"] if damage else 0)
    metrics.open_refund_requests.clear()
    metrics.open_refund_amount.clear()
    for total in facts["open_requests"]:
        metrics.open_refund_requests.labels(total["currency"]).set(total["count"])
        metrics.open_refund_amount.labels(total["currency"]).set(total["amount"])
    metrics.overdue_cases.set(facts["overdue"])
