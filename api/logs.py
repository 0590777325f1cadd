"""The service's logs: JSON lines by default, one access line per request.

The choice: the standard library's ``logging`` with a JSON formatter of our own (a dozen
lines), not ``structlog``: every library already logs through ``logging``, so one formatter
makes all of their lines JSON too, and there is no second logging system to configure.

- ``LEDGER_LOG_FORMAT``: ``json`` (default; one object per line: ``time``, ``level``,
  ``logger``, ``message`` and the line's own fields) or ``text`` (for a person at a terminal:
  the fields as ``key=value`` after the message). Either way a record is one line (but an
  exception's stack after it): in text, a control character of the message or of a field (a
  newline or a terminal's escape a request carried: a decoded path, a header) is written as
  its Python escape (``\n``, ``\x1b``), and a field's value holding a space, ``=`` or ``"``
  is quoted, so no value forges a line or a field of its own.
- ``LEDGER_LOG_LEVEL``: ``DEBUG``, ``INFO`` (default), ``WARNING``, ``ERROR``.
- The access line (logger ``ledger.access``), one per answered request: ``request_id``,
  ``person`` (who called: the role and the first 8 hex of the token's sha256, as events record
  it; never the token), ``role``, ``method``, ``route`` (the route's template, never the raw
  path: a path holds user names), ``status``, ``problem`` (the problem code of a refusal),
  ``duration_ms`` and ``remote``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web, web_protocol
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from api.config import Config
from api.keys import ACTOR, REQUEST_ID

FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ACCESS_LOGGER = "ledger.access"
FIELDS = "fields"  # the attribute of a record holding its own fields (``extra={FIELDS: {...}}``)
_PROBLEM_JSON = "application/problem+json"
_MAX_PROBLEM_BODY = 64 * 1024
# C0 and C1 controls, DEL, and the line and paragraph separators some readers split lines at.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_QUOTED = re.compile(r'[\s="]')


class JsonFormatter(logging.Formatter):
    """One JSON object per line; an exception's stack goes in ``exception`` as text."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        try:  # orjson: a line is written for every request, on the event loop
            return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # an integer past 64 bits, say: the json module writes any
            return json.dumps(line, default=str)


def _escaped(text: str) -> str:
    """``text`` with its control characters written as Python escapes (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


def _field(value: Any) -> str:
    text = _escaped(str(value))
    return json.dumps(text) if _QUOTED.search(text) else text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The record's line, its message escaped; the exception's stack follows it as it is.
        message = record.message
        record.message = _escaped(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields: Mapping[str, Any] = getattr(record, FIELDS, None) or {}
        if fields:
            first, newline, rest = text.partition("\n")
            pairs = " ".join(f"{key}={_field(value)}" for key, value in fields.items())
            text = f"{first} {pairs}{newline}{rest}"
        return text


def settings_of(config: Config) -> tuple[str, str]:
    """``(format, level)`` (``LEDGER_LOG_FORMAT``, ``LEDGER_LOG_LEVEL``), checked: a ValueError
    says what is wrong."""
    fmt = config.log_format.lower() or "json"
    level = config.log_level.upper() or "INFO"
    if fmt not in FORMATS:
        raise ValueError(f"LEDGER_LOG_FORMAT is one of {', '.join(FORMATS)}, not {fmt!r}")
    if level not in LEVELS:
        raise ValueError(f"LEDGER_LOG_LEVEL is one of {', '.join(LEVELS)}, not {level!r}")
    return fmt, level


def _not_a_body_already_answered(record: logging.LogRecord) -> bool:
    """aiohttp's "Unhandled exception" of a body that is not what its Content-Encoding says:
    the request was answered 400 ``bad_content_encoding`` (``api.edge``), and aiohttp, reading
    the rest of the body before closing, meets the same fault again. Left, anyone could fill
    the error log with tracebacks, one a request."""
    error = record.exc_info[1] if record.exc_info else None
    return not isinstance(error, web_protocol.RequestPayloadError)


def configure(fmt: str = "json", level: str = "INFO") -> None:
    """The root logger writes ``fmt`` lines at ``level`` and above to stderr."""
    # No line names its caller's file, thread or process: not looking them up for every record
    # (the Logging HOWTO's "Optimization") halves what a line costs (one per request; about
    # 1-2 % of a balance read's event-loop time here).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    server = logging.getLogger("aiohttp.server")
    if _not_a_body_already_answered not in server.filters:
        server.addFilter(_not_a_body_already_answered)


def route_of(request: BaseRequest) -> str:
    """The route's template (``/v1/accounts/{username}``), never the path: a path carries
    customers' names and whatever a caller sends."""
    # A request aiohttp refused before routing has no match info (its property asserts).
    match_info = getattr(request, "_match_info", None) if isinstance(request, web.Request) \
        else None
    resource = None if match_info is None else match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


def _problem_code(response: web.StreamResponse) -> str | None:
    if response.status < 400 or response.content_type != _PROBLEM_JSON:
        return None
    body = getattr(response, "body", None)
    if not isinstance(body, bytes) or len(body) > _MAX_PROBLEM_BODY:
        return None
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access logger, as one line of fields (see the module's docstring)."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        actor = request.get(ACTOR) if isinstance(request, web.Request) else None
        person = None if actor is None else actor.name
        fields = {
            "request_id": request.get(REQUEST_ID) if isinstance(request, web.Request) else None,
            "person": person,
            "role": None if person is None else person.split(":", 1)[0],
            "method": request.method,
            "route": route_of(request),
            "status": response.status,
            "problem": _problem_code(response),
            "duration_ms": round(time * 1000, 3),
            "remote": request.remote,
        }
        self.logger.info("%s %s %d", fields["method"], fields["route"], response.status,
                         extra={FIELDS: fields})
