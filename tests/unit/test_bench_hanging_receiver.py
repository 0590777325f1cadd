"""The bench's hanging webhook receiver (bench/hang.py): it takes the request and never answers,
holds no more than its bound, and lets every connection go when the bench ends."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from bench.hang import Hanging

REQUEST = (b"POST /hooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 2\r\n\r\n{}")


def until(found: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Wait (bounded) until the receiver's thread has got that far."""
    deadline = time.monotonic() + limit_s
    while not found():
        assert time.monotonic() < deadline, "the receiver never got there"
        time.sleep(0.01)


def test_it_reads_the_request_and_never_answers() -> None:
    with Hanging() as receiver, socket.create_connection(("127.0.0.1", receiver.port)) as s:
        s.sendall(REQUEST)
        until(lambda: receiver.received == len(REQUEST))
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):  # no answer, not even a closed connection
            s.recv(1)
        assert receiver.accepted == 1
        assert receiver.held == 1
        assert receiver.turned_away == 0


def test_past_its_bound_a_connection_is_closed_at_once() -> None:
    with Hanging(max_held=1) as receiver, \
            socket.create_connection(("127.0.0.1", receiver.port)) as first:
        first.sendall(REQUEST)
        until(lambda: receiver.held == 1)
        with socket.create_connection(("127.0.0.1", receiver.port)) as second:
            second.settimeout(10)
            try:
                closed = second.recv(1) == b""
            except ConnectionResetError:
                closed = True
            assert closed
        assert receiver.turned_away == 1
        assert receiver.held == 1


def test_the_end_of_the_block_lets_every_connection_go() -> None:
    with Hanging() as receiver:
        held = socket.create_connection(("127.0.0.1", receiver.port))
        held.sendall(REQUEST)
        until(lambda: receiver.held == 1)
    try:
        held.settimeout(10)
        try:
            closed = held.recv(1) == b""
        except ConnectionResetError:
            closed = True
        assert closed
        assert receiver.held == 0
    finally:
        held.close()
