"""Handlers of the operations endpoints: health, readiness, metrics and the API's description.

``/health`` says the process answers (no token, no database). ``/ready`` says the database
answers and how far the read models lag; 503 ``not_ready`` when the database does not answer
within ``READY_TIMEOUT_S``. Neither needs a token: every ``/ready`` (and every ``/metrics``)
asked while one is looking at the store shares that look (``api.context.SharedLook``), so a
crowd of them holds one slot of the read lane, not its whole line.
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
from api.keys import METRICS, OPENAPI_JSON, READ_MODELS, READY_LOOK
from api.problems import Overloaded
from ledger.errors import HistoryDamaged, NotReady

READY_TIMEOUT_S = 5.0

log = logging.getLogger("api.operations")


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    app = request.app
    try:
        status = dict(await asyncio.wait_for(
            app[READY_LOOK].get(lambda: run(request, app[READ_MODELS].status)),
            READY_TIMEOUT_S,
        ))
    except Overloaded as error:  # the read lane's line, not the store: said as it is
        log.warning("not ready: %s", error)
        raise NotReady("the service is too busy to look at the database: the read lane's "
                       "line is full") from None
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
