"""Child processes of a server: the read-model keeper's (``projections.readmodels``) and the
log's page maker (``api.log_pages``) start, run and end the same way.

A child is spawned, never forked (the server has threads), as a daemon, with one end of a pipe:
closing the server's end is its cue to end, and the pipe closes with the server, kill -9
included. It ignores a terminal's Ctrl-C (that stops the server, which ends it).
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing import connection as mp_connection
from multiprocessing.process import BaseProcess
from typing import Any


def spawn(target: Callable[..., None], name: str, args: tuple[Any, ...]
          ) -> tuple[BaseProcess, mp_connection.Connection]:
    """Start ``target(*args, pipe)`` in a child process; answers it and the server's end."""
    context = multiprocessing.get_context("spawn")  # never fork a process with threads
    ours, theirs = context.Pipe()
    child = context.Process(target=target, name=name, daemon=True, args=(*args, theirs))
    child.start()
    theirs.close()
    return child, ours


def begin(setup: Callable[[], None] | None) -> None:
    """In the child, first: Ctrl-C ignored, then the server's ``setup`` (its logging)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if setup is not None:
        setup()


def end(child: BaseProcess, pipe: mp_connection.Connection, timeout_s: float) -> bool:
    """Close the server's end of the pipe and wait ``timeout_s`` for the child to end; kill it
    if it has not. Answers whether it had to be killed."""
    pipe.close()
    child.join(timeout_s)
    if not child.is_alive():
        return False
    child.kill()
    child.join(timeout_s)
    return True
