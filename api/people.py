"""People: the staff directory each server keeps, who is calling (``GET /v1/me``), and the
console's static files (``/console/``).

The directory (``projections.staff``) is refreshed on a thread every ``REFRESH_S`` by a task of
the app, so a token added, rotated or revoked by ``ledger staff`` on any machine is honoured by
every server within a second; the request path only looks it up in memory.

The console's files carry a Content-Security-Policy (``CONSOLE_HEADERS``): only its own script
and style run, it talks only to this server, no page may frame it and no form of it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from api import models, parsing
from api.edge import FileAnswer
from api.keys import ACTOR, LEDGER, SIGNIN, STAFF
from ledger.errors import NotFound, NotReady
from projections.pgpool import refused_in_outage
from projections.staff import REFRESH_S, StaffDirectory

log = logging.getLogger("api.people")


def identify_person(app: web.Application, token: str) -> tuple[str, tuple[str, ...]] | None:
    """The person a token names and the roles they hold: a member of staff (by the token's
    digest) or the subject of an identity provider's JWT; None when neither knows it.

    A person is one person whichever credential names them (four eyes counts them so): a JWT
    whose ``sub`` is a staff member's name in another case (``Amy``; ``ledger staff add Amy``
    adds amy) is that member, under the staff's spelling; and a JWT naming a member of staff
    who was revoked (``ledger staff revoke``) lets no one in: revoking a person ends every way
    in the ledger knows of. While the staff's history is damaged, no JWT lets anyone in."""
    directory = app.get(STAFF)
    if directory is not None:
        person = directory.identify(hashlib.sha256(token.encode()).hexdigest())
        if person is not None:
            return person.name, (person.role,)
    signin = app.get(SIGNIN)
    if signin is None or token.count(".") != 2:
        _refuse_while_stale(directory)
        return None
    signed_in = signin.verify(token)
    if signed_in is None or directory is None:
        return signed_in
    if directory.damage is not None:
        # The staff's history is damaged: any ``sub`` may name a member whose revocation (or
        # whole record) was hidden, so no JWT is trusted until the store is restored.
        return None
    sub, held = signed_in
    name = sub.lower()
    if directory.knows(name):
        _refuse_while_stale(directory)
    if directory.is_revoked(name):
        return None
    return (name, held) if directory.knows(name) else signed_in


def _refuse_while_stale(directory: StaffDirectory | None) -> None:
    """NotReady (503) for a credential only the staff directory could know while it is stale:
    it lets no member of staff in then, and the person should hear that sign-in is paused and
    try again, not that their token is wrong."""
    if directory is not None and directory.stale:
        raise NotReady(
            "the staff directory could not be read for a while, so no member of staff is let in "
            "until it is; try again shortly")


async def staff_directory(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the directory, read once before serving, then refreshed in the background."""
    directory = StaffDirectory(app[LEDGER])  # type: ignore[index]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, directory.refresh)
    app[STAFF] = directory

    async def keep_current() -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await loop.run_in_executor(None, directory.refresh)
            except Exception as error:  # the store is away: keep the last directory, try again
                if not refused_in_outage(error):  # else the outage's own line says it
                    log.warning("the staff directory could not be refreshed", exc_info=True)

    task = asyncio.create_task(keep_current())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def get_me(request: web.Request) -> web.Response:
    """Who the bearer is: their person and the role they act in."""
    parsing.query(request, models.NoQuery)  # as every read: an unknown parameter is 422
    actor = request[ACTOR]
    return web.json_response({"person": actor.person, "role": actor.role,
                              "actor": actor.name})


# -- the console ------------------------------------------------------------------------------

CONSOLE_DIR = Path(__file__).with_name("console")
CONSOLE_ASSETS = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# The console runs only its own script and style and talks only to this server; no page may
# frame it (clickjacking); a form the script did not take over is never sent (its token would
# otherwise land in an address, a browser's history and a proxy's log); its address is sent to
# no one.
CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def console_page(request: web.Request) -> FileAnswer:
    return _asset("index.html")


async def console_asset(request: web.Request) -> FileAnswer:
    return _asset(request.match_info["name"])


def _asset(name: str) -> FileAnswer:
    if name not in CONSOLE_ASSETS:
        raise NotFound(f"no console file {name!r}")
    return FileAnswer(
        CONSOLE_DIR / name,
        headers={"Content-Type": CONSOLE_ASSETS[name], **CONSOLE_HEADERS},
    )
