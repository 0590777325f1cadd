"""Every refusal as RFC 9457 ``application/problem+json``, from one middleware and one table.

A store that does not answer (connections refused or exhausted, SQLite locked past its timeout)
is 503 ``store_unavailable``: the client may retry, safely with an idempotency or natural key.

A problem is ``{type, title, status, detail, code}``, plus ``errors`` (``[{field, message}]``)
for validation, ``reason`` where the refusal carries one (and ``case_id``: the refused case
recorded), and ``request_id`` to find it in the logs. The status of an exception is looked up
by its class (the nearest class in the table wins). Anything not in the table is a programmer
error: logged with its stack trace, answered 500 without one.

The API's own refusals (before the ledger is asked anything)::

    ApiError
    ├── MalformedJson          400 malformed_json
    ├── Unauthorized           401 unauthorized (with WWW-Authenticate: Bearer)
    ├── Forbidden              403 forbidden
    ├── UnsupportedMediaType   415 unsupported_media_type
    ├── ValidationFailed       422 validation_error (with errors)
    ├── Overloaded             503 busy (the request's lane, or its role's share of it, is full)
    ├── DeadlineExceeded       503 deadline_exceeded (no answer within the request deadline)
    ├── BodyTimeout            408 bad_request (the body was still arriving at the deadline)
    ├── BodyTooLarge           413 too_large (a body over the limit, refused before it is read)
    └── BadContentEncoding     400 bad_content_encoding (a body that is not what its coding says)

The two body refusals (408, 413) close the connection (``Connection: close``): the rest of the
body is never read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError

from api.keys import REQUEST_ID
from api.logs import route_of
from ledger.errors import (
    CaseRefused,
    Conflict,
    InvalidInput,
    LedgerError,
    NotFound,
    Refused,
    Unavailable,
)
from projections.pgpool import refused_in_outage

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:ledger:problem:"
RETRY_AFTER_S = 1
MAX_ERRORS = 20

log = logging.getLogger("api.problems")
E = TypeVar("E", bound=Exception)


class ApiError(Exception):
    """A request refused by the API itself; nothing reached the ledger."""

    code = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[Mapping[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)[:MAX_ERRORS]
        self.headers = dict(headers or {})

    closes = False  # the answer closes the connection (a body left unread)


class MalformedJson(ApiError):
    code = "malformed_json"


class Unauthorized(ApiError):
    code = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="ledger"'})


class Forbidden(ApiError):
    code = "forbidden"


class UnsupportedMediaType(ApiError):
    code = "unsupported_media_type"


class ValidationFailed(ApiError):
    code = "validation_error"


class Overloaded(ApiError):
    """No worker for the request (``api.limits``): its role already has its share of the
    request's lane waiting, or the lane's line is full, or it waited longer than the lane's
    ``queue_wait_s``. Nothing was done."""

    code = "busy"


class DeadlineExceeded(ApiError):
    """No answer within ``REQUEST_DEADLINE_S``. A write already handed to the store still
    completes; the same request with the same ``Idempotency-Key`` answers its outcome."""

    code = "deadline_exceeded"


class BodyTimeout(ApiError):
    """The request deadline passed while the body was still arriving (RFC 9110 408). Its code
    is the one of every request refused for how it was sent, not what it says."""

    code = "bad_request"
    closes = True


class BodyTooLarge(ApiError):
    """A body over the app's ``client_max_size``: refused by its Content-Length before it is
    read (and before ``100 Continue``), or once more than that has arrived."""

    code = "too_large"
    closes = True


class BadContentEncoding(ApiError):
    """The body is not what its ``Content-Encoding`` says (``api.edge``). The answer closes the
    connection: the rest of the body cannot be read past the fault (aiohttp, reading it to keep
    the connection, logged each such request as an unhandled exception with its traceback)."""

    code = "bad_content_encoding"
    closes = True


# The one table: exception class -> HTTP status. Subclasses inherit their parent's status.
STATUS_BY_CLASS: Mapping[type[Exception], int] = {
    MalformedJson: 400,
    Unauthorized: 401,
    Forbidden: 403,
    UnsupportedMediaType: 415,
    ValidationFailed: 422,
    Overloaded: 503,
    DeadlineExceeded: 503,
    BodyTimeout: 408,
    BodyTooLarge: 413,
    InvalidInput: 422,
    NotFound: 404,
    Conflict: 409,
    Refused: 422,
    Unavailable: 503,
    StoreOperationalError: 503,
    StoreInterfaceError: 503,
    BadContentEncoding: 400,
}

# aiohttp's own refusals (routing, body size, framing), by status.
CODE_BY_HTTP_STATUS: Mapping[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}
_KEPT_HTTP_HEADERS = ("Allow",)


INTERNAL_ERROR = "internal_error"
STORE_UNAVAILABLE = "store_unavailable"


def status_of(error: Exception) -> int | None:
    return status_of_class(type(error))


def status_of_class(cls: type[Exception]) -> int | None:
    for base in cls.__mro__:
        if base in STATUS_BY_CLASS:
            return STATUS_BY_CLASS[base]
    return None


def _leaves(cls: type[E]) -> list[type[E]]:
    children = cls.__subclasses__()
    return [cls] if not children else [leaf for c in children for leaf in _leaves(c)]


def codes_by_status() -> dict[int, list[str]]:
    """Every problem code the service can answer, by status: the named errors of the API and
    of the ledger (the classes raised are the leaves of their trees), aiohttp's own refusals,
    the store that does not answer, and the unexpected error. /openapi.json lists them."""
    found: dict[int, set[str]] = {500: {INTERNAL_ERROR}, 503: {STORE_UNAVAILABLE}}
    for http_status, http_code in CODE_BY_HTTP_STATUS.items():
        found.setdefault(http_status, set()).add(http_code)
    named: list[tuple[type[Exception], str]] = [
        *((cls, cls.code) for cls in _leaves(ApiError)),
        *((cls, cls.code) for cls in _leaves(LedgerError)),
    ]
    for cls, code in named:
        status = status_of_class(cls)
        if status is None:
            raise RuntimeError(f"{cls.__name__} has no status in STATUS_BY_CLASS")
        found.setdefault(status, set()).add(code)
    return {status: sorted(codes) for status, codes in sorted(found.items())}


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **{key: value for key, value in extra.items() if value is not None},
    }
    if request_id is not None:
        body["request_id"] = request_id
    all_headers = dict(headers or {})
    if status == 503:
        all_headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_JSON,
        headers=all_headers,
    )


def _from_error(error: Exception, status: int, request_id: str | None) -> web.Response:
    if isinstance(error, ApiError):
        answer = problem(
            status, error.code, error.detail, request_id=request_id, headers=error.headers,
            errors=error.errors or None,
        )
        if error.closes:
            answer.force_close()
        return answer
    if not isinstance(error, LedgerError):  # the store's own errors
        if not refused_in_outage(error):  # else the outage's own line has said it, once
            log.warning("the store did not answer (request %s): %s", request_id, error)
        return problem(status, STORE_UNAVAILABLE,
                       "the store did not answer; try again shortly", request_id=request_id)
    errors = None
    if isinstance(error, InvalidInput):
        errors = [{"field": error.field, "message": error.detail}]
    reason = error.context.get("reason") if isinstance(error, Refused) else None
    # a case the policy refused is recorded: the answer names it
    case_id = error.context.get("case_id") if isinstance(error, CaseRefused) else None
    # A refusal an Idempotency-Key answered again is marked like any replayed answer, and its
    # body is the first answer's: the request it names is the first one (X-Request-Id says
    # this one).
    headers = {"Idempotent-Replayed": "true"} if error.replayed else None
    if error.replayed and error.first_request_id is not None:
        request_id = error.first_request_id
    return problem(
        status, error.code, error.detail, request_id=request_id, errors=errors, reason=reason,
        headers=headers, case_id=case_id,
    )


def _from_http(error: web.HTTPException, request_id: str | None) -> web.Response:
    code = CODE_BY_HTTP_STATUS.get(error.status, f"http_{error.status}")
    # aiohttp's default text is "<status>: <reason>"; keep only a text that says more (413's).
    text = (error.text or "").strip()
    detail = error.reason if not text or text.startswith(f"{error.status}:") else text
    headers = {name: error.headers[name] for name in _KEPT_HTTP_HEADERS if name in error.headers}
    return problem(error.status, code, detail, request_id=request_id, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.get(REQUEST_ID)
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _from_http(error, request_id)
    except Exception as error:
        status = status_of(error)
        if status is not None:
            return _from_error(error, status, request_id)
        log.exception("unexpected error in %s %s (request %s)", request.method,
                      route_of(request), request_id)
        return problem(
            500, INTERNAL_ERROR,
            "an unexpected error occurred; it was logged with this request id",
            request_id=request_id,
        )
