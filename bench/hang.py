"""A webhook receiver that hangs: it accepts every connection, reads what is sent, and never
answers (issue 14: "writes keep their speed while the receiver hangs").

It runs on an asyncio loop in a thread of the bench itself, on a free loopback port, from
``with Hanging() as receiver`` to the end of the block. Bounded: at most ``MAX_HELD``
connections are held at once (past that a new one is closed at once, and counted); each is held
until its sender hangs up, the block ends, or ``MAX_HOLD_S`` has passed; starting and stopping
wait at most ``START_TIMEOUT_S`` and ``STOP_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

MAX_HELD = 1024
MAX_HOLD_S = 900.0
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
READ_CHUNK = 65536


class Hanging:
    """The receiver; ``url`` once started. ``accepted``, ``turned_away`` and ``received``
    (bytes) say what it was sent; it answers nothing, ever."""

    def __init__(self, max_held: int = MAX_HELD, max_hold_s: float = MAX_HOLD_S) -> None:
        self.max_held = max_held
        self.max_hold_s = max_hold_s
        self.accepted = 0
        self.turned_away = 0
        self.received = 0
        self.port = 0
        self._held: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="bench-hanging-receiver",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    @property
    def held(self) -> int:
        return len(self._held)

    def __enter__(self) -> Hanging:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._error is not None:
            self.close()
            raise RuntimeError(f"the hanging receiver did not start: {self._error!r}")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop has already ended
                pass
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_S)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # shown by __enter__ if it happens at start
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for writer in list(self._held):
                writer.transport.abort()
            try:
                await asyncio.wait_for(server.wait_closed(), STOP_TIMEOUT_S)
            except TimeoutError:
                pass

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if len(self._held) >= self.max_held:
            self.turned_away += 1
            writer.transport.abort()
            return
        self._held.add(writer)
        try:
            async with asyncio.timeout(self.max_hold_s):
                while chunk := await reader.read(READ_CHUNK):  # read it all, answer nothing
                    self.received += len(chunk)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._held.discard(writer)
            writer.transport.abort()
