"""Handlers of the return and exchange cases: open, every step of the lifecycle, notes, reads.

A step answers the case as the ledger recorded it (``id, username, order_no, kind, state,
opened_on, shipped_on, return_by``) with ``position``: the same body again when an
``Idempotency-Key`` replays it. The full view (days, deadlines, overdue flags, steps) is
``GET /v1/return-cases/{id}``, computed for the day it is asked.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from aiohttp import web

from api import models, parsing
from api.context import ReadSide, read
from api.handlers import command, json_response
from api.keys import LEDGER
from ledger import identity
from ledger.commands import (
    AcceptReturnCase,
    AddCaseEvidence,
    AddCaseNote,
    CancelReturnCase,
    CaseApplication,
    CloseReturnCase,
    ExpireReturnCase,
    ForwardToSupplier,
    OpenReturnCase,
    ReceiveReturn,
    RejectReturnCase,
    ResolveReturnCase,
    ShipBack,
    StartSupplierReview,
)
from ledger.errors import NotFound
from ledger.return_case import allowed_actions


def _application(b: models.CaseOpen) -> CaseApplication:
    return CaseApplication(
        username=b.username,
        order_no=b.order_no,
        kind=b.kind,
        shipped_on=b.shipped_on,
        items=[
            {"sku": i.sku, "description": i.description.strip(), "quantity": i.quantity}
            for i in b.items
        ],
        goods_photos=list(b.evidence.goods_photos),
        package_photos=list(b.evidence.package_photos),
        replaced_or_modified=b.conditions.replaced_or_modified,
        parts_missing=b.conditions.parts_missing,
        opened_media=b.conditions.opened_media,
        has_quality_assurance=b.conditions.has_quality_assurance,
        guarantee_until=b.guarantee_until,
        note=b.note,
    )


async def open_case(request: web.Request) -> web.Response:
    b = await parsing.body(request, models.CaseOpen)
    return await command(request, OpenReturnCase.of, _application(b))


async def start_supplier_review(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.StepNote)
    return await command(request, StartSupplierReview, case_id, b.note)


async def accept_case(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.Accept)
    return await command(
        request, AcceptReturnCase, case_id, b.return_by, b.return_address, b.instructions
    )


async def reject_case(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.Reject)
    return await command(request, RejectReturnCase, case_id, b.reason)


async def ship_back(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.ShipBack)
    return await command(request, ShipBack, case_id, b.tracking)


async def receive_return(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.Receive)
    return await command(
        request, ReceiveReturn, case_id, b.postmark_date, b.goods, b.original_packaging,
        b.acceptance_copy,
    )


async def expire_case(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.StepNote)
    return await command(request, ExpireReturnCase, case_id, b.note)


async def forward_case(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.StepNote)
    return await command(request, ForwardToSupplier, case_id, b.note)


async def resolve_case(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.Resolve)
    return await command(
        request, ResolveReturnCase, case_id, b.outcome, b.refund_amount, b.freight_amount,
        b.tracking, b.freight_waiver_reason or "",
    )


async def close_case(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.StepNote)
    return await command(request, CloseReturnCase, case_id, b.note)


async def cancel_case(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.Cancel)
    return await command(request, CancelReturnCase, case_id, b.reason)


async def add_case_evidence(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.EvidenceAdd)
    return await command(request, AddCaseEvidence, case_id, tuple(b.goods_photos),
                         tuple(b.package_photos))


def _evidence(steps: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The case's photo references: at opening (or its refusal), then as they were added."""
    found: dict[str, list[str]] = {"goods_photos": [], "package_photos": []}
    for step in steps:
        data = step["data"].get("evidence", step["data"]) if step["step"] in (
            "opened", "refused", "evidence_added") else {}
        for kind, photos in found.items():
            photos.extend(data.get(kind, []))
    return found


async def add_case_note(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    b = await parsing.body(request, models.CaseNoteAdd)
    return await command(request, AddCaseNote, case_id, b.text, b.for_customer)


async def get_case(request: web.Request) -> web.Response:
    case_id = parsing.case_id(request)
    q = parsing.query(request, models.CaseViewQuery)

    today = request.app[LEDGER].today()

    def case(rm: ReadSide) -> dict[str, Any]:
        found = rm.return_case(case_id)
        if found is None:
            raise NotFound(f"no return case {case_id}", id=str(case_id))
        steps = found["steps"]
        start = 0 if q.steps_after is None else int(q.steps_after)
        page = steps[start:start + q.steps_limit]
        end = start + len(page)
        return {**_with_actions(found, today), "evidence": _evidence(steps), "steps": page,
                "steps_next": str(end) if end < len(steps) else None}

    return json_response(await read(request, case))


def _with_actions(case: dict[str, Any], today: date) -> dict[str, Any]:
    """The case with the steps CS may take on it today (``allowed_actions``)."""
    return_by = case.get("return_by")
    actions = allowed_actions(case["state"], return_by=None if return_by is None
                              else str(return_by), today=today.isoformat())
    return {**case, "allowed_actions": actions}


async def list_cases(request: web.Request) -> web.Response:
    q = parsing.query(request, models.CaseQuery)
    name = None if q.username is None else identity.username(q.username)

    today = request.app[LEDGER].today()

    def cases(rm: ReadSide) -> dict[str, Any]:
        found = rm.return_cases(state=q.state, username=name, overdue=q.overdue,
                                limit=q.limit, after=q.after)
        counts = rm.return_case_counts(state=q.state, username=name, overdue=q.overdue)
        return {"items": [_with_actions(c, today) for c in found.items], "next": found.next,
                "counts": counts}

    return json_response(await read(request, cases))
