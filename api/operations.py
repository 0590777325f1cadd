"""Handlers of the operations endpoints: health, readiness, metrics and the API's description.

``/health`` says the process answers (no token, no database). ``/ready`` says the database
answers and how far the read models lag; 503 ``not_ready`` when the database does not answer
within ``READY_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import gauges
from api.auditkit import check_history, observe_notary
from api.context import run
from api.handlers import json_response
from api.keys import METRICS, OPENAPI_JSON, READ_MODELS
from ledger.errors import HistoryDamaged, NotReady

READY_TIMEOUT_S = 5.0

log = logging.getLogger("api.operations")


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    try:
        status = await asyncio.wait_for(
            run(request, request.app[READ_MODELS].status), READY_TIMEOUT_S
        )
    except Exception as error:  # any failure to reach the store means: not ready
        log.warning("not ready: %s: %s", type(error).__name__, error)
        raise NotReady("the database does not answer") from None
    damage = status.pop("damage", None)
    request.app[METRICS].history_damage.set(damage["position"] if damage else 0)
    if damage:
        log.error("not ready: history damaged at position %d (%s)", damage["position"],
                  damage["what"])
        raise HistoryDamaged(
            f"the history is damaged at position {damage['position']} ({damage['what']}): the "
            "read models stop before it, and nothing after it is served",
            position=damage["position"],
        )
    extra = check_history(request.app)  # the notary's watch (issue 10)
    return json_response({"status": "ready", **status, **extra})


async def metrics(request: web.Request) -> web.Response:
    await gauges.refresh(request)
    observe_notary(request.app)
    return web.Response(
        body=generate_latest(request.app[METRICS].registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_JSON], content_type="application/json")
