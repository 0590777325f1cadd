"""Turning an HTTP request into typed values, or into the problem that says why not.

- A body must be ``application/json`` (415), at most the app's ``client_max_size`` (413), JSON
  (400: also for NaN, Infinity, duplicate keys, numbers Python will not parse and nesting
  deeper than Python's recursion limit), and valid
  for its model (422 with every field's error).
- A body-less POST to a route whose body has no required field reads as ``{}``.
- Path user names are given as the document says (``models.USERNAME_PATTERN``) and normalised
  by the domain; a malformed one is 422 ``validation_error``
  (it is a bad request, not a missing account). A malformed refund request or case id is 404:
  ids are the server's, and one that cannot exist is not found.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn, TypeVar
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api import messages, models
from api.problems import MalformedJson, UnsupportedMediaType, ValidationFailed
from ledger import identity
from ledger.errors import NotFound

M = TypeVar("M", bound=BaseModel)
JSON = "application/json"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(models.IDEMPOTENCY_KEY_PATTERN)
_USERNAME = re.compile(models.USERNAME_PATTERN)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# Longer integers than any amount, position or limit the API takes: refused in words before
# Python's own limit on converting digits (4,300) speaks of sys.set_int_max_str_digits().
MAX_INTEGER_DIGITS = 64


class _HugeInteger(Exception):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise _HugeInteger(digits)
    return int(text)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return found


# One decoder for every body: ``json.loads`` with hooks builds a new one for each call (about a
# hundredth of a deposit's time on the event loop). A decoder keeps no state between calls.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, object_pairs_hook=_no_duplicate_keys,
                            parse_int=_bounded_int)


def _decode(raw: bytes) -> Any:
    """``json.loads(raw, ...)`` with the hooks above: the bytes' encoding as ``json.loads``
    detects it (UTF-8, -16 or -32; a UTF-8 byte order mark skipped)."""
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def _invalid(error: ValidationError, model: type[BaseModel], *, where: str = "body",
             query: bool = False) -> ValidationFailed:
    # Said for a person (api.messages): no pydantic wording, no regular expressions.
    errors = messages.messages(error.errors(include_url=False, include_input=False), model,
                               where=where, query=query)
    return ValidationFailed("the request is not valid", errors=errors)


async def body(request: web.Request, model: type[M]) -> M:
    if not request.body_exists and not any(f.is_required() for f in model.model_fields.values()):
        return model()
    if request.content_type != JSON:
        raise UnsupportedMediaType(f"the body must be {JSON}")
    raw = await request.read()
    try:
        data = _decode(raw)
    except _HugeInteger as huge:
        raise ValidationFailed("the request is not valid", errors=[{
            "field": "body",
            "message": f"a number of {huge.digits:,} digits: no amount, position or limit has "
                       f"more than {MAX_INTEGER_DIGITS}"}]) from None
    except ValueError as error:  # also UnicodeDecodeError and JSONDecodeError
        raise MalformedJson(f"the body is not valid JSON: {error}") from None
    except RecursionError:  # [[[[...]]]]: 64 KiB nest far deeper than the parser's stack
        raise MalformedJson("the body nests arrays or objects too deeply") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _invalid(error, model) from None


def query(request: web.Request, model: type[M]) -> M:
    data: dict[str, str] = {}
    for name in request.query:
        values = request.query.getall(name)
        if len(values) > 1:
            raise ValidationFailed(
                "the request is not valid",
                errors=[{"field": name, "message": "give this parameter once"}],
            )
        data[name] = values[0]
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _invalid(error, model, where="query", query=True) from None


def idempotency_key(request: web.Request) -> str | None:
    keys = request.headers.getall(IDEMPOTENCY_HEADER, [])
    if not keys:
        return None
    if len(keys) > 1 or not _IDEMPOTENCY_KEY.fullmatch(keys[0]):
        raise ValidationFailed(
            "the request is not valid",
            errors=[{"field": IDEMPOTENCY_HEADER,
                     "message": "one key of 1-255 printable ASCII characters"}],
        )
    return keys[0]


MAX_CODINGS = 32  # of Accept-Encoding looked at: more is no client's list


def accepts_gzip(request: web.Request) -> bool:
    """Whether the client lists gzip (or ``*``) as acceptable in ``Accept-Encoding`` (RFC 9110
    12.5.3; ``q=0`` refuses it). No header, or a header naming neither, is plain bytes: the
    codings a client may take but did not ask for are not sent."""
    weights: dict[str, float] = {}
    for item in ",".join(request.headers.getall("Accept-Encoding", [])).split(",")[:MAX_CODINGS]:
        coding, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if coding:
            weights[coding.lower()] = weight
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False


def username(request: web.Request) -> str:
    raw = request.match_info["username"]
    if not _USERNAME.fullmatch(raw):
        raise ValidationFailed(
            "the request is not valid",
            errors=[{"field": "username", "message": models.USERNAME_DESCRIPTION}],
        )
    return identity.username(raw)


def refund_request_id(request: web.Request) -> UUID:
    return _server_id(request, "refund request")


def case_id(request: web.Request) -> UUID:
    return _server_id(request, "return case")


def _server_id(request: web.Request, what: str) -> UUID:
    raw = request.match_info["id"]
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound(f"no {what} {raw!r}", id=raw) from None
