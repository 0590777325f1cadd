"""Handlers of the money endpoints: parse, build the command, have the ledger execute it, map
the answer.

A write answers its resource with ``position`` (the log position of the last event it wrote):
201 when it created something, 200 for a step on something existing or a natural duplicate,
and with ``Idempotent-Replayed: true`` when an ``Idempotency-Key`` answered it. A read first
waits (bounded) until the read models reflect every write acknowledged before it began.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, ParamSpec

import orjson
from aiohttp import web

from api import models, parsing
from api.context import Page, ReadSide, read, read_current, run_first_on_loop
from api.keys import ACTOR, KEEPER, LEDGER, NOTARY, STAFF
from ledger import identity, money
from ledger.commands import (
    ApproveRefund,
    CancelRefund,
    Command,
    Deposit,
    FailPurchase,
    OpenAccount,
    PayRefund,
    Purchase,
    RejectRefund,
    RequestRefund,
)
from ledger.errors import HistoryDamaged, NotFound
from ledger.pipeline import Outcome
from projections.accounts import account_query, balance_query
from projections.chain import Damage

P = ParamSpec("P")

STATUS_OF_OUTCOME = {"created": 201, "ok": 200, "existing": 200}
REPLAYED_HEADER = "Idempotent-Replayed"
_JSON_TYPES_ONLY = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def json_body(data: Any) -> bytes:
    """The answer's JSON. The ledger and the read models answer JSON types only; anything else
    is a bug (500): orjson raises a TypeError for a date or a dataclass (passed through, and no
    default)."""
    return orjson.dumps(data, option=_JSON_TYPES_ONLY)


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return json_bytes_response(json_body(data), status=status, headers=headers)


def json_bytes_response(body: bytes, *, status: int = 200,
                        headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json",
                        charset="utf-8", headers=headers)


def refuse_writes_on_damage(app: web.Application) -> None:
    """Before any write: HistoryDamaged while the notary or the staff directory names damage.
    A log cut under the service (a tail rolled back with its rows) loads every account without
    a broken seal, so only this stops money paid out in the lost events being spent again."""
    damage = history_damage(app)
    if damage is not None:
        raise HistoryDamaged(
            f"the history is damaged at position {damage.position} ({damage.what}): no write is "
            "taken until an operator restores the store (`ledger verify` names every damaged "
            "position)", position=damage.position)


def history_damage(app: web.Application) -> Damage | None:
    """The first damage the running service's watches (the notary, the staff directory) name."""
    watches = (app.get(NOTARY), app.get(STAFF))
    found = [w.damage for w in watches if w is not None and w.damage is not None]
    return min(found, key=lambda d: d.position, default=None)


async def command(request: web.Request, make: Callable[P, Command], *args: P.args,
                  **kwargs: P.kwargs) -> web.Response:
    """Build the command (``make(*args, **kwargs)``), have the ledger execute it, answer."""
    ledger, actor = request.app[LEDGER], request[ACTOR]
    key = parsing.idempotency_key(request)
    refuse_writes_on_damage(request.app)
    built: list[Command] = []

    async def on_loop() -> Outcome | None:
        # Built once it has a slot of its lane: a refusal of its fields waits like any answer.
        built.append(make(*args, **kwargs))
        return await ledger.execute_on_loop(built[0], actor=actor, idempotency_key=key)

    def execute() -> Outcome:
        command = built[0] if built else make(*args, **kwargs)
        return ledger.execute(command, actor=actor, idempotency_key=key)

    outcome = await run_first_on_loop(request, on_loop if ledger.writes_on_loop else None,
                                      execute)
    # The read models of this process need not wait for their next poll to see the write.
    request.app[KEEPER].nudge()
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else None
    return json_response({**outcome.body, "position": outcome.position},
                         status=STATUS_OF_OUTCOME[outcome.outcome], headers=headers)


def _account_or_404(read_models: ReadSide, name: str) -> dict[str, Any]:
    found = read_models.account(name)
    if found is None:
        raise NotFound(f"no account for {name!r}", username=name)
    return found


def page(found: Page) -> dict[str, Any]:
    return {"items": found.items, "next": found.next}


# -- accounts and money -------------------------------------------------------------------------


async def open_account(request: web.Request) -> web.Response:
    b = await parsing.body(request, models.OpenAccount)
    return await command(request, OpenAccount, b.username, b.currency)


async def deposit(request: web.Request) -> web.Response:
    name = parsing.username(request)
    b = await parsing.body(request, models.Deposit)
    return await command(request, Deposit, name, b.amount, b.reference)


async def purchase(request: web.Request) -> web.Response:
    name = parsing.username(request)
    b = await parsing.body(request, models.Purchase)
    return await command(request, Purchase, name, b.order_no, b.amount)


async def fail_purchase(request: web.Request) -> web.Response:
    name = parsing.username(request)
    order_no = request.match_info["order_no"]
    b = await parsing.body(request, models.PurchaseFailure)
    return await command(request, FailPurchase, name, order_no, b.amount, b.reason)


async def list_accounts(request: web.Request) -> web.Response:
    q = parsing.query(request, models.AccountListQuery)
    currency = None if q.currency is None else money.currency(q.currency)
    prefix = None if q.prefix is None else q.prefix.lower()

    def customers(rm: ReadSide) -> dict[str, Any]:
        return page(rm.customers(prefix=prefix, currency=currency, with_balance=q.with_balance,
                                 limit=q.limit, after=q.after))

    return json_response(await read(request, customers))


async def get_account(request: web.Request) -> web.Response:
    name = parsing.username(request)
    parsing.query(request, models.NoQuery)
    found = await read_current(request, account_query(name), lambda rm: rm.account(name))
    if found is None:
        raise NotFound(f"no account for {name!r}", username=name)
    return json_response(found)


async def get_balance(request: web.Request) -> web.Response:
    name = parsing.username(request)
    q = parsing.query(request, models.BalanceQuery)
    found = await read_current(
        request,
        balance_query(name, at_position=q.at_position, as_of=q.as_of),
        lambda rm: rm.balance(name, at_position=q.at_position, as_of=q.as_of),
    )
    if found is None:
        raise NotFound(f"no account for {name!r} at that point", username=name)
    return json_response(found)


async def get_history(request: web.Request) -> web.Response:
    name = parsing.username(request)
    q = parsing.query(request, models.PageQuery)

    def history(rm: ReadSide) -> dict[str, Any]:
        _account_or_404(rm, name)
        return page(rm.history(name, limit=q.limit, after=q.after))

    return json_response(await read(request, history))


def _with_case_details(rm: ReadSide, orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each order with ``order_refundable`` (the order's own refundable, named apart from the
    balance's) and its cases' kind, state and opening date beside their ids."""
    briefs = rm.case_briefs([case_id for order in orders for case_id in order["cases"]])
    return [
        {**order, "order_refundable": order["refundable"],
         "case_details": [briefs[c] for c in order["cases"] if c in briefs]}
        for order in orders
    ]


async def get_orders(request: web.Request) -> web.Response:
    name = parsing.username(request)
    q = parsing.query(request, models.PageQuery)

    def orders(rm: ReadSide) -> dict[str, Any]:
        _account_or_404(rm, name)
        found = rm.orders(name, limit=q.limit, after=q.after)
        return {"items": _with_case_details(rm, found.items), "next": found.next}

    return json_response(await read(request, orders))


async def get_refundable(request: web.Request) -> web.Response:
    name = parsing.username(request)
    q = parsing.query(request, models.PageQuery)

    def refundable(rm: ReadSide) -> dict[str, Any]:
        account = _account_or_404(rm, name)
        orders = rm.orders(name, limit=q.limit, after=q.after)
        fields = ("username", "currency", "available", "held", "refundable")
        return {**{f: account[f] for f in fields}, "balance_refundable": account["refundable"],
                "orders": _with_case_details(rm, orders.items), "next": orders.next}

    return json_response(await read(request, refundable))


# -- balance refunds ----------------------------------------------------------------------------


async def request_refund(request: web.Request) -> web.Response:
    name = parsing.username(request)
    b = await parsing.body(request, models.RefundRequestCreate)
    return await command(request, RequestRefund, name, b.order_no, b.amount, b.reason)


async def approve_refund(request: web.Request) -> web.Response:
    request_id = parsing.refund_request_id(request)
    b = await parsing.body(request, models.Approve)
    return await command(request, ApproveRefund, request_id, b.note)


async def reject_refund(request: web.Request) -> web.Response:
    request_id = parsing.refund_request_id(request)
    b = await parsing.body(request, models.Reject)
    return await command(request, RejectRefund, request_id, b.reason)


async def cancel_refund(request: web.Request) -> web.Response:
    request_id = parsing.refund_request_id(request)
    b = await parsing.body(request, models.Cancel)
    return await command(request, CancelRefund, request_id, b.reason)


async def pay_refund(request: web.Request) -> web.Response:
    request_id = parsing.refund_request_id(request)
    b = await parsing.body(request, models.Pay)
    return await command(request, PayRefund, request_id, b.payout_reference)


def _with_age(item: dict[str, Any], today: date) -> dict[str, Any]:
    requested_on = date.fromisoformat(str(item["requested_at"])[:10])
    return {**item, "age_days": (today - requested_on).days}


async def list_refund_requests(request: web.Request) -> web.Response:
    q = parsing.query(request, models.RefundRequestQuery)
    name = None if q.username is None else identity.username(q.username)
    currency = None if q.currency is None else money.currency(q.currency)
    today = request.app[LEDGER].today()

    def requests(rm: ReadSide) -> dict[str, Any]:
        found = rm.refund_requests(status=q.status, username=name, limit=q.limit,
                                   after=q.after, currency=currency)
        totals = rm.refund_request_totals(status=q.status, username=name, currency=currency)
        return {"items": [_with_age(item, today) for item in found.items], "next": found.next,
                "totals": totals}

    return json_response(await read(request, requests))


async def get_refund_request(request: web.Request) -> web.Response:
    request_id = parsing.refund_request_id(request)
    parsing.query(request, models.NoQuery)

    def refund_request(rm: ReadSide) -> dict[str, Any]:
        found = rm.refund_request(request_id)
        if found is None:
            raise NotFound(f"no refund request {request_id}", id=str(request_id))
        return _with_age(found, request.app[LEDGER].today())

    return json_response(await read(request, refund_request))
