"""The auditor's kit over HTTP: the latest signed checkpoint, inclusion and consistency proofs,
and the notary's thread that makes checkpoints and watches history (``projections.checkpoints``).

Configuration, read at start: ``LEDGER_SIGNING_KEY_FILE`` (the Ed25519 key; made, 0600, on the
first start), ``LEDGER_ORIGIN`` (the checkpoints' origin line and the key's name),
``LEDGER_CHECKPOINT_FILE`` (where every checkpoint is appended) and
``LEDGER_CHECKPOINT_INTERVAL_S`` (at most this long between checkpoints while the log grows;
default 10; the history is re-checked as often, at least every ``MAX_WATCH_S``). A graceful stop
signs a last checkpoint of what was written since the last one (``NotaryThread``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, TextIO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from api import models, parsing
from api.auditcli import appendable
from api.context import ReadSide, in_executor, read, run
from api.handlers import history_damage, json_response
from api.keys import CONFIG, EXCESS_PRIVILEGE, LEDGER, METRICS, NOTARY, SETTINGS
from ledger import money
from ledger.errors import HistoryDamaged, NotFound
from projections import hledger
from projections.checkpoints import (
    DEFAULT_INTERVAL_S,
    MAX_INTERVAL_S,
    MIN_INTERVAL_S,
    Notary,
    adopt_signer,
    guard_notary,
    latest_checkpoint,
)
from projections.exports import general_ledger_csv
from projections.merkle import ProofError
from projections.notes import NoteError, signing_settings
from projections.pgpool import refused_in_outage
from projections.privileges import excess_privilege, may_make_tables

# The notary's rounds come at least this often: each places the new events in the tree (a full
# page of /v1/events is kept as answered only once its events are placed, api.sealed_pages) and
# re-checks the log's tail, so damage is found within seconds. A round reads only what is new.
MAX_WATCH_S = 2.0
# How long a stop waits for the notary's rounds to end, its last one included. A last round
# still running then (a store that does not answer) is left to its daemon thread, and the
# shutdown goes on: a stop never hangs on the notary.
LAST_ROUND_WAIT_S = 10.0
log = logging.getLogger(__name__)


class NotaryThread:
    """Runs the notary's rounds until stopped, then one last round that signs a checkpoint of
    the events written since the last one (none when the log did not grow past it). The
    checkpoint file outside the database then covers every write the stopped server
    acknowledged: without it, the events of the last ``interval_s`` before a stop could be cut
    from the database with their rows, and a restarted service would find the log whole. Only
    a crash leaves such a window, of ``interval_s`` at most.

    A failed round is logged, and the next one follows; a failed last round is logged in one
    line, and the stop goes on."""

    def __init__(self, notary: Notary, *, last_round_wait_s: float = LAST_ROUND_WAIT_S) -> None:
        self.notary = notary
        self.last_round_wait_s = last_round_wait_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notary", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the rounds with the last one, waiting for them at most ``last_round_wait_s``.
        Called once the server takes no more writes, while the store is still open."""
        self._stopping.set()
        self._thread.join(self.last_round_wait_s)
        if self._thread.is_alive():
            log.error("the notary's last round did not end within %g s: stopping without it, "
                      "and the events since the last checkpoint may be signed by none",
                      self.last_round_wait_s)

    def _run(self) -> None:
        pause_s = min(self.notary.interval_s, MAX_WATCH_S)
        while not self._stopping.is_set():
            try:
                self.notary.round()
            except Exception as error:
                if not refused_in_outage(error):  # else the outage's own line says it
                    log.exception("the notary's round failed; trying again")
            self._stopping.wait(pause_s)
        try:
            self.notary.round(force_checkpoint=True)
        except Exception as error:
            # one line, even in an outage: the operator learns the last events are unsigned
            said = " ".join(str(error).split())[:300] or type(error).__name__
            log.error("the notary's last round failed, so no checkpoint was signed at the stop:"
                      " %s", said)


def open_notary(app: web.Application) -> Notary:
    """The notary of the settings; NoteError (one line, naming the setting) when they cannot
    be used: the interval out of bounds, or a signing key that is not the store's."""
    config = app[CONFIG]
    key_file, origin, checkpoint_file = signing_settings(
        config.signing_key_file, config.origin, config.checkpoint_file)
    interval_s = config.checkpoint_interval_s
    if interval_s is not None and not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
        raise NoteError(f"LEDGER_CHECKPOINT_INTERVAL_S is {MIN_INTERVAL_S}..{MAX_INTERVAL_S} s")
    appendable(checkpoint_file)  # a copy kept outside the database that cannot grow, said now
    if may_make_tables(app[SETTINGS]):  # a least-privileged login makes no table
        guard_notary(app[LEDGER].recorder)
    # the key the store's checkpoints are signed with (NoteError, said in one line, if not)
    try:
        signer = adopt_signer(app[LEDGER].recorder, key_file, origin, may_create=True)
    except OSError as error:  # a new key's folder or file cannot be made
        raise NoteError(f"cannot make a signing key at {key_file} (LEDGER_SIGNING_KEY_FILE): "
                        f"{error.strerror}") from None
    return Notary(app[LEDGER].recorder, signer, checkpoint_file,
                  interval_s=DEFAULT_INTERVAL_S if interval_s is None else interval_s)


async def notary_opened(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context, right after the ledger's: settings the notary cannot use stop the
    start before the keeper or any other task begins (``ledger serve`` says them in one
    line)."""
    app[NOTARY] = await in_executor(app, open_notary, app)
    yield


async def notary_context(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context, the last: the notary's watch starts once all else runs, and stops
    first. aiohttp closes the contexts only after the server stopped taking requests and those
    in flight finished, so the notary's last round (``NotaryThread``) covers the last write
    acknowledged, with the store still open (the ledger's context closes after)."""
    app[EXCESS_PRIVILEGE] = await in_executor(app, excess_privilege, app[SETTINGS])
    thread = NotaryThread(app[NOTARY])
    thread.start()
    yield
    await in_executor(app, thread.stop)


def check_history(app: web.Application) -> dict[str, str]:
    """For ``/ready``: HistoryDamaged when the notary or the staff directory found damage (the
    first position named); otherwise what ``/ready`` adds (``privilege``: said when the login
    could rewrite history)."""
    damage = history_damage(app)
    if damage is None:
        excess = app.get(EXCESS_PRIVILEGE)
        return {} if not excess else {"privilege": excess}
    log.error("not ready: history damaged at %s", damage.describe())
    raise HistoryDamaged(
        f"the history is damaged at position {damage.position} ({damage.what}): "
        f"{damage.describe()}", position=damage.position)


def with_leaves(app: web.Application, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event's leaf index in the tree (null until the notary has reached it)."""
    notary = app.get(NOTARY)
    for item in items:
        item["leaf_index"] = None if notary is None else notary.leaf_index_of(item["position"])
    return items


async def audit_checkpoint(request: web.Request) -> web.Response:
    parsing.query(request, models.NoQuery)
    notary = request.app.get(NOTARY)
    # Only a note the service's key signed is served: a row INSERTed behind its back is not.
    verifier = None if notary is None else notary.verifier
    found = await run(request, latest_checkpoint, request.app[LEDGER].recorder, verifier)
    if found is None:
        raise NotFound("no checkpoint has been signed yet: the log is empty")
    return web.Response(text=found.note, content_type="text/plain", charset="utf-8")


async def audit_proof(request: web.Request) -> web.Response:
    q = parsing.query(request, models.ProofQuery)
    notary, recorder = request.app[NOTARY], request.app[LEDGER].recorder

    def prove() -> dict[str, Any]:
        size = q.tree_size
        if size is None:
            latest = latest_checkpoint(recorder, notary.verifier)
            if latest is None:
                raise NotFound("no checkpoint has been signed yet: give tree_size")
            size = latest.tree_size
        return notary.inclusion(q.position, size)

    try:
        # One job on a worker of the route's lane, never on the event loop: a proof waits for
        # the notary's lock, held for a whole round (seconds while it catches up on a long log).
        return json_response(await run(request, prove))
    except LookupError as error:
        raise NotFound(str(error)) from None
    except ProofError as error:  # a tree the log has not grown to: there is no such proof
        raise NotFound(f"no such proof: {error}") from None


async def audit_consistency(request: web.Request) -> web.Response:
    q = parsing.query(request, models.ConsistencyQuery)
    try:  # on a worker of the route's lane, like a proof (``audit_proof``)
        return json_response(await run(request, request.app[NOTARY].consistency, q.from_, q.to))
    except ProofError as error:  # a tree the log has not grown to: there is no such proof
        raise NotFound(f"no such proof: {error}") from None


def observe_notary(app: web.Application) -> None:
    notary = app.get(NOTARY)
    if notary is not None:
        metrics = app[METRICS]
        metrics.history_damage_found.set(notary.damage_found)
        metrics.checkpoint_tree_size.set(len(notary.tree))


# -- the exports ---------------------------------------------------------------------------------

# An export is made whole before it is answered (in the heavy lane, within the request deadline,
# as any read), into a spool that keeps this much in memory and the rest in an unnamed temporary
# file; it is answered this much at a time.
EXPORT_MEMORY_BYTES = 1 << 20
EXPORT_CHUNK_BYTES = 1 << 16


class SpooledBody(Payload):
    """An export's UTF-8 bytes, answered from their spool (``tempfile.SpooledTemporaryFile``)
    a chunk at a time, each read off the event loop. The spool is closed (its disk given back)
    once the answer is written or the client has gone; an answer never sent (its request gave up
    while the export was being made, or the client left before the headers) closes it when it is
    dropped."""

    def __init__(self, spool: IO[bytes], size: int) -> None:
        super().__init__(spool)
        self._size = self._length = size
        self._close_spool = weakref.finalize(self, spool.close)

    @classmethod
    def written(cls, write: Callable[[TextIO], None]) -> SpooledBody:
        """What ``write`` writes, spooled. On a worker's thread: it does file work."""
        spool = tempfile.SpooledTemporaryFile(max_size=EXPORT_MEMORY_BYTES, mode="w+b")
        text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
        try:
            write(text)
            text.flush()
        except BaseException:
            text.close()  # and the spool with it
            raise
        text.detach()  # the spool stays open for the answer
        size = spool.tell()
        spool.seek(0)
        return cls(spool, size)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter,
                                content_length: int | None) -> None:
        loop = asyncio.get_running_loop()
        left = self._length if content_length is None else min(self._length, content_length)
        while left > 0:
            # aiohttp's own file answers read on the loop's default executor too
            chunk = await loop.run_in_executor(None, self._value.read,
                                               min(EXPORT_CHUNK_BYTES, left))
            if not chunk:
                raise RuntimeError(f"the export's spool ended {left} bytes short")
            await writer.write(chunk)
            left -= len(chunk)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("an export is answered a chunk at a time, never read whole")

    async def close(self) -> None:
        # not awaited (aiohttp's rule for close); off the loop, since closing a large file
        # frees its blocks
        if self._close_spool.alive:
            asyncio.get_running_loop().run_in_executor(None, self._close_spool)


async def export_answer(request: web.Request, export: Callable[[ReadSide, TextIO], None], *,
                        content_type: str) -> web.Response:
    """``export`` made whole by a worker of the request's lane, like any read (``read``: its
    deadline and its 503s), into a spool rather than memory, then answered from it."""

    def spooled(rm: ReadSide) -> SpooledBody:
        return SpooledBody.written(lambda out: export(rm, out))

    body = await read(request, spooled)
    return web.Response(body=body, content_type=content_type, charset="utf-8")


async def export_csv(request: web.Request) -> web.Response:
    """The journal as a general-ledger CSV (``projections.exports``)."""
    q = parsing.query(request, models.ExportQuery)
    currency = None if q.currency is None else money.currency(q.currency)

    def export(rm: ReadSide, out: TextIO) -> None:
        general_ledger_csv(rm.journal_entries(currency=currency), out)

    return await export_answer(request, export, content_type="text/csv")


async def export_hledger(request: web.Request) -> web.Response:
    """The journal as an hledger journal (``projections.hledger``)."""
    q = parsing.query(request, models.ExportQuery)
    currency = None if q.currency is None else money.currency(q.currency)

    def export(rm: ReadSide, out: TextIO) -> None:
        hledger.export(rm.journal_entries(currency=currency), out)

    return await export_answer(request, export, content_type="text/plain")
