"""The service's edge: what happens to a connection before a handler sees it, and the headers
every answer carries.

- **Header deadline.** A connection must deliver a whole request head within
  ``LEDGER_HEADER_TIMEOUT_S`` (default 10 s, at most 10 s) of opening, or of its previous answer
  (keep-alive), or it is closed: a client sending a header line now and then cannot hold a
  connection. (aiohttp's keep-alive timer does exactly this: it closes a connection whose
  handler is still waiting for a request once it fires; the deadline is that timer.)
- **Answer deadline.** A client must take its answers: a connection whose answer has filled
  the socket's buffers (the transport paused writing: the client read nothing for a while) and
  stays so for ``LEDGER_HEADER_TIMEOUT_S`` is aborted, whatever it asked. So a client that sends
  requests and never reads what comes back (a slow reader) holds a connection, and its
  answers' memory, no longer than one that never ends its head.
- **Connection cap.** At most ``LEDGER_MAX_CONNECTIONS`` open connections (default: what the
  process's descriptor limit leaves after the store, the files and a burst of accepts). A new
  connection past the cap evicts the oldest one that has no request in progress (a slow client
  still sending its head, or an idle keep-alive); when every connection is busy, the new one is
  closed. So a crowd of slow clients cannot exhaust the descriptors and stop ``/health``.
- **Malformed requests** (bad HTTP) get a short problem+json (400, or 415 for a content coding
  the service cannot decode) and one log line naming the peer and the kind of error: never
  the request's bytes, which may carry a bearer token.
- **Content-Encoding.** ``gzip``, ``deflate`` or ``identity`` (aiohttp decodes them, within the
  body limit); any other coding is 415 ``unsupported_media_type`` with ``Accept-Encoding``; a
  body that is not what its coding says is 400 ``bad_content_encoding``.
- **Headers.** No ``Server`` banner; every answer has ``Cache-Control: no-store`` and
  ``X-Content-Type-Options: nosniff``.
- **Operations port.** With ``LEDGER_OPS_PORT`` set, ``/health``, ``/ready`` and ``/metrics``
  are served on that port only (and nothing else is), so they can stay off the public address.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web, web_protocol, web_server
from aiohttp.abc import AbstractAccessLogger, AbstractStreamWriter
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest

from api.config import Config
from api.keys import EDGE_STATS, OPS_PORT
from api.problems import (
    CODE_BY_HTTP_STATUS,
    BadContentEncoding,
    UnsupportedMediaType,
    problem,
)

log = logging.getLogger("api.edge")

HEADER_TIMEOUT_S = 10.0
MAX_HEADER_TIMEOUT_S = 10.0
# Descriptors kept for the store's connections, the SQLite files, logs and libraries.
RESERVED_DESCRIPTORS = 96
# Accepted per loop turn (asyncio takes its listen backlog as that number too): each accept
# takes a descriptor before the cap can close it, so the cap leaves room for one burst.
ACCEPT_BACKLOG = 64
# Handshakes the kernel queues for the accepts (the listen backlog, set again once asyncio set
# it to ACCEPT_BACKLOG; the kernel caps it at net.core.somaxconn). Queued connections hold no
# descriptor of ours. With only ACCEPT_BACKLOG, a burst of a few hundred connections overflowed
# the queue: the kernel dropped the next handshakes, and each waited a second for the
# client's retry, /health's too (tests/http/test_edge.py).
LISTEN_QUEUE = 1024
# asyncio accepts a burst per loop turn and counts it (connection_made) two turns later, while
# the next bursts are accepted; the descriptors of the connections that count evicts are
# closed a turn after that. So three bursts may hold descriptors beyond the counted ones: the
# cap leaves room for them (with two, 300 slow clients under 256 descriptors ran out of them
# now and then: tests/http/test_edge.py).
ACCEPTS_IN_FLIGHT = 3
MAX_DEFAULT_CONNECTIONS = 10_000
DECODED_CODINGS = frozenset({"gzip", "deflate", "identity", "x-gzip"})
ACCEPT_ENCODING = "gzip, deflate"
OPS_PATHS = frozenset({"/health", "/ready", "/metrics"})
# A young collection once this many more objects were made than freed (Python's default: 700).
YOUNG_COLLECTION_AFTER = 7_000
# A full collection after this many collections of the middle generation: never, while held back.
FULL_COLLECTIONS_NEVER = 10**9
SECURITY_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def default_max_connections() -> int:
    """What the soft descriptor limit leaves after the reserve and the bursts of accepts taken
    before the cap can close any of them."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_DEFAULT_CONNECTIONS
    return max(8, min(MAX_DEFAULT_CONNECTIONS,
                      soft - RESERVED_DESCRIPTORS - ACCEPTS_IN_FLIGHT * ACCEPT_BACKLOG))


def raise_descriptor_limit() -> int:
    """The soft descriptor limit raised to the hard one (as Go's runtime does): the cap is
    derived from it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


@dataclass(frozen=True)
class EdgeSettings:
    header_timeout_s: float = HEADER_TIMEOUT_S
    max_connections: int | None = None  # None: default_max_connections()
    ops_port: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.header_timeout_s <= MAX_HEADER_TIMEOUT_S:
            raise ValueError(
                f"LEDGER_HEADER_TIMEOUT_S is in (0, {MAX_HEADER_TIMEOUT_S:g}] seconds")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("LEDGER_MAX_CONNECTIONS is at least 1")
        if self.ops_port is not None and not 1 <= self.ops_port <= 65535:
            raise ValueError("LEDGER_OPS_PORT is a port, 1..65535")

    @property
    def connection_cap(self) -> int:
        return self.max_connections or default_max_connections()

    @classmethod
    def from_config(cls, config: Config) -> EdgeSettings:
        """``LEDGER_HEADER_TIMEOUT_S``, ``LEDGER_MAX_CONNECTIONS`` and ``LEDGER_OPS_PORT``,
        checked: ValueError naming a bad one."""
        timeout = config.header_timeout_s
        return cls(
            header_timeout_s=HEADER_TIMEOUT_S if timeout is None else timeout,
            max_connections=config.max_connections,
            ops_port=config.ops_port,
        )


class EdgeStats:
    """What the metrics read of the connections (the server is made after the app is frozen:
    this holder is in the app from the start)."""

    def __init__(self) -> None:
        self.server: EdgeServer | None = None

    def open_connections(self) -> int:
        if self.server is None:
            return 0
        return sum(1 for c in self.server.connections if c.transport is not None)

    def evicted(self) -> int:
        return 0 if self.server is None else self.server.evicted


# -- connections ---------------------------------------------------------------------------------


class _BareResponse(web.Response):
    """An answer written by the protocol itself (no app, so no on_response_prepare)."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        _secure(self.headers)


class EdgeProtocol(web_protocol.RequestHandler):
    """aiohttp's connection handler, but for what it says about a malformed request, and with
    the answer deadline: aborted once its writes stay paused for the header timeout."""

    _stall: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._stall = self._loop.call_later(self._keepalive_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._end_stall()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._end_stall()
        super().connection_lost(exc)

    def _end_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        """The client took none of its answer for the whole deadline: drop the connection
        and what is buffered for it (``abort``: ``close`` would wait to send it first)."""
        self._stall = None
        transport = self.transport
        if transport is None:
            return
        peer = transport.get_extra_info("peername")
        log.warning("closed a connection from %s: it took none of its answer for %g s",
                    peer[0] if peer else "an unknown peer", self._keepalive_timeout)
        self.force_close()
        transport.abort()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # Never ``message`` or the exception's text: they quote the request's bytes.
        kind = type(exc).__name__ if exc is not None else "no exception"
        if status >= 500 and not isinstance(exc, HttpProcessingError):
            log.error("request from %s failed outside the handlers (%s)", request.remote, kind)
        else:
            log.warning("malformed request from %s refused with %d (%s)", request.remote,
                        status, kind)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was already started")
        headers: dict[str, str] = {}
        if isinstance(exc, ContentEncodingError):
            status, code = 415, UnsupportedMediaType.code
            detail = f"the body's Content-Encoding is not supported: use {ACCEPT_ENCODING}"
            headers["Accept-Encoding"] = ACCEPT_ENCODING
        elif status >= 500:
            code, detail = "internal_error", "the request could not be answered"
        else:
            code = CODE_BY_HTTP_STATUS.get(status, f"http_{status}")
            detail = "the request is not valid HTTP"
        answer = problem(status, code, detail, headers=headers)
        response = _BareResponse(status=answer.status, body=answer.body,
                                 headers=answer.headers)
        response.force_close()
        return response


class FileAnswer(web.FileResponse):
    """A file answered a chunk at a time through the connection's transport, never by
    ``sendfile``: the kernel's sendfile waits for the socket outside asyncio's flow control,
    where the answer deadline (``EdgeProtocol``) cannot see a client that never reads."""

    async def _sendfile(self, request: BaseRequest, fobj: Any, offset: int, count: int
                        ) -> AbstractStreamWriter:
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        return await self._sendfile_fallback(writer, fobj, offset, count)


class EdgeServer(web_server.Server):
    """Makes ``EdgeProtocol`` connections and keeps their number under the cap."""

    def __init__(self, handler: Any, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.evicted = 0

    def __call__(self) -> web_protocol.RequestHandler:
        return EdgeProtocol(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: web_protocol.RequestHandler,
                        transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        # Closed connections stay listed until their task ends: only open ones count.
        open_ = [other for other in self._connections if other.transport is not None]
        if len(open_) <= self.max_connections:
            return
        for other in open_:  # oldest first
            if other is not handler and _idle(other):
                self.evicted += 1
                other.force_close()
                return
        handler.force_close()  # every connection is busy: the new one waits its turn
        self.evicted += 1


def _idle(handler: web_protocol.RequestHandler) -> bool:
    """No request in progress: still waiting for a whole head, or idle between requests."""
    return not handler._request_in_progress and not handler._messages


class EdgeSite(web.TCPSite):
    """``web.TCPSite`` whose kernel queue holds ``LISTEN_QUEUE`` handshakes while asyncio
    accepts ``ACCEPT_BACKLOG`` of them per loop turn."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int) -> None:
        super().__init__(runner, host, port, backlog=ACCEPT_BACKLOG)

    async def start(self) -> None:
        await super().start()
        assert isinstance(self._server, asyncio.Server)
        for listening in self._server.sockets:
            with listening.dup() as sock:  # the same socket: listen() sets its queue
                sock.listen(LISTEN_QUEUE)


class EdgeRunner(web.AppRunner):
    """``web.AppRunner`` with ``EdgeServer`` (the same arguments as ``Application`` gives
    aiohttp's own ``Server``)."""

    def __init__(self, app: web.Application, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._max_connections = max_connections

    async def _make_server(self) -> web_server.Server:
        app = self.app
        loop = asyncio.get_running_loop()
        app._set_loop(loop)
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        kwargs = dict(self._kwargs)
        kwargs.setdefault("access_log_class", AccessLogger)
        kwargs["debug"] = app._debug
        server = EdgeServer(app._handle, request_factory=app._make_request,
                            loop=loop, max_connections=self._max_connections, **kwargs)
        stats = app.get(EDGE_STATS)
        if stats is not None:
            stats.server = server
        return server


def settle_heap() -> None:
    """What starting made (modules, schemas, pools, the application) lives as long as the
    process: moved out of the collector's reach, so its full passes scan only what came after
    (each scanned all of it: ~30 ms with the event loop stopped, the reads' p99 at 5,000/s).

    And the young objects are collected a tenth as often (``YOUNG_COLLECTION_AFTER``): each
    collection moves every request then in flight into an older generation, where the next
    passes walk it again until it dies; at Python's default (700) the collector took about a
    tenth of the server's processor under 32 connections of deposits (2,161 young passes,
    197 middle, 18 full in 15 s). Side by side in alternating runs, deposits were faster in
    20 pairs of 22 (medians +3 %, +6 %, +19 % in three comparisons); balance reads alike."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, middle, old)


@contextmanager
def full_collections_held_back() -> Iterator[None]:
    """Meanwhile, what came before is frozen out of the cyclic collector's reach and its full
    passes do not run; the younger generations' still do. For a process whose old objects
    grow or churn while it works (``ledger rebuild``'s remembered rows: 8 % of its processor
    in full passes; the model tests' record of the search), whose work makes no reference
    cycles to speak of, or which collects in full itself at moments of its choosing."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTIONS_NEVER)
    try:
        yield
    finally:
        gc.set_threshold(young, middle, old)
        gc.unfreeze()


def serve(app: web.Application, *, host: str, port: int, edge: EdgeSettings,
          shutdown_timeout: float, access_log: logging.Logger,
          access_log_class: type[AbstractAccessLogger],
          on_started: Callable[[list[str]], None]) -> None:
    """Like ``web.run_app``, with the edge: serves until SIGTERM or SIGINT, then stops
    gracefully (no new connections, requests in flight finish, resources close)."""
    if edge.ops_port is not None:
        app[OPS_PORT] = edge.ops_port

    async def main() -> None:
        raise_descriptor_limit()
        runner = EdgeRunner(
            app, max_connections=edge.connection_cap, handle_signals=True,
            shutdown_timeout=shutdown_timeout, handler_cancellation=False,
            keepalive_timeout=edge.header_timeout_s, access_log=access_log,
            access_log_class=access_log_class,
        )
        try:
            # Inside: a start that fails part way (a setting found unusable by a cleanup
            # context) still closes the contexts already opened, in order.
            await runner.setup()
            sites = [EdgeSite(runner, host, port)]
            if edge.ops_port is not None:
                sites.append(EdgeSite(runner, host, edge.ops_port))
            for site in sites:
                await site.start()
            on_started([site.name for site in sites])
            settle_heap()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    loop = asyncio.new_event_loop()
    task = loop.create_task(main())
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(task)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not task.done():
            task.cancel()
            try:
                loop.run_until_complete(task)
            except (asyncio.CancelledError, web.GracefulExit, KeyboardInterrupt):
                pass
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# -- requests ------------------------------------------------------------------------------------


def _secure(headers: Any) -> None:
    headers.popall(hdrs.SERVER, None)
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs after aiohttp added its headers, before they are written."""
    _secure(response.headers)


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Inside the problem middleware: the operations port's split, and content codings."""
    ops_port = request.app.get(OPS_PORT)
    if ops_port is not None:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        on_ops_port = sockname is not None and sockname[1] == ops_port
        if on_ops_port != (request.path in OPS_PATHS):
            raise web.HTTPNotFound()
    codings = [c.strip().lower() for c in
               ",".join(request.headers.getall(hdrs.CONTENT_ENCODING, [])).split(",")
               if c.strip()]
    unknown = [c for c in codings if c not in DECODED_CODINGS]
    if unknown:
        raise UnsupportedMediaType(
            f"the body's Content-Encoding is not supported: use {ACCEPT_ENCODING}",
            headers={"Accept-Encoding": ACCEPT_ENCODING})
    try:
        return await handler(request)
    except web_protocol.RequestPayloadError as error:
        if codings:
            raise BadContentEncoding(
                "the body is not what its Content-Encoding says") from error
        raise BadContentEncoding("the body could not be read") from error


def install(app: web.Application) -> None:
    app.on_response_prepare.append(secure_headers)
    app[EDGE_STATS] = EdgeStats()
