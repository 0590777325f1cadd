"""Handlers of finance and audit: the global log, the journal, reconciliation, the Beancount
export, the hash chain's head and ``verify``.

- ``/v1/events`` reads the event store itself, so it is current without waiting; on
  PostgreSQL a child process makes its pages (``api.log_pages``); a full page that can no
  longer change is answered again as it was (``api.sealed_pages``), gzipped to a client that
  takes gzip.
- Reconciliation pins itself to the log position every read model has reached (``read_at``):
  it reads the journal and the accounts, and a write landing between the two must not show in
  one only. A position beyond that is refused (422): it is not history yet.
- ``/v1/audit/verify`` re-derives the whole history: one at a time, on a thread of its own; a
  second call meanwhile is 503 ``busy`` rather than a queue that grows. Like every request it
  is answered within the request deadline (503 ``deadline_exceeded`` past it, the verify still
  finishing on its thread): for a very long history, ``ledger verify`` has no deadline.
- ``/v1/audit/digest`` waits (bounded, like reads) until the chain binds every event written
  before the request, then answers its head.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

from aiohttp import web

from api import models, parsing, sealed_pages
from api.auditkit import export_answer, with_leaves
from api.context import ReadSide, read, read_at, run
from api.handlers import json_body, json_bytes_response, json_response, page
from api.keys import (
    ADMISSION,
    AUDIT_EXECUTOR,
    AUDIT_LOCK,
    EXECUTOR,
    LEDGER,
    NOTARY,
    PAGE_MAKER,
    READ_MODELS,
    SETTINGS,
    VERIFIER,
)
from api.limits import finish_even_if_abandoned
from api.log_pages import Made, PageMakerFailed, Placed, made
from ledger import identity, money
from ledger.account import account_id
from ledger.application import LedgerApplication
from ledger.clock import rfc3339
from ledger.errors import Contention, InvalidInput
from ledger.settings import StoreSettings
from projections import audit, beancount, event_log, paging
from projections.chain import Chain
from projections.notes import verifier_of


async def list_events(request: web.Request) -> web.Response:
    q = parsing.query(request, models.EventQuery)
    read_models = request.app[READ_MODELS]
    stream = q.stream
    if stream is not None and not _is_uuid(stream):  # a user name: the account's stream
        stream = str(account_id(identity.username(stream)))
    log_filter = event_log.LogFilter(
        stream=stream, name=q.type,
        since=None if q.since is None else rfc3339(q.since),
        until=None if q.until is None else rfc3339(q.until),
    )
    app = request.app
    if log_filter == event_log.LogFilter():
        key = (q.after, q.limit)

        def kept_page() -> Made | None:
            # A page that can no longer change, asked for when the request's turn in the heavy
            # lane comes (its line and pace, as any page): no worker, no store. Requests in
            # line behind the one making a page find it kept by their turn.
            packed = sealed_pages.answer(app, key)
            return None if packed is None else Made.kept(packed)

        def answer_page() -> Made:
            # Made by the heavy lane's worker, not the event loop (a page of 1,000 events would
            # hold up every other request meanwhile); on PostgreSQL by a child process for it.
            notary = app.get(NOTARY)
            placed = None if notary is None else Placed(
                *notary.placed_after(paging.cursor(q.after), q.limit))
            maker = app.get(PAGE_MAKER)
            if maker is not None:
                with contextlib.suppress(PageMakerFailed):
                    return maker.make(q.after, q.limit, placed)
            return made(read_models.events(limit=q.limit, after=q.after), placed)

        def keep(answered: Made) -> None:
            if answered.made_now and answered.packed is not None:  # can never change
                sealed_pages.remember(app, key, answered.packed)

        found = await app[ADMISSION].run(request, app[EXECUTOR], answer_page, kept=kept_page,
                                         keep=keep)
        vary = {"Vary": "Accept-Encoding"}
        if found.packed is not None and parsing.accepts_gzip(request):
            return json_bytes_response(found.packed, headers={**vary, "Content-Encoding": "gzip"})
        return json_bytes_response(found.json(), headers=vary)

    def answer_filtered() -> bytes:
        found = event_log.filtered(read_models.events, log_filter, limit=q.limit, after=q.after)
        with_leaves(app, found.items)
        return json_body(page(found))

    return json_bytes_response(await run(request, answer_filtered))


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


async def get_journal(request: web.Request) -> web.Response:
    q = parsing.query(request, models.JournalQuery)

    currency = None if q.currency is None else money.currency(q.currency)

    def journal(rm: ReadSide) -> dict[str, Any]:
        return page(rm.journal(account=q.account, limit=q.limit, after=q.after,
                               currency=currency, since=q.since, until=q.until))

    return json_response(await read(request, journal))


async def get_reconciliation(request: web.Request) -> web.Response:
    q = parsing.query(request, models.ReconciliationQuery)
    currency = None if q.currency is None else money.currency(q.currency)

    def one(rm: ReadSide, code: str, position: int) -> dict[str, Any]:
        return {**rm.reconciliation(code, position),
                "chart_balances": rm.chart_balances(code, position)}

    def reconcile(rm: ReadSide, reached: int) -> dict[str, Any]:
        position = reached if q.at_position is None else q.at_position
        if q.as_of is not None:
            position = min(reached, rm.position_as_of(q.as_of))
        if position > reached:
            raise InvalidInput(
                f"at_position is beyond the log's end ({reached})", field="at_position"
            )
        if currency is not None:
            return one(rm, currency, position)
        each = [one(rm, code, position) for code in rm.currencies_in_use(position)]
        return {"position": position, "currencies": each, "ok": all(c["ok"] for c in each)}

    return json_response(await read_at(request, reconcile))


DEFAULT_IDLE_DAYS = 90


async def get_unmatched(request: web.Request) -> web.Response:
    q = parsing.query(request, models.UnmatchedQuery)
    currency = None if q.currency is None else money.currency(q.currency)
    idle_before = q.idle_before or request.app[LEDGER].clock() - timedelta(
        days=q.idle_days or DEFAULT_IDLE_DAYS)

    def unmatched(rm: ReadSide) -> dict[str, Any]:
        return rm.unmatched(currency=currency, idle_before=idle_before, limit=q.limit)

    return json_response(await read(request, unmatched))


async def export_beancount(request: web.Request) -> web.Response:
    q = parsing.query(request, models.ExportQuery)
    currency = None if q.currency is None else money.currency(q.currency)
    title = "Ledger journal" if currency is None else f"Ledger journal ({currency})"

    def export(rm: ReadSide, out: TextIO) -> None:
        beancount.export(rm.journal_entries(currency=currency), out, title=title)

    return await export_answer(request, export, content_type="text/plain")


def default_verifier(settings: StoreSettings, app: LedgerApplication, *,
                     signing_key: tuple[Path, str] | None = None,
                     checkpoint_file: Path | None = None) -> dict[str, Any]:
    """``audit.verify``; the checkpoints checked against the signing key's verifier, read at
    each call (``signing_key``: its file and origin; the notary makes it on the first start),
    the last ones of the service's ``checkpoint_file`` (kept outside the database) among them."""
    checkpoint_key = None if signing_key is None else verifier_of(*signing_key)
    return audit.verify(settings, app, checkpoint_key=checkpoint_key,
                        checkpoint_file=checkpoint_file).as_dict()


async def audit_verify(request: web.Request) -> web.Response:
    parsing.query(request, models.NoQuery)
    lock = request.app[AUDIT_LOCK]
    if lock.locked():
        raise Contention("a verify is running; try again when it is done")
    await lock.acquire()
    try:
        verify = asyncio.get_running_loop().run_in_executor(
            request.app[AUDIT_EXECUTOR], request.app[VERIFIER], request.app[SETTINGS],
            request.app[LEDGER],
        )
    except BaseException:
        lock.release()
        raise
    # The lock is the verify's, not the request's: held until the thread is done, even when
    # the request's deadline passes first, so verifies never queue up behind each other.
    verify.add_done_callback(lambda _: lock.release())
    return json_response(await finish_even_if_abandoned(verify))


def _chain_head(app: LedgerApplication) -> dict[str, Any]:
    # The writer seals each event in the transaction that records it: the head is current.
    head = Chain(app.recorder).head()
    return {"position": head.position, "hash": head.hash}


async def audit_digest(request: web.Request) -> web.Response:
    parsing.query(request, models.NoQuery)
    head = await run(request, _chain_head, request.app[LEDGER])
    return json_response(head)
